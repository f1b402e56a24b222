"""Whatever a serial port's write raises reaches the daemon as DriverError (SPEC §4: the
link's contract, device.ports.SerialLink.send), so FrameWriter reports it and holds the
outcome instead of the exception ending the daemon's loop.

Seen with pyserial itself: loop:// raises queue.Full when its buffer is not drained within
the write timeout, and a tty or socket port whose descriptor is 1024 or above raises
ValueError from select() on every write."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest
import serial

from device.frames import FrameWriter
from device.ports import DriverError
from drivers.serial_link import PySerialLink
from tests.serial_helpers import Recorder, wait_until

RATED = {"type": "rated", "case_id": "HB-2026-000123", "level": 5, "rating_id": "r" * 32}


def test_loop_port_not_drained_is_a_driver_error() -> None:
    """The reader busy on a line (its handler slow): loop://'s 4 KiB buffer fills and
    pyserial raises queue.Full at the write timeout."""
    release = threading.Event()
    rec = Recorder()

    def slow_line(line: bytes) -> None:
        rec.on_line(line)
        release.wait(10)

    link = PySerialLink("loop://", 115200, reopen_s=0.1)
    link.start(slow_line, rec.on_open)
    try:
        assert wait_until(lambda: link.is_open)
        link.send(b"first\n")
        assert wait_until(lambda: rec.snapshot()[0] == [b"first"])
        with pytest.raises(DriverError, match=r"loop://: write failed \(Full\)"):
            for _ in range(10):
                link.send(b"x" * 1000 + b"\n")
    finally:
        release.set()
        link.close()


@pytest.fixture
def high_fds() -> Iterator[None]:
    """Descriptors up to past 1024 in use, so the next one opened is out of select()'s
    range (a daemon with many clients or files open)."""
    junk: list[int] = []
    try:
        while not junk or junk[-1] < 1030:
            junk.append(os.open(os.devnull, os.O_RDONLY))
        yield
    finally:
        for fd in junk:
            os.close(fd)


def test_tty_on_a_high_descriptor_is_a_driver_error(high_fds: None) -> None:
    master, slave = os.openpty()
    try:
        link = PySerialLink(os.ttyname(slave), 115200)
        rec = Recorder()
        # The port opened as the reader thread opens it, without the reader (which would
        # lose this port at its first read, for the same reason).
        assert link._open(rec.on_open)
        assert link._port.fd >= 1024
        with pytest.raises(DriverError, match="write failed"):
            link.send(b'{"type":"ping","seq":1}*0000\n')
        reports: list[str | None] = []
        writer = FrameWriter(link, report=reports.append)
        assert writer.send(RATED) is False
        assert list(writer.held) == [RATED]          # held for the next hello
        assert reports and "write failed" in str(reports[-1])
        link.close()
    finally:
        os.close(master)
        os.close(slave)


class _OddPort:
    """A port whose write raises what pyserial does not document."""

    is_open = True
    timeout = 0.0

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def read(self, size: int = 1) -> bytes:
        threading.Event().wait(0.05)
        return b""

    def write(self, data: bytes) -> int:
        raise self.error

    def close(self) -> None:
        pass


@pytest.mark.parametrize("error", [ValueError("I/O operation on closed file"),
                                   TypeError("fd is None"), RuntimeError("driver bug")])
def test_any_write_error_of_the_port_is_a_driver_error(
        monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    link = PySerialLink("loop://", 115200)
    monkeypatch.setattr(serial, "serial_for_url",
                        lambda *a, **k: _OddPort(error))
    rec = Recorder()
    link.start(rec.on_line, rec.on_open)
    try:
        assert wait_until(lambda: rec.snapshot()[1] == [True])
        with pytest.raises(DriverError) as e:
            link.send(b"x\n")
        assert "loop://" in str(e.value) and str(error) in str(e.value)
        # Failing fast meanwhile, as for any failed write.
        with pytest.raises(DriverError):
            link.send(b"x\n")
        failures: list[str | None] = []
        assert FrameWriter(link, report=failures.append).send(RATED) is False
        assert failures and str(error) in str(failures[-1])
    finally:
        link.close()
