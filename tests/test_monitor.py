"""`hcp-sim monitor` against a real mosquitto: scripted device traffic from a paho
publisher becomes one line per device; hostile payloads are skipped, never crash it and
never reach the terminal raw; the live view redraws in place."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from simulator import monitor
from simulator.monitor_view import HallView, duration, pad, width
from tests.support.mosquitto import Mosquitto, free_port
from tests.support.ratings import make_rating

REPO = Path(__file__).resolve().parents[1]
PREFIX = "hcp/v1"


class Publisher:
    """Plays devices: retained status once, then the rest again and again (as telemetry
    repeats) until stopped, so a monitor that subscribes at any moment sees it."""

    def __init__(self, broker: Mosquitto) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="script",
                                  protocol=mqtt.MQTTv5)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.repeated: list[tuple[str, bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._repeat, daemon=True)

    def once(self, topic: str, payload: bytes | str, retain: bool = False) -> None:
        data = payload.encode() if isinstance(payload, str) else payload
        self.client.publish(topic, data, qos=1, retain=retain).wait_for_publish(5)

    def repeat(self, topic: str, payload: bytes | str) -> None:
        self.repeated.append((topic, payload.encode() if isinstance(payload, str) else payload))

    def _repeat(self) -> None:
        while not self._stop.is_set():
            for topic, payload in self.repeated:
                self.client.publish(topic, payload, qos=0)
            self._stop.wait(0.2)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2)
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def publisher(mosquitto: Mosquitto) -> Iterator[Publisher]:
    p = Publisher(mosquitto)
    yield p
    p.close()


def iso(seconds_ago: float) -> str:
    t = datetime.fromtimestamp(time.time() - seconds_ago, tz=UTC)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def snapshot(broker: Mosquitto, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    code = monitor.main(["--broker", f"{broker.host}:{broker.port}", "--once",
                         "--wait", "1.2", *extra])
    out = capsys.readouterr().out
    assert code == 0, out
    return out


def line_of(out: str, device_id: str) -> str:
    lines = [line for line in out.splitlines() if line.startswith(device_id + " ")]
    assert len(lines) == 1, out
    return lines[0]


def test_one_line_per_device_with_what_the_devices_said(
        mosquitto: Mosquitto, publisher: Publisher,
        capsys: pytest.CaptureFixture[str]) -> None:
    w01, w02, w03 = (f"421100-HG01-W0{i}" for i in (1, 2, 3))
    other = "421100-HG02-W01"
    publisher.once(f"{PREFIX}/{w01}/status", '{"online": true, "version": "0.1.0"}', True)
    publisher.once(f"{PREFIX}/{w02}/status", '{"online": false}', True)
    publisher.once(f"{PREFIX}/{other}/status", '{"online": true}', True)
    publisher.repeat(f"{PREFIX}/{w01}/telemetry", json.dumps(
        {"backlog": 3, "oldest_pending_s": 125, "serial_errors": 7, "uptime_s": 10}))
    publisher.repeat(f"{PREFIX}/{w01}/rating", json.dumps(
        make_rating(w01, level=2, seq=41, rated_at=iso(90))))
    publisher.repeat(f"{PREFIX}/{w01}/rating", json.dumps(      # an older one re-sent
        make_rating(w01, level=5, seq=40, rated_at=iso(300))))
    publisher.repeat(f"{PREFIX}/{w03}/event", json.dumps(
        {"event": "prompt_expired", "at": iso(0), "case_id": "C1"}))
    publisher.repeat(f"{PREFIX}/{w03}/telemetry", json.dumps(
        {"backlog": 0, "oldest_pending_s": None, "serial_errors": 0}))
    publisher.start()

    out = snapshot(mosquitto, capsys, "--hall", "HG01")
    assert out.splitlines()[0].startswith("hall HG01: 3 device(s), 1 online, 3 rating(s)")
    assert other not in out

    l1 = line_of(out, w01).split()
    assert l1[:4] == [w01, "online", "3", "2m05s"] or l1[:4] == [w01, "online", "3", "2m06s"]
    assert l1[4:7] == ["2", "不满意", "1m30s"] or l1[4:7] == ["2", "不满意", "1m31s"]
    assert l1[7:] == ["ago", "7", "-"]

    l2 = line_of(out, w02).split()
    assert l2 == [w02, "offline", "-", "-", "-", "-", "-"]

    l3 = line_of(out, w03).split()
    assert l3[:4] == [w03, "?", "0", "-"]
    assert l3[-3:-1] == ["prompt_expired", "0s"] or l3[-3:-1] == ["prompt_expired", "1s"]

    everyone = snapshot(mosquitto, capsys)
    assert other in everyone and "4 device(s), 2 online" in everyone


def test_hostile_payloads_are_skipped_and_never_reach_the_terminal(
        mosquitto: Mosquitto, publisher: Publisher,
        capsys: pytest.CaptureFixture[str]) -> None:
    good = "421100-HG01-W09"
    publisher.once(f"{PREFIX}/{good}/status", '{"online": true}', True)
    junk: list[tuple[str, bytes]] = [
        ("EVIL/status", b"\xff\xfe not utf-8"),
        ("EVIL/status", b'{"online": "yes"}'),
        ("EVIL/telemetry", b'{"backlog": -1}'),
        ("EVIL/telemetry", b'{"backlog": NaN}'),
        ("EVIL/telemetry", b"[" * 100_000),
        ("EVIL/rating", b'{"level": 9, "seq": 1}'),
        ("EVIL/rating", b'{"level": true, "seq": 1}'),
        ("EVIL/rating", json.dumps({"level": 5, "seq": "x"}).encode()),
        ("EVIL/event", b'{"event": 42}'),
        ("EVIL/event", b"x" * 100_000),
        ("bad id!/status", b'{"online": true}'),
        (f"{good}/event", json.dumps({"event": "\x1b[2J\x1b]0;pwned\x07boom"}).encode()),
        (f"{good}/telemetry", json.dumps({"backlog": 1, "oldest_pending_s": "old",
                                          "serial_errors": 1e300}).encode()),
        (f"{good}/rating", json.dumps({"level": 4, "seq": 1, "rated_at": "not a time",
                                       "hall_id": "\u202eHG01"}).encode()),
    ]
    for topic, payload in junk:
        publisher.repeat(f"{PREFIX}/{topic}", payload)
    publisher.start()

    out = snapshot(mosquitto, capsys)
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert "EVIL" not in out and "bad id" not in out
    head = out.splitlines()[0]
    assert head.startswith("1 device(s), 1 online, 1 rating(s)")
    assert "message(s) skipped" in head
    line = line_of(out, good).split()
    # What was sound is shown; the rest is a dash, not garbage.
    assert line[:4] == [good, "online", "1", "-"]
    assert line[4:6] == ["4", "满意"]
    assert line[-3].endswith("boom") and line[-4] == "-"


def test_live_view_redraws_in_place_until_ctrl_c(
        mosquitto: Mosquitto, publisher: Publisher) -> None:
    publisher.once(f"{PREFIX}/421100-HG01-W05/status", '{"online": true}', True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulator.cli", "monitor", "--broker",
         f"{mosquitto.host}:{mosquitto.port}"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "140",
                       "LINES": "30"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(2.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err.decode()
    text = out.decode()
    assert text.count("\x1b[H") >= 2              # redrawn from the top, not scrolled
    assert "421100-HG01-W05" in text and "online" in text
    assert "Traceback" not in err.decode()


def test_unreachable_broker_is_an_error_with_once(capsys: pytest.CaptureFixture[str]) -> None:
    code = monitor.main(["--broker", f"127.0.0.1:{free_port()}", "--once", "--wait", "0"])
    assert code == 1
    assert "hcp-sim monitor: broker" in capsys.readouterr().err


# --- the view itself --------------------------------------------------------------------

def test_a_cleared_status_removes_the_device_and_ratings_never_go_back() -> None:
    view = HallView()
    now = 1_800_000_000.0
    assert view.update(f"{PREFIX}/W1/status", b'{"online": true}', now, PREFIX)
    assert view.update(f"{PREFIX}/W1/rating", b'{"level": 1, "seq": 5}', now, PREFIX)
    assert view.update(f"{PREFIX}/W1/rating", b'{"level": 5, "seq": 4}', now + 1, PREFIX)
    assert view.devices["W1"].rating_level == 1
    assert view.devices["W1"].rating_at == now     # no rated_at: when it arrived
    assert view.update(f"{PREFIX}/W1/status", b"", now, PREFIX)
    assert "W1" not in view.devices
    assert not view.update("other/W1/status", b'{"online": true}', now, PREFIX)
    assert not view.update(f"{PREFIX}/W1/config", b"{}", now, PREFIX)


def test_oldest_pending_ages_between_telemetry_and_the_screen_is_cut_to_fit() -> None:
    view = HallView()
    now = 1_800_000_000.0
    for i in range(30):
        view.update(f"{PREFIX}/D{i:02d}/telemetry",
                    b'{"backlog": 2, "oldest_pending_s": 50}', now, PREFIX)
    lines = view.lines(now + 70, max_rows=10)
    assert len(lines) == 2 + 10 + 1
    assert lines[-1] == "… 20 more (narrow with --hall)"
    assert lines[2].split()[:4] == ["D00", "?", "2", "2m00s"]


def test_columns_line_up_with_chinese_labels() -> None:
    assert width("非常不满意") == 10 and width("abc") == 3
    assert pad("非常满意", 5) == "非常 "
    assert pad("7", 3, right=True) == "  7"
    view = HallView()
    now = 1_800_000_000.0
    for i, level in enumerate((1, 3, 4)):
        view.update(f"{PREFIX}/D{i}/rating", json.dumps({"level": level, "seq": 1}).encode(),
                    now, PREFIX)
        view.update(f"{PREFIX}/D{i}/event", b'{"event": "config_applied"}', now, PREFIX)
    rows = view.lines(now + 5)[2:]
    starts = {width(line[:line.index("config_applied")]) for line in rows}
    assert len(starts) == 1


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (59.9, "59s"), (60, "1m00s"), (3599, "59m59s"), (3600, "1h00m"),
    (90061, "1d01h"), (-5, "0s")])
def test_durations(seconds: float, text: str) -> None:
    assert duration(seconds) == text
