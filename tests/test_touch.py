"""Touch panel: raw input_event streams (synthesized, piped, recorded, unplugged) become
one KeyDown/KeyUp per touch, in the zone where the finger landed."""

from __future__ import annotations

import errno
import logging
import os
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from device.clock import FakeClock
from device.core.model import Event, KeyDown, KeyUp
from device.ports import DriverStatus
from drivers.touch import (
    ABS_MT_POSITION_X,
    ABS_MT_POSITION_Y,
    ABS_MT_SLOT,
    ABS_MT_TRACKING_ID,
    ABS_X,
    ABS_Y,
    BTN_TOUCH,
    DEFAULT_SIM_ZONES,
    EV_ABS,
    EV_KEY,
    EV_SYN,
    EVENT_SIZE,
    SYN_DROPPED,
    SYN_REPORT,
    TouchInput,
    TouchParser,
    pack_event,
    zone_for,
)

# An 800×480 panel: a title bar (y < 80) that is no key, then five columns 5 … 1.
ZONES = {
    5: (0, 80, 160, 480),
    4: (160, 80, 320, 480),
    3: (320, 80, 480, 480),
    2: (480, 80, 640, 480),
    1: (640, 80, 800, 480),
}
CENTRE = {5: (80, 300), 4: (240, 300), 3: (400, 300), 2: (560, 300), 1: (720, 300)}


def syn() -> bytes:
    return pack_event(EV_SYN, SYN_REPORT, 0)


def move(x: int | None = None, y: int | None = None) -> bytes:
    out = b""
    if x is not None:
        out += pack_event(EV_ABS, ABS_X, x)
    if y is not None:
        out += pack_event(EV_ABS, ABS_Y, y)
    return out


def press(x: int | None, y: int | None) -> bytes:
    return pack_event(EV_KEY, BTN_TOUCH, 1) + move(x, y) + syn()


def release() -> bytes:
    return pack_event(EV_KEY, BTN_TOUCH, 0) + syn()


def tap(x: int, y: int) -> bytes:
    return press(x, y) + release()


def mt(slot: int, tracking_id: int | None = None, x: int | None = None,
       y: int | None = None) -> bytes:
    out = pack_event(EV_ABS, ABS_MT_SLOT, slot)
    if tracking_id is not None:
        out += pack_event(EV_ABS, ABS_MT_TRACKING_ID, tracking_id)
    if x is not None:
        out += pack_event(EV_ABS, ABS_MT_POSITION_X, x)
    if y is not None:
        out += pack_event(EV_ABS, ABS_MT_POSITION_Y, y)
    return out


def parse(stream: bytes) -> list[tuple[str, int]]:
    return [tuple(a) for a in TouchParser(ZONES).feed(stream)]  # type: ignore[misc]


# Layout and zones ---------------------------------------------------------------

def test_event_size_is_the_native_struct_input_event() -> None:
    long_size = struct.calcsize("l")
    assert EVENT_SIZE == 2 * long_size + 8 == (24 if long_size == 8 else 16)
    assert len(pack_event(EV_KEY, BTN_TOUCH, 1)) == EVENT_SIZE


def test_zones_are_half_open() -> None:
    assert zone_for(ZONES, 159, 80) == 5
    assert zone_for(ZONES, 160, 80) == 4
    assert zone_for(ZONES, 799, 479) == 1
    assert zone_for(ZONES, 800, 300) is None
    assert zone_for(ZONES, 300, 79) is None


def test_default_sim_zones_cover_the_display_left_to_right_5_to_1() -> None:
    for y in range(64):
        row = [zone_for(DEFAULT_SIM_ZONES, x, y) for x in range(128)]
        assert None not in row
        # Each column is one run, in order 5, 4, 3, 2, 1, about a fifth wide.
        runs = [level for i, level in enumerate(row) if i == 0 or row[i - 1] != level]
        assert runs == [5, 4, 3, 2, 1]
        assert all(25 <= row.count(level) <= 26 for level in runs)
    assert zone_for(DEFAULT_SIM_ZONES, 128, 10) is None


# The pure parser -----------------------------------------------------------------

