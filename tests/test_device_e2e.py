"""The real daemon as a subprocess: window frame → prompt → press → thanks → `rated` →
the SPEC §6 record in the outbox; a clean SIGTERM; a broken config."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from device.outbox import Outbox
from simulator.windowlink import WindowServer, answer_to
from tests.support.device import ROOT, DeviceProcess, device_config


@pytest.fixture
def device(tmp_path: Path) -> Iterator[DeviceProcess]:
    d = DeviceProcess(tmp_path)
    yield d
    d.close()


@pytest.fixture
def clock_device(tmp_path: Path) -> Iterator[DeviceProcess]:
    """A daemon whose sim socket serves the `clock` op (the chaos runner's seam)."""
    d = DeviceProcess(tmp_path, env={"HCP_SIM_CLOCK_OP": "1"})
    yield d
    d.close()


def rated(case_id: str):  # type: ignore[no-untyped-def]
    return lambda f: f.get("type") == "rated" and f.get("case_id") == case_id


def rate_case(device: DeviceProcess, case_id: str, level: int) -> dict[str, Any]:
    """The window completes `case_id`, the citizen presses `level`: the `rated` frame."""
    w, sim = device.window, device.sim
    assert w is not None and sim is not None
    w.send("case_completed", case_id=case_id)
    assert sim.wait_screen("prompt", 5)
    sim.press(level)
    frame = w.wait_for(rated(case_id), 5)
    assert frame is not None, f"no rated frame for {case_id}"
    return frame


def test_case_to_durable_rating(device: DeviceProcess) -> None:
    device.start()
    w, sim = device.window, device.sim
    assert w is not None and sim is not None
    hello = device.hello  # start() waits for it: the window must not talk before it
    assert hello is not None and hello["device_id"] == device.device_id

    seq = w.send("case_completed", case_id="2026112500017", service_code="11421100MB1",
                 service_name="不动产登记", dept_code="D01", staff_id="S07", staff_name="李娜",
                 completed_at="2026-11-25T10:31:07+08:00",
                 applicant_name="张三", id_number="420100199001011234")  # must not leak
    assert w.wait_for(answer_to(seq), 5) == {"type": "ack", "seq": seq}
    prompt = sim.wait_screen("prompt", 5)
    assert prompt is not None and prompt["case_id"] == "2026112500017"
    assert "请您对本次服务进行评价" in prompt["text"] and "不动产登记" in prompt["text"]
    assert [o["level"] for o in prompt["options"]] == [5, 4, 3, 2, 1]
    assert len(prompt["frame"]) > 0

    sim.press(2)
    reasons = sim.wait_screen("reasons", 5)
    assert reasons is not None and reasons["case_id"] == "2026112500017"
    assert {"level": 4, "code": "R02", "label": "服务效率"} in reasons["options"]
    assert {"level": 1, "code": None, "label": "跳过"} in reasons["options"]
    sim.press(4)
    assert sim.wait_screen("thanks", 5) is not None
    frame = w.wait_for(rated("2026112500017"), 5)
    assert frame is not None and frame["level"] == 2
    assert re.fullmatch(r"[0-9a-f]{32}", frame["rating_id"])
    assert sim.wait_screen("idle", 5) is not None

    assert device.stop() == 0
    outbox = Outbox(device.data_dir)
    outbox.open()
    try:
        (record,) = outbox.pending()
    finally:
        outbox.close()
    assert record["rating_id"] == frame["rating_id"]
    assert record["schema"] == "hcp.rating/1"
    assert (record["level"], record["reason"], record["trigger"], record["input"]) == \
        (2, "R02", "case", "sim")
    assert record["case"] == {"case_id": "2026112500017", "service_code": "11421100MB1",
                              "service_name": "不动产登记", "dept_code": "D01",
                              "completed_at": "2026-11-25T10:31:07+08:00"}
    assert record["staff"] == {"staff_id": "S07", "staff_name": "李娜"}
    assert (record["device_id"], record["region_code"], record["hall_id"],
            record["window_id"]) == (device.device_id, "421100", "HG01", "W03")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["rated_at"])
    assert record["clock_synced"] is True and isinstance(record["seq"], int)
    # personal data the window system added never reaches the disk
    raw = b"".join(p.read_bytes() for p in device.data_dir.rglob("*") if p.is_file()
                   and not p.name.endswith(".sock"))
    assert "张三".encode() not in raw and b"420100199001011234" not in raw


