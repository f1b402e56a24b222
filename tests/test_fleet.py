"""`hcp-sim fleet` against a real mosquitto, the real bridge (a subprocess) and the
reference platform: every rating pressed on a virtual device arrives once and is
receipted; resends after a late bridge are still counted once; the exit status says
whether everything was receipted."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from simulator import fleet
from simulator.fleet_run import Fleet, FleetOptions, FleetResult
from simulator.fleet_stats import FleetStats, LatencyHistogram
from simulator.fleet_workers import merge_results, result_to_json, share, worker_options
from tests.support.bridge import BridgeProcess
from tests.support.mosquitto import Mosquitto, free_port
from tests.support.platform import RunningPlatform

REPO = Path(__file__).resolve().parents[1]


def broker_arg(broker: Mosquitto) -> str:
    return f"{broker.host}:{broker.port}"


def test_200_devices_get_every_rating_receipted_and_counted_once(
        tmp_path: Path, mosquitto: Mosquitto, platform: RunningPlatform,
        capsys: pytest.CaptureFixture[str]) -> None:
    with BridgeProcess(tmp_path / "bridge", mosquitto, platform.url).start():
        code = fleet.main(["--devices", "200", "--count", "400", "--rate", "200",
                           "--broker", broker_arg(mosquitto), "--device-prefix", "T200",
                           "--drain-timeout", "30", "--seed", "7", "--json"])
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert code == 0, (summary, err[-2000:])
    assert summary["ok"] is True
    assert summary["connected"] == 200
    assert (summary["sent"], summary["receipted"], summary["pending"]) == (400, 400, 0)
    assert summary["statuses"] == {"accepted": 400, "duplicate": 0, "rejected": 0}
    lat = summary["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"] < 30_000
    assert summary["rate_achieved"] > 0

    counts = platform.control.counts()
    assert counts["total"] == 400
    assert counts["rejected"] == 0
    # Round robin: two ratings from each of the 200 devices, named as asked.
    assert counts["by_device"] == {f"T200-{i:04d}": 2 for i in range(1, 201)}
    assert "sending" in err   # the progress line


def test_ratings_wait_for_a_late_bridge_and_are_resent_but_counted_once(
        tmp_path: Path, mosquitto: Mosquitto, platform: RunningPlatform) -> None:
    bridge = BridgeProcess(tmp_path / "bridge", mosquitto, platform.url)
    # The bridge's session exists at the broker, but the bridge is down while the fleet
    # sends: the broker queues the ratings, and the devices publish them again every
    # resend_after_s since no receipt comes.
    bridge.start()
    bridge.kill()
    stats = FleetStats(keep_ids=True)
    options = FleetOptions(devices=10, rate=20, count=30, host=mosquitto.host,
                           port=mosquitto.port, device_prefix="LATE", resend_after_s=1.5,
                           drain_timeout_s=30, seed=3)
    result: list[FleetResult] = []
    runner = threading.Thread(target=lambda: result.append(Fleet(options, stats=stats).run()))
    runner.start()
    try:
        time.sleep(5.0)
        progress = stats.progress()
        assert progress.sent == 30 and progress.receipted == 0   # nobody answers yet
        bridge.start()
        runner.join(40)
        assert not runner.is_alive()
        received = bridge.metric("hcp_bridge_ratings_received_total")
    finally:
        bridge.kill()
    summary = result[0].summary()
    assert summary["ok"] is True, summary
    assert summary["receipted"] == 30 and summary["pending"] == 0
    # Copies came more than once (broker queue + resends) …
    assert received > 30
    # … and the platform still holds each rating exactly once.
    assert stats.rating_ids is not None
    stored = platform.control.rating_ids()
    assert sorted(stored) == sorted(stats.rating_ids)
    assert platform.control.counts()["total"] == 30
    # The receipts came only after the bridge did: every latency spans the outage.
    assert summary["latency_ms"]["p50"] > 1000


def test_worker_processes_split_the_fleet_and_add_up(
        tmp_path: Path, mosquitto: Mosquitto, platform: RunningPlatform,
        capsys: pytest.CaptureFixture[str]) -> None:
    with BridgeProcess(tmp_path / "bridge", mosquitto, platform.url).start():
        code = fleet.main(["--devices", "21", "--count", "42", "--rate", "60", "--workers",
                           "2", "--broker", broker_arg(mosquitto), "--device-prefix", "WK",
                           "--json", "--seed", "5"])
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert code == 0, (summary, err[-2000:])
    assert (summary["devices"], summary["connected"]) == (21, 21)
    assert (summary["sent"], summary["receipted"], summary["pending"]) == (42, 42, 0)
    assert summary["statuses"]["accepted"] == 42
    assert summary["latency_ms"]["p50"] is not None
    # Ids are one numbering across the workers; each device got its share of the count.
    assert platform.control.counts()["by_device"] == {f"WK-{i:04d}": 2 for i in range(1, 22)}


@pytest.mark.parametrize(("workers", "signum"), [("1", signal.SIGINT), ("2", signal.SIGINT),
                                                ("2", signal.SIGTERM)])
def test_ctrl_c_stops_the_fleet_with_a_summary(mosquitto: Mosquitto, workers: str,
                                               signum: signal.Signals) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulator.cli", "fleet", "--devices", "4", "--rate", "20",
         "--duration", "60", "--workers", workers, "--broker", broker_arg(mosquitto),
         "--json", "--quiet"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # Interrupt once the fleet is really rating (a fixed sleep was too short under load).
    assert first_rating_seen(mosquitto, timeout=60), "the fleet published no rating"
    started = time.monotonic()
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=30)
    assert time.monotonic() - started < 10
    assert proc.returncode == 130, err.decode()[-2000:]
    summary = json.loads(out)
    assert summary["interrupted"] is True and summary["ok"] is False
    assert summary["sent"] > 0
    assert b"Traceback" not in err


def first_rating_seen(broker: Mosquitto, timeout: float) -> bool:
    """True once any device's rating reaches the broker."""
    seen = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.on_connect = lambda c, *_: c.subscribe("hcp/v1/+/rating", qos=0)
    client.on_message = lambda *_: seen.set()
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        return seen.wait(timeout)
    finally:
        client.loop_stop()
        client.disconnect()