def test_a_tap_in_each_zone_presses_that_level() -> None:
    for level, (x, y) in CENTRE.items():
        assert parse(tap(x, y)) == [("down", level), ("up", level)]


def test_press_is_reported_at_touch_down_before_the_lift() -> None:
    parser = TouchParser(ZONES)
    assert parser.feed(press(*CENTRE[3])) == [("down", 3)]
    assert parser.feed(move(x=410) + syn()) == []
    assert parser.feed(release()) == [("up", 3)]


def test_taps_outside_every_zone_are_ignored() -> None:
    stream = tap(400, 20) + tap(900, 300) + tap(*CENTRE[2])
    assert parse(stream) == [("down", 2), ("up", 2)]


def test_a_drag_across_zones_is_one_press_of_the_first_zone() -> None:
    stream = press(*CENTRE[5])
    for x in (200, 350, 500, 700):  # through 4, 3, 2 and into 1
        stream += move(x=x) + syn()
    stream += release()
    assert parse(stream) == [("down", 5), ("up", 5)]


def test_a_touch_landing_outside_does_not_press_when_it_slides_into_a_zone() -> None:
    stream = press(400, 20) + move(y=300) + syn() + release()
    assert parse(stream) == []


def test_a_second_tap_on_the_same_spot_carries_no_coordinates_but_still_counts() -> None:
    # The kernel drops unchanged ABS values: the second tap is BTN_TOUCH only.
    stream = tap(*CENTRE[4]) + press(None, None) + release()
    assert parse(stream) == [("down", 4), ("up", 4), ("down", 4), ("up", 4)]


def test_touch_before_any_coordinates_is_ignored() -> None:
    assert parse(press(None, None) + release() + tap(*CENTRE[1])) == [("down", 1), ("up", 1)]


def test_the_zone_is_decided_by_the_whole_packet_not_the_first_event() -> None:
    # Coordinates may come after BTN_TOUCH within the packet; the old position is stale.
    stream = tap(*CENTRE[5]) + pack_event(EV_KEY, BTN_TOUCH, 1) + move(*CENTRE[1]) + syn()
    stream += release()
    assert parse(stream) == [("down", 5), ("up", 5), ("down", 1), ("up", 1)]


def test_multitouch_slots_take_the_first_contact() -> None:
    stream = (
        pack_event(EV_KEY, BTN_TOUCH, 1) + mt(0, 7, *CENTRE[2]) + move(*CENTRE[2]) + syn()
        # a second finger lands on level 4 and moves: no new press
        + mt(1, 8, *CENTRE[4]) + syn()
        + mt(1, x=250) + syn()
        # the first finger lifts while the second stays: still one touch
        + mt(0, -1) + syn()
        + mt(1, -1) + pack_event(EV_KEY, BTN_TOUCH, 0) + syn()
    )
    assert parse(stream) == [("down", 2), ("up", 2)]


def test_multitouch_two_fingers_in_one_packet_use_the_lowest_slot() -> None:
    stream = (mt(1, 21, *CENTRE[1]) + mt(0, 20, *CENTRE[3]) + syn()
              + mt(0, -1) + mt(1, -1) + syn())
    assert parse(stream) == [("down", 3), ("up", 3)]


def test_multitouch_without_btn_touch_and_a_repeat_in_the_same_slot() -> None:
    stream = (mt(0, 1, *CENTRE[5]) + syn() + mt(0, -1) + syn()
              + mt(0, 2) + syn() + mt(0, -1) + syn())  # same spot: no positions sent
    assert parse(stream) == [("down", 5), ("up", 5), ("down", 5), ("up", 5)]


def test_events_dropped_by_the_kernel_are_not_half_applied() -> None:
    stream = (pack_event(EV_SYN, SYN_DROPPED, 0) + pack_event(EV_KEY, BTN_TOUCH, 1)
              + move(*CENTRE[3]) + syn()
              + tap(*CENTRE[2]))
    assert parse(stream) == [("down", 2), ("up", 2)]