def test_duplicate_case_refused_after_restart(device: DeviceProcess) -> None:
    device.start()
    rate_case(device, "C-1", 5)
    device.stop()
    device.start()
    w = device.window
    assert w is not None
    seq = w.send("case_completed", case_id="C-1")
    assert w.wait_for(answer_to(seq), 5) == {"type": "nak", "seq": seq,
                                             "error": "duplicate_case"}


def test_duplicate_memory_survives_a_restart_and_a_forward_clock_step(
        clock_device: DeviceProcess) -> None:
    """Rated, the daemon restarted, then the wall clock jumps 60 h forward (NTP syncing a
    Pi that booted with a stale clock): the same boot's monotonic clock still knows the
    rating is minutes old."""
    device = clock_device
    device.start()
    rate_case(device, "C-JUMP", 5)
    device.stop()
    device.start()
    w, sim = device.window, device.sim
    assert w is not None and sim is not None
    sim.send({"op": "clock", "offset_s": 60 * 3600})
    assert sim.wait_for(lambda e: e.get("ev") == "clock", 5)
    seq = w.send("case_completed", case_id="C-JUMP")
    assert w.wait_for(answer_to(seq), 5) == {"type": "nak", "seq": seq,
                                             "error": "duplicate_case"}


def test_the_evaluators_frame_seq_keeps_increasing_across_restarts_and_kills(
        device: DeviceProcess) -> None:
    device.start()
    assert device.hello is not None
    seqs = [device.hello["seq"], rate_case(device, "C-SEQ", 4)["seq"]]
    device.stop()
    device.start()
    assert device.hello is not None
    seqs.append(device.hello["seq"])
    device.kill()
    device.start()
    assert device.hello is not None
    seqs.append(device.hello["seq"])
    assert seqs == sorted(set(seqs)), f"evaluator frame seqs {seqs} are not increasing"


def test_bad_frames_answered_or_ignored_and_next_frame_works(device: DeviceProcess) -> None:
    device.start()
    w = device.window
    assert w is not None
    w.send_raw(b'{"type":"ping","seq":5}*0000\n')           # bad CRC: silence
    w.send_raw(b"\xff\xfe garbage \x00\n")                  # no CRC: silence
    w.send_raw(b"x" * 10000 + b"\n")                        # too long: silence
    seq = w.send("launch_rocket")
    assert w.wait_for(answer_to(seq), 5) == {"type": "nak", "seq": seq,
                                             "error": "unknown_type"}
    seq = w.send("case_completed", case_id="")
    assert w.wait_for(answer_to(seq), 5) == {"type": "nak", "seq": seq, "error": "bad_field"}
    seq = w.send("ping")
    assert w.wait_for(answer_to(seq), 5) == {"type": "ack", "seq": seq}
    assert w.wait_for(lambda f: f.get("seq") == 5, 0.5) is None
    assert device.stop() == 0
    assert "serial: rejected frame (crc)" in device.log()


def test_sigterm_stops_within_5s(device: DeviceProcess) -> None:
    device.start()
    t0 = time.monotonic()
    assert device.stop(timeout=5) == 0
    assert time.monotonic() - t0 < 5