def test_shares_cover_everything_once() -> None:
    for total in (1, 7, 500):
        for workers in (1, 2, 3, 7):
            parts = [share(total, k, workers) for k in range(workers)]
            assert parts[0][0] == 0 and parts[-1][1] == total
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:], strict=False))
    options = FleetOptions(devices=5, rate=10.0, count=11, seed=1)
    mine = [worker_options(options, k, 2) for k in range(2)]
    assert [(o.first_device, o.devices) for o in mine] == [(0, 2), (2, 3)]
    assert sum(o.count or 0 for o in mine) == 11
    assert sum(o.rate for o in mine) == pytest.approx(10.0)
    assert mine[0].seed != mine[1].seed


def test_merged_result_names_the_real_problem_not_the_called_off_workers() -> None:
    options = FleetOptions(devices=4)
    ok, broken = FleetResult(options, connected=2, sent=0), FleetResult(options, connected=1)
    ok.problem = "called off before sending"
    broken.problem = "only 1 of 2 devices connected to 127.0.0.1:1 within 30 s"
    total = merge_results(options, [result_to_json(ok), result_to_json(broken)])
    assert total.connected == 3
    assert total.problem == broken.problem
    assert not total.ok


def test_without_a_bridge_nothing_is_receipted_and_the_exit_status_says_so(
        mosquitto: Mosquitto, capsys: pytest.CaptureFixture[str]) -> None:
    code = fleet.main(["--devices", "3", "--count", "3", "--rate", "50", "--quiet",
                       "--broker", broker_arg(mosquitto), "--drain-timeout", "1"])
    out = capsys.readouterr().out
    assert code == 1
    assert "pending    3" in out
    assert "FAILED" in out


def test_an_unreachable_broker_is_reported_not_waited_for_forever(
        capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    code = fleet.main(["--devices", "2", "--count", "1", "--quiet", "--json",
                       "--broker", f"127.0.0.1:{free_port()}", "--connect-timeout", "1"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 1
    assert time.monotonic() - started < 10
    assert summary["sent"] == 0
    assert "connected" in summary["problem"]


@pytest.mark.parametrize("argv", [
    ["--broker", "localhost"], ["--devices", "0"], ["--rate", "-1"], ["--thanks", "0.01"],
])
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        fleet.main(argv)
    assert exc.value.code == 2
    assert "hcp-sim fleet" in capsys.readouterr().err


def test_kept_data_dir_holds_one_outbox_per_device(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    options = FleetOptions(devices=3, rate=30, count=3, host=mosquitto.host,
                           port=mosquitto.port, data_dir=tmp_path / "fleet",
                           drain_timeout_s=0.5)
    result = Fleet(options).run()
    assert result.sent == 3 and result.pending == 3 and not result.ok
    assert sorted(p.name for p in (tmp_path / "fleet").iterdir()) == [
        "FLEET-0001", "FLEET-0002", "FLEET-0003"]
    # Unreceipted ratings stay in the outboxes (for the next run with this --data-dir).
    assert result.backlog_left == 3


def test_devices_connect_with_descriptors_numbered_above_1024(mosquitto: Mosquitto) -> None:
    # A fleet process holds several descriptors per device; select() cannot watch one
    # numbered 1024 or more, so the links must not use it.
    filler = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        options = FleetOptions(devices=3, rate=30, count=3, host=mosquitto.host,
                               port=mosquitto.port, connect_timeout_s=10,
                               drain_timeout_s=0.1)
        result = Fleet(options).run()
    finally:
        for fd in filler:
            os.close(fd)
    assert result.problem is None
    assert result.connected == 3
    assert result.sent == 3


def test_latency_histogram_percentiles_are_within_one_percent() -> None:
    rng = random.Random(1)
    samples = [rng.lognormvariate(-3, 1) for _ in range(20_000)]
    hist = LatencyHistogram()
    for s in samples:
        hist.add(s)
    exact = sorted(s * 1000 for s in samples)
    for p in (50, 90, 99):
        want = exact[int(p / 100 * len(exact)) - 1]
        got = hist.percentile(p)
        assert got is not None and want <= got <= want * 1.011, (p, want, got)
    assert hist.summary()["max"] == round(exact[-1], 1)
    merged = LatencyHistogram()
    merged.merge_json(json.loads(json.dumps(hist.to_json())))
    assert merged.summary() == hist.summary()
    assert LatencyHistogram().summary()["p50"] is None