def test_chunks_split_anywhere_give_the_same_presses() -> None:
    stream = tap(*CENTRE[5]) + tap(*CENTRE[1]) + tap(400, 10)
    whole = parse(stream)
    parser = TouchParser(ZONES)
    bytewise = []
    for i in range(len(stream)):
        bytewise += parser.feed(stream[i:i + 1])
    assert bytewise == whole == [("down", 5), ("up", 5), ("down", 1), ("up", 1)]


def test_partial_event_at_the_end_of_the_stream_is_held_then_dropped() -> None:
    stream = press(*CENTRE[3]) + release()
    parser = TouchParser(ZONES)
    # The last SYN_REPORT is cut short: the release is not complete yet.
    assert parser.feed(stream[:-5]) == [("down", 3)]
    assert parser.decoder.pending == EVENT_SIZE - 5
    # The stream ends there (device gone): the held key is released, the scrap dropped.
    assert parser.end() == [("up", 3)]


# The reader thread ---------------------------------------------------------------

def presses(events: list[Any]) -> list[tuple[str, int]]:
    return [(type(e).__name__, e.level) for e in events if isinstance(e, KeyDown | KeyUp)]


def statuses(events: list[Any]) -> list[str | None]:
    """The driver's DriverStatus news: an error, or None when the panel is back."""
    return [e.error for e in events if isinstance(e, DriverStatus)]


class Collected:
    def __init__(self) -> None:
        self.events: list[Event | DriverStatus] = []
        self.clock = FakeClock()

    def wait_for(self, pred: Callable[[list[Event | DriverStatus]], bool],
                 timeout: float = 3.0) -> None:
        deadline = time.monotonic() + timeout
        while not pred(self.events):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; events so far: {self.events}")
            time.sleep(0.005)

    def count(self, n: int) -> None:
        """Wait for `n` key events."""
        self.wait_for(lambda ev: len(presses(ev)) >= n)


@pytest.fixture
def got() -> Collected:
    return Collected()


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    yield r, w
    for fd in (r, w):
        try:
            os.close(fd)
        except OSError:
            pass


def test_reads_a_pipe_and_stamps_events_with_the_clock(got: Collected,
                                                       pipe: tuple[int, int]) -> None:
    r, w = pipe
    touch = TouchInput(r, ZONES)
    touch.start(got.events.append, got.clock)
    try:
        os.write(w, press(*CENTRE[4]))
        got.count(1)
        got.clock.advance(0.25)
        os.write(w, move(x=700) + syn() + release())
        got.count(2)
        assert got.events == [KeyDown(4, 1000.0, input="touch"), KeyUp(4, 1000.25)]
        # Idle and waiting: close() must not wait for more input.
        started = time.monotonic()
        touch.close()
        assert time.monotonic() - started < 0.5
    finally:
        touch.close()


def test_reads_a_binary_file_object_and_stops_at_its_end(got: Collected,
                                                         pipe: tuple[int, int]) -> None:
    r, w = pipe
    with os.fdopen(r, "rb", buffering=0, closefd=False) as stream:
        touch = TouchInput(stream, ZONES)
        touch.start(got.events.append, got.clock)
        try:
            # A partial event at the end of the stream, while a finger is down.
            os.write(w, tap(*CENTRE[5]) + press(*CENTRE[1]) + release()[:-3])
            os.close(w)
            got.count(4)
            time.sleep(0.05)
            assert presses(got.events) == [
                ("KeyDown", 5), ("KeyUp", 5), ("KeyDown", 1), ("KeyUp", 1)]
        finally:
            touch.close()


def test_plays_a_recorded_capture_once(tmp_path: Path, got: Collected) -> None:
    capture = tmp_path / "capture.bin"
    capture.write_bytes(tap(*CENTRE[3]) + tap(400, 30) + tap(*CENTRE[2]))
    touch = TouchInput(capture, ZONES, retry_s=0.02)
    touch.start(got.events.append, got.clock)
    try:
        got.count(4)
        time.sleep(0.2)  # ten retry periods: a capture must not be replayed
        assert presses(got.events) == [
            ("KeyDown", 3), ("KeyUp", 3), ("KeyDown", 2), ("KeyUp", 2)]
        assert all(getattr(e, "input", "touch") == "touch" for e in got.events)
    finally:
        touch.close()


