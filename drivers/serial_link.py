"""The serial link to the window business system, on pyserial (SPEC §4).

A reader thread cuts the byte stream into lines and survives anything on the wire; a
lost port (USB adapter unplugged, socket peer gone) is reopened until it comes back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import serial

from common.serial_codec import MAX_LINE
from device.ports import DriverError, LineSink

# The read timeout bounds how long close() waits for the reader and is the only
# wake-up when the line is idle (five selects a second: no busy polling).
READ_TIMEOUT_S = 0.2
# A window PC that stops reading (full pty or socket buffer, RTS/CTS held) must not
# stall the daemon's loop for long: the frame is reported unsent instead.
WRITE_TIMEOUT_S = 0.5
# After a failed write, writes fail at once for this long instead of each waiting out the
# write timeout: a window system that floods us and never reads would otherwise hold the
# daemon's loop half a second per answer, and a stop behind thousands of them for minutes.
STALL_S = 2.0
READ_CHUNK = 65536
JOIN_TIMEOUT_S = 1.0


class LineSplitter:
    """Cuts a byte stream into lines at b"\\n", with bounded memory.

    Lines come out without their '\\n' (a trailing '\\r' is kept: the decoder tolerates
    it). A line longer than a frame plus its '\\r' comes out once, cut to MAX_LINE + 1
    bytes (MAX_LINE + 2 when byte MAX_LINE + 1 is '\\r', so that dropping that '\\r' cannot
    make it look like a frame of legal length); the rest of it is discarded and the
    stream resynchronises at the next '\\n'.
    """

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self._longest = max_line + 1  # a maximal frame plus its tolerated '\r'
        self._max_line = max_line
        self._pending = bytearray()
        self._discarding = False

    def reset(self) -> None:
        """Forget a partial line (the port was lost mid-line)."""
        self._pending.clear()
        self._discarding = False

    def feed(self, data: bytes) -> list[bytes]:
        lines: list[bytes] = []
        start = 0
        while start < len(data):
            newline = data.find(b"\n", start)
            end = len(data) if newline < 0 else newline
            if not self._discarding:
                # Keep one byte beyond the longest legal line: enough to tell it is too long.
                room = self._longest + 1 - len(self._pending)
                self._pending += data[start:min(end, start + room)]
                if len(self._pending) > self._longest:
                    lines.append(self._cut())
                    self._pending.clear()
                    self._discarding = newline < 0
                elif newline >= 0:
                    lines.append(bytes(self._pending))
                    self._pending.clear()
            elif newline >= 0:
                self._discarding = False
            if newline < 0:
                break
            start = newline + 1
        return lines

    def _cut(self) -> bytes:
        cut = bytes(self._pending[:self._max_line + 1])
        if cut.endswith(b"\r"):
            cut = bytes(self._pending[:self._max_line + 2])
        return cut


class PySerialLink:
    """`device.ports.SerialLink` on pyserial: a device path, `socket://host:port` or `loop://`.

    `on_open` is told every change of state, and the outcome of the first attempt:
    True when the port opens, False once per outage (including a port missing at
    start). Both callbacks run on the reader thread; their exceptions are logged.
    """

    def __init__(self, url: str, baudrate: int, reopen_s: float = 2.0,
                 log: logging.Logger | None = None) -> None:
        _check_port(url, baudrate)
        self._url = url
        self._baudrate = baudrate
        self._reopen_s = reopen_s
        self._log = log or logging.getLogger(__name__)
        self._lock = threading.Lock()  # guards _port against send() racing a close
        self._port: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._splitter = LineSplitter()
        self._outage_since: float | None = None
        self._write_error: str | None = None   # the last write failure, while failing
        self._fail_fast_until = 0.0

    @property
    def is_open(self) -> bool:
        port = self._port
        return port is not None and bool(port.is_open)

    def start(self, on_line: LineSink, on_open: Callable[[bool], None]) -> None:
        """Start the daemon reader thread; it opens the port (and keeps reopening it)."""
        if self._thread is not None:
            raise DriverError(f"serial link {self._url} already started")
        self._thread = threading.Thread(target=self._run, args=(on_line, on_open),
                                        name="serial-reader", daemon=True)
        self._thread.start()

    def send(self, data: bytes) -> bool:
        """Write one encoded frame: False when the port is not open; DriverError when the
        write failed or timed out (or did less than STALL_S ago: it fails at once then)."""
        with self._lock:
            port = self._port
            if port is None:
                return False
            if self._write_error is not None and time.monotonic() < self._fail_fast_until:
                raise DriverError(self._write_error)
            try:
                port.write(data)
            # Not only SerialException and OSError: loop:// raises queue.Full when nobody
            # drains it, a descriptor past 1023 ValueError from select() at every write.
            # A write that raised failed, whatever it raised (SerialLink.send's contract).
            except Exception as exc:  # noqa: BLE001
                why = str(exc) or type(exc).__name__   # queue.Full says nothing
                if self._write_error is None:
                    self._log.warning("serial port %s: write failed (%s); frames are not "
                                      "reaching the window system", self._url, why)
                self._write_error = f"serial port {self._url}: write failed ({why})"
                self._fail_fast_until = time.monotonic() + STALL_S
                raise DriverError(self._write_error) from None
            if self._write_error is not None:
                self._write_error = None
                self._log.info("serial port %s: writes work again", self._url)
            return True

    def close(self) -> None:
        """Stop the reader thread (within about a second) and close the port."""
        self._stop.set()
        port = self._port
        if port is not None:
            try:
                port.cancel_read()  # wakes a blocked read at once where pyserial can
            except Exception:  # noqa: BLE001 - not every port type supports it
                pass
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(JOIN_TIMEOUT_S)
            if thread.is_alive():
                self._log.warning("serial reader did not stop within %g s", JOIN_TIMEOUT_S)
        self._close_port()

    # -- reader thread -------------------------------------------------------------

    def _run(self, on_line: LineSink, on_open: Callable[[bool], None]) -> None:
        while not self._stop.is_set():
            if self._port is None and not self._open(on_open):
                self._stop.wait(self._reopen_s)
                continue
            try:
                chunk = _read_chunk(self._port)
            except Exception as exc:  # noqa: BLE001 - whatever the port raises, it is gone
                if self._stop.is_set():
                    break
                self._lose(exc, on_open)
                self._stop.wait(self._reopen_s)
                continue
            for line in self._splitter.feed(chunk):
                try:
                    on_line(line)
                except Exception:
                    # The line itself is not logged: it may carry personal data.
                    self._log.exception("serial line handler failed on a %d-byte line",
                                        len(line))

    def _open(self, on_open: Callable[[bool], None]) -> bool:
        try:
            # Exclusive (an advisory lock, which `hcp-sim window` takes too): two programs
            # reading one port would each get some of the window's bytes, unseen.
            port = serial.serial_for_url(
                self._url, baudrate=self._baudrate, bytesize=serial.EIGHTBITS,
                parity=serial.PARITY_NONE, stopbits=serial.STOPBITS_ONE,
                timeout=READ_TIMEOUT_S, write_timeout=WRITE_TIMEOUT_S, exclusive=True)
        except Exception as exc:  # noqa: BLE001 - SerialException, OSError, ValueError…
            if self._outage_since is None:
                self._outage_since = time.monotonic()
                self._log.warning("serial port %s not available (%s%s); retrying every %g s",
                                  self._url, exc, _LOCKED_HINT if _locked(exc) else "",
                                  self._reopen_s)
                self._notify(on_open, False)
            else:
                self._log.debug("serial port %s still not available: %s", self._url, exc)
            return False
        if self._stop.is_set():
            _quietly_close(port)
            return False
        with self._lock:
            self._port = port
        self._splitter.reset()
        if self._outage_since is None:
            self._log.info("serial port %s open at %d baud", self._url, self._baudrate)
        else:
            self._log.info("serial port %s open again after %.0f s", self._url,
                           time.monotonic() - self._outage_since)
            self._outage_since = None
        self._notify(on_open, True)
        return True

    def _lose(self, exc: BaseException, on_open: Callable[[bool], None]) -> None:
        self._log.warning("serial port %s lost (%s); retrying every %g s",
                          self._url, exc, self._reopen_s)
        self._outage_since = time.monotonic()
        self._close_port()
        self._splitter.reset()
        self._notify(on_open, False)

    def _close_port(self) -> None:
        with self._lock:
            port, self._port = self._port, None
        if port is not None:
            _quietly_close(port)

    def _notify(self, on_open: Callable[[bool], None], is_open: bool) -> None:
        if self._stop.is_set():
            return
        try:
            on_open(is_open)
        except Exception:
            self._log.exception("serial open/close handler failed")


def _read_chunk(port: Any) -> bytes:
    """Wait up to READ_TIMEOUT_S for a byte, then take whatever else has arrived."""
    first: bytes = port.read(1)
    if not first:
        return b""
    # A non-blocking read for the rest: with the timeout in force pyserial would wait
    # for the whole chunk, and socket:// reports in_waiting only as 0 or 1.
    port.timeout = 0
    try:
        rest: bytes = port.read(READ_CHUNK)
    finally:
        port.timeout = READ_TIMEOUT_S
    return first + rest


def _quietly_close(port: Any) -> None:
    try:
        port.close()
    except Exception:  # noqa: BLE001 - the port is being discarded anyway
        pass


_LOCKED_HINT = ("; another program on this machine has the port open, such as "
                "`hcp-sim window`: close it")


def _locked(exc: BaseException) -> bool:
    """pyserial's refusal of an exclusive open: another process holds the port's lock."""
    return "exclusively lock" in str(exc)


def _check_port(url: str, baudrate: int) -> None:
    """Reject what no retry can fix (an unknown URL scheme, a malformed URL, a bad baud
    rate) at construction; a missing device is only an outage."""
    if not url:
        raise DriverError("no serial port configured")
    try:
        port = serial.serial_for_url(url, baudrate=baudrate, do_not_open=True)
    except ValueError as exc:
        raise DriverError(f"serial port {url!r}: {exc}") from None
    except serial.SerialException:
        return  # e.g. hwgrep:// found no device yet: an outage, not a typo
    from_url = getattr(port, "from_url", None)
    if callable(from_url):
        try:
            from_url(url)
        except Exception:  # noqa: BLE001 - pyserial's own message can even fail to format
            raise DriverError(f"serial port {url!r} is not a valid URL (expected a device "
                              "path, socket://HOST:PORT or loop://)") from None
