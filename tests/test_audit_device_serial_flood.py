"""A window system (or a floating RS-232 line) spewing short lines faster than the loop can
answer them: the daemon's queue stays bounded, the reader waits for room instead (the
kernel's buffer, or TCP, holds the rest), and every line that was read is still handled."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from device.serial_session import MAX_QUEUED_LINES, SerialLine
from tests.support.inprocess import Device

LINES = 20 * MAX_QUEUED_LINES


def queued_lines(device: Device) -> int:
    with device.daemon.queue.mutex:
        return sum(isinstance(ev, SerialLine) for ev in device.daemon.queue.queue)


def test_a_flood_of_lines_waits_for_room_and_every_line_is_handled(tmp_path: Path) -> None:
    """Before: every line went on the unbounded queue at once (the reader is faster than
    the loop: about 2 us a line against 20 us), so a flood of newlines grew the daemon
    by about 100 bytes a line until the kernel killed it (measured: 45 MB to 157 MB for
    4 MB of "{}\\n" over socket://, still growing after the flood had stopped)."""
    device = Device(tmp_path).start()
    on_line = device.serial.on_line
    assert on_line is not None
    reader = threading.Thread(target=lambda: [on_line(b"{}") for _ in range(LINES)],
                              daemon=True)
    reader.start()
    deadline = time.monotonic() + 10
    while reader.is_alive() and queued_lines(device) < MAX_QUEUED_LINES \
            and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)                                  # time to overshoot, if it could
    assert queued_lines(device) <= MAX_QUEUED_LINES
    while reader.is_alive() and time.monotonic() < deadline:
        device.run(0)                                # the loop makes room
    reader.join(1)
    device.run(0)
    assert not reader.is_alive()
    assert device.daemon.stats.serial_errors["no_crc"] == LINES   # none lost
    device.stop()


def test_the_loop_feeding_itself_never_waits(tmp_path: Path) -> None:
    """Lines handed in on the loop's own thread (tools, in-process tests) are queued
    without waiting: nobody else could make room."""
    device = Device(tmp_path).start()
    for _ in range(MAX_QUEUED_LINES + 10):
        device.serial.send_raw(b"{}")
    device.run(0)
    assert device.daemon.stats.serial_errors["no_crc"] == MAX_QUEUED_LINES + 10
    device.stop()


def test_a_stop_while_the_reader_waits_for_room_does_not_hang(tmp_path: Path) -> None:
    device = Device(tmp_path).start()
    on_line = device.serial.on_line
    assert on_line is not None
    reader = threading.Thread(target=lambda: [on_line(b"{}") for _ in range(LINES)],
                              daemon=True)
    reader.start()
    deadline = time.monotonic() + 10
    while queued_lines(device) < MAX_QUEUED_LINES and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    device.stop()
    reader.join(5)
    assert not reader.is_alive() and time.monotonic() - started < 5