def test_bad_config_is_one_line_per_problem(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[device]\nid = "bad id!"\nregion_code = "421100"\nhall_id = "H"\n'
                   'window_id = "W"\nwindow_name = "W"\ndata_dir = "/tmp/x"\n'
                   '[serial]\nport = ""\nbaudrte = 9600\n[input]\nkind = "gpoi"\n'
                   '[display]\nkind = "sim"\n[ui]\nthanks_s = -1\n', encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", "device.cli", "run", "--config", str(cfg)],
                       capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert r.returncode == 78
    lines = r.stderr.strip().splitlines()
    assert "Traceback" not in r.stderr
    assert any("[device] id" in line for line in lines)
    assert any("[serial] baudrte: unknown key" in line for line in lines)
    assert any("[input] kind" in line for line in lines)
    assert any("[ui] thanks_s" in line for line in lines)
    assert all(str(cfg) in line for line in lines)


def test_an_unusable_data_dir_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("", encoding="utf-8")
    cfg = tmp_path / "device.toml"
    cfg.write_text(device_config(blocker / "data", ""), encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", "device.cli", "run", "--config", str(cfg)],
                       capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert r.returncode == 73 and "Traceback" not in r.stderr, r.stderr
    (line,) = [ln for ln in r.stderr.splitlines() if ln.startswith("hcp-device:")]
    assert f"{cfg}: [device] data_dir: cannot create the outbox directory" in line


def test_a_second_daemon_on_the_same_data_dir_is_refused(device: DeviceProcess) -> None:
    device.start()
    r = subprocess.run([sys.executable, "-m", "device.cli", "run", "--config",
                        str(device.config_path)], capture_output=True, text=True, cwd=ROOT,
                       timeout=30)
    assert r.returncode == 73 and "Traceback" not in r.stderr, r.stderr
    assert "[device] data_dir:" in r.stderr and "in use by another process" in r.stderr
    assert device.sim is not None and device.sock_path.exists()    # the first runs on
    device.sim.request_status()
    assert device.sim.wait_for(lambda e: e.get("ev") == "status") is not None


def test_sim_clock_op_is_off_unless_asked_for(device: DeviceProcess) -> None:
    """A sim display on a bench must not let any local user move the time ratings carry."""
    device.start()
    assert device.sim is not None
    device.sim.send({"op": "clock", "offset_s": 3600})
    err = device.sim.wait_for(lambda e: e.get("ev") in ("error", "clock"), 5)
    assert err is not None and err["ev"] == "error" and "unknown op" in err["error"]


def test_sim_clock_op_steps_the_wall_clock_of_ratings_only(
        clock_device: DeviceProcess) -> None:
    """The chaos runner's clock seam: `{"op": "clock"}` moves the daemon's wall clock (the
    `rated_at` of the next rating), refuses nonsense, and never touches the host clock."""
    device = clock_device
    device.start()
    w, sim = device.window, device.sim
    assert w is not None and sim is not None
    sim.send({"op": "clock", "offset_s": float("nan")})  # json.dumps writes NaN
    err = sim.wait_for(lambda e: e.get("ev") == "error" and e.get("op") == "clock", 5)
    assert err is not None and "offset_s" in err["error"]
    sim.send({"op": "clock", "offset_s": -7200})
    assert sim.wait_for(lambda e: e.get("ev") == "clock", 5) == {"ev": "clock",
                                                                 "offset_s": -7200.0}
    w.send("case_completed", case_id="C-CLOCK")
    assert sim.wait_screen("prompt", 5)
    pressed = time.time()
    sim.press(5)
    frame = w.wait_for(rated("C-CLOCK"), 5)
    assert frame is not None
    assert device.stop() == 0
    outbox = Outbox(device.data_dir)
    outbox.open()
    try:
        (record,) = outbox.pending()
    finally:
        outbox.close()
    rated_at = datetime.fromisoformat(record["rated_at"].replace("Z", "+00:00")).timestamp()
    assert abs(rated_at - (pressed - 7200)) < 5
    assert abs(time.time() - pressed) < 60  # the host clock did not move
    assert "wall clock stepped to host time -7200.000 s" in device.log()


def test_rated_made_while_the_serial_line_is_down_is_sent_after_the_next_hello(
        device: DeviceProcess) -> None:
    """The adapter is unplugged just as the citizen rates: the rating is stored and
    thanked, and the window system gets its `rated` once the line is back, after the
    `hello`, with a seq above it."""
    device.start()
    w, sim = device.window, device.sim
    assert w is not None and sim is not None
    w.send("case_completed", case_id="C-UNPLUG")
    assert sim.wait_screen("prompt", 5)
    port = w.port
    w.close()  # unplugged: the daemon's reads fail and its reopens are refused

    def serial_open() -> bool:
        sim.request_status()
        status = sim.wait_for(lambda e: e.get("ev") == "status", 5)
        assert status is not None
        return bool(status["serial_open"])

    deadline = time.monotonic() + 5
    while serial_open():
        assert time.monotonic() < deadline, "the daemon did not notice the unplug"
        time.sleep(0.05)
    sim.press(4)
    assert sim.wait_screen("thanks", 5)

    device.window = back = WindowServer(port=port)  # plugged in again
    hello = back.wait_for(lambda f: f.get("type") == "hello", 10)
    assert hello is not None, device.log()
    frame = back.wait_for(rated("C-UNPLUG"), 5)
    assert frame is not None and frame["level"] == 4 and frame["seq"] > hello["seq"]
    said = "serial: sent 1 of 1 rated/expired frame(s) held while the link was down"
    deadline = time.monotonic() + 5   # logged just after the write the window has read
    while said not in device.log():
        assert time.monotonic() < deadline, device.log()
        time.sleep(0.05)


def _unplug(device: DeviceProcess) -> int:
    """Close the window's end and wait until the daemon has noticed; returns the port."""
    w, sim = device.window, device.sim
    assert w is not None and sim is not None
    port = w.port
    w.close()   # the daemon's reads fail and its reopens are refused
    deadline = time.monotonic() + 5
    while True:
        sim.request_status()
        status = sim.wait_for(lambda e: e.get("ev") == "status", 5)
        assert status is not None
        if not status["serial_open"]:
            return port
        assert time.monotonic() < deadline, "the daemon did not notice the unplug"
        time.sleep(0.05)


def test_rated_held_when_the_daemon_is_killed_is_sent_after_the_restart(
        device: DeviceProcess) -> None:
    """Unplugged, rated, then a power cut: the held `rated` frame lived in memory only,
    but the outbox knows the window system was never told, and tells it after restart."""
    device.start()
    w, sim = device.window, device.sim
    assert w is not None and sim is not None
    w.send("case_completed", case_id="C-HELD")
    assert sim.wait_screen("prompt", 5)
    port = _unplug(device)
    sim.press(2)
    assert sim.wait_screen("reasons", 5)
    sim.press(5)
    assert sim.wait_screen("thanks", 5)
    device.kill()
    device.window = WindowServer(port=port)          # plugged in again, powered on again
    device.start()
    frame = device.window.wait_for(rated("C-HELD"), 5)
    assert frame is not None and frame["level"] == 2, device.log()
    assert device.hello is not None and frame["seq"] > device.hello["seq"]
    # Told once it stayed up: a clean restart does not tell it again.
    time.sleep(2.5)
    device.stop()
    device.start()
    assert device.window.wait_for(rated("C-HELD"), 1.5) is None


def test_rated_written_just_before_the_line_dropped_is_sent_again(
        device: DeviceProcess) -> None:
    """The adapter is pulled right after the `rated` went out: it may never have been
    read, so it goes again after the next `hello` (the same rating_id: harmless twice)."""
    device.start()
    w = device.window
    assert w is not None
    first = rate_case(device, "C-DROP", 3)
    connections = w.connections
    w.disconnect()                                   # within SETTLE_S of the write
    assert w.wait_connected(10, after=connections)
    hello = w.wait_for(lambda f: f.get("type") == "hello", 5)
    again = w.wait_for(rated("C-DROP"), 5)
    assert hello is not None and again is not None, device.log()
    assert again["rating_id"] == first["rating_id"] and again["seq"] > hello["seq"]