def _open_writer(path: Path, timeout: float = 3.0) -> int:
    """Open the FIFO for writing once the driver has (re)opened it for reading."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: no reader yet; ENOENT: not created yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def test_waits_for_a_missing_device_and_reopens_it_after_it_goes(
        tmp_path: Path, got: Collected, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="drivers.touch")
    node = tmp_path / "event3"
    touch = TouchInput(node, ZONES, retry_s=0.05)
    touch.start(got.events.append, got.clock)
    try:
        time.sleep(0.2)  # missing at start: no crash, no key, one error logged
        assert presses(got.events) == []
        assert statuses(got.events) == [f"touch device {node} not available"]
        errors = [r for r in caplog.records
                  if r.levelno >= logging.ERROR and "not available" in r.getMessage()]
        assert len(errors) == 1  # said once, not once per retry
        os.mkfifo(node)
        w = _open_writer(node)
        os.write(w, press(*CENTRE[1]))
        got.count(1)
        os.close(w)  # the device goes away with the finger still down
        got.count(2)
        assert presses(got.events) == [
            ("KeyDown", 1), ("KeyUp", 1)]
        w = _open_writer(node)  # back again, reopened by the driver
        os.write(w, tap(*CENTRE[5]))
        got.count(4)
        os.close(w)
        assert presses(got.events)[2:] == [
            ("KeyDown", 5), ("KeyUp", 5)]
        # A fault while missing, cleared when it opened, raised when lost, cleared again
        # (and lost again once this writer closed).
        got.wait_for(lambda ev: len(statuses(ev)) >= 4)
        assert statuses(got.events)[:4] == [
            f"touch device {node} not available", None,
            f"touch device {node} lost (end of stream)", None]
    finally:
        touch.close()


def test_unplug_releases_the_key_and_the_device_is_reopened(
        tmp_path: Path, got: Collected, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A USB unplug makes read() fail with ENODEV; a FIFO stands in for the node.
    unplugged = threading.Event()
    real_read = os.read

    def read(fd: int, n: int) -> bytes:
        if unplugged.is_set() and fd == reader_fd[0]:
            raise OSError(errno.ENODEV, os.strerror(errno.ENODEV))
        return real_read(fd, n)

    reader_fd = [-1]
    real_open = os.open

    def open_(path: str, flags: int, *args: int) -> int:
        fd = real_open(path, flags, *args)
        if os.fspath(path) == str(node) and flags & os.O_ACCMODE == os.O_RDONLY:
            reader_fd[0] = fd
        return fd

    node = tmp_path / "event0"
    os.mkfifo(node)
    # (drivers.touch.os is the os module: these stand-ins see every caller.)
    monkeypatch.setattr("drivers.touch.os.read", read)
    monkeypatch.setattr("drivers.touch.os.open", open_)
    touch = TouchInput(node, ZONES, retry_s=0.05)
    touch.start(got.events.append, got.clock)
    try:
        w = _open_writer(node)
        os.write(w, press(*CENTRE[2]))
        got.count(1)
        unplugged.set()
        os.write(w, b"!")  # wakes the reader, whose read() now fails
        got.count(2)
        assert presses(got.events) == [
            ("KeyDown", 2), ("KeyUp", 2)]
        assert "lost: unplugged" in caplog.text
        got.wait_for(lambda ev: statuses(ev) == [f"touch device {node} lost (unplugged)"])
        os.close(w)
        unplugged.clear()
        w = _open_writer(node)  # plugged in again: reopened after retry_s
        os.write(w, tap(*CENTRE[4]))
        got.count(4)
        os.close(w)
        assert presses(got.events)[2:] == [
            ("KeyDown", 4), ("KeyUp", 4)]
        assert statuses(got.events)[:2] == [f"touch device {node} lost (unplugged)", None]
    finally:
        touch.close()


def test_close_is_prompt_while_waiting_to_retry(tmp_path: Path, got: Collected) -> None:
    touch = TouchInput(tmp_path / "missing", ZONES, retry_s=60)
    touch.start(got.events.append, got.clock)
    time.sleep(0.05)
    started = time.monotonic()
    touch.close()
    assert time.monotonic() - started < 0.5
