"""Broken parts never stop the hall (issue 17): a display, LEDs, serial writes or keys
that fail are a `driver_fault` event and a fault in status and telemetry; the rating in
progress is stored, thanked and told to the window system all the same, and the part is
tried again. Only a failed outbox write stops a rating. In-process, in virtual time."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from device.executor import DISPLAY_RETRY_S
from device.outbox import StorageError
from device.ports import DriverStatus
from tests.support.inprocess import Device

PANEL_GONE = "ssd1306 OLED at 0x3C stopped answering ([Errno 121] Remote I/O error)"


@pytest.fixture
def device(tmp_path: Path) -> Device:
    d = Device(tmp_path).start()
    d.broker_up()
    return d


def test_display_failing_mid_rating_keeps_rating_and_queued_cases(device: Device) -> None:
    for case_id in ("C-1", "C-2", "C-3"):
        device.serial.send_frame("case_completed", case_id=case_id)
    device.run(0.1)
    assert device.display.screens[-1].case_id == "C-1"
    device.display.fail = PANEL_GONE           # the panel's connector works loose
    device.keys.press(5)
    device.run(0.1)
    rated = device.serial.frames("rated")
    assert [f["case_id"] for f in rated] == ["C-1"]
    assert [f.kind for f in device.indicators.played][-1] == "thanks"
    (fault,) = device.link.events("driver_fault")
    assert fault["part"] == "display" and "stopped answering" in fault["error"]
    assert device.daemon.status()["faults"] == {"display": PANEL_GONE}
    assert device.daemon.telemetry(device.clock.now)["faults"] == {"display": PANEL_GONE}
    # The daemon goes on: the next cases are prompted (on a dark panel) and rated.
    device.run(1)
    device.keys.press(4)
    device.run(1)
    assert [f["case_id"] for f in device.serial.frames("rated")] == ["C-1", "C-2"]
    assert len(device.link.events("driver_fault")) == 1   # one event per episode
    # The panel is back: the current screen is shown again within DISPLAY_RETRY_S.
    device.display.fail = None
    device.run(DISPLAY_RETRY_S + 0.1)
    assert device.display.screens[-1].case_id == "C-3"
    (recovered,) = device.link.events("driver_recovered")
    assert recovered["part"] == "display" and recovered["failures"] >= 2
    assert device.daemon.status()["faults"] == {}
    device.keys.press(5)
    device.run(1)
    device.stop()
    assert sorted(r["case"]["case_id"] for r in device.pending()) == ["C-1", "C-2", "C-3"]


def test_display_dead_at_start_is_retried(tmp_path: Path) -> None:
    device = Device(tmp_path)
    device.display.fail = PANEL_GONE
    device.start()
    assert device.display.screens == [] and device.display.attempts == 1
    device.run(DISPLAY_RETRY_S * 3 + 0.1)
    assert device.display.attempts == 4     # tried again every DISPLAY_RETRY_S
    device.display.fail = None
    device.run(DISPLAY_RETRY_S)
    assert device.display.current == "idle"
    attempts = device.display.attempts
    device.run(DISPLAY_RETRY_S * 3)
    assert device.display.attempts == attempts   # no more retries once it works
    rated = device.rate("C-LATE", 5)
    assert rated["level"] == 5


def test_display_bug_is_a_fault_too(device: Device, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a DriverError (a bug in drawing): still only the display failing."""
    def broken(screen: object) -> None:
        raise ValueError("text has a glyph the renderer cannot place")
    device.serial.send_frame("case_completed", case_id="C-BUG")
    device.run(0.1)
    monkeypatch.setattr(device.display, "show", broken)
    device.keys.press(5)
    device.run(0.1)
    assert [f["case_id"] for f in device.serial.frames("rated")] == ["C-BUG"]
    (fault,) = device.link.events("driver_fault")
    assert fault["part"] == "display" and "ValueError" in fault["error"]


def test_indicators_failing_are_a_fault_not_a_stop(device: Device) -> None:
    device.indicators.fail = "GPIO17: pin is not responding"
    rated = device.rate("C-LED", 5)
    assert rated["level"] == 5 and device.display.current == "idle"
    (fault,) = device.link.events("driver_fault")
    assert fault == {**fault, "part": "indicators", "error": "GPIO17: pin is not responding"}
    assert device.daemon.status()["faults"] == {"indicators": "GPIO17: pin is not responding"}
    device.indicators.fail = None
    device.rate("C-LED2", 4)
    assert device.link.events("driver_recovered")[0]["part"] == "indicators"
    assert device.daemon.status()["faults"] == {}


def test_serial_writes_failing_hold_rated_until_writes_work(device: Device) -> None:
    device.serial.send_frame("case_completed", case_id="C-W")
    device.run(0.1)
    device.serial.fail = "write timeout: the window system is not reading"
    device.keys.press(5)
    device.run(1)
    assert device.display.current == "idle"             # stored and thanked
    assert not device.serial.frames("rated")
    (fault,) = device.link.events("driver_fault")
    assert fault["part"] == "serial"
    assert device.daemon.status()["faults"]["serial"].startswith("write timeout")
    device.serial.fail = None
    seq = device.serial.send_frame("ping")
    device.run(0)
    kinds = [(f["type"], f.get("seq") if f["type"] == "ack" else None)
             for f in device.serial.written[-2:]]
    assert kinds == [("ack", seq), ("rated", None)]
    assert device.serial.written[-1]["case_id"] == "C-W"
    assert device.link.events("driver_recovered")[0]["part"] == "serial"
    device.stop()
    assert [r["case"]["case_id"] for r in device.pending()] == ["C-W"]


def test_keys_failing_are_reported_and_cleared(device: Device) -> None:
    emit = device.keys.emit
    assert emit is not None
    emit(DriverStatus("keys", "touch device /dev/input/event0 lost: unplugged",
                      device.clock.now))
    device.run(0)
    assert device.daemon.status()["faults"] == {
        "keys": "touch device /dev/input/event0 lost: unplugged"}
    assert device.link.events("driver_fault")[0]["part"] == "keys"
    emit(DriverStatus("keys", None, device.clock.now + 1))
    device.run(2)
    assert device.daemon.status()["faults"] == {}
    assert device.link.events("driver_recovered")[0]["down_s"] == 1.0


def test_a_failed_outbox_write_still_stops_the_rating(device: Device,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def full(*_: object, **__: object) -> None:
        raise StorageError("cannot store") from OSError(errno.ENOSPC, "No space left")
    monkeypatch.setattr(device.daemon.outbox, "store", full)
    device.serial.send_frame("case_completed", case_id="C-FULL")
    device.run(0.1)
    device.keys.press(5)
    device.run(0.1)
    assert device.display.current == "error"
    assert not device.serial.frames("rated")
    assert device.link.events("storage_error") and device.link.events("outbox_overflow")
