"""Play the window business system's side of the serial protocol (SPEC §4) from Python.

`WindowLink` opens a port (device path, pty, `socket://host:port`) like a window PC does;
`WindowServer` listens on TCP for an evaluator whose `serial.port` is `socket://…`. Both
send CRC-framed frames and collect what the evaluator sends back, for `hcp-sim window`,
the device simulator, the chaos runner and tests.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Self

import serial

from common.serial_codec import (
    EVALUATOR_TYPES,
    CrcMode,
    Encoded,
    encode,
    reply_problem,
)
from common.serial_codec import inspect_line as codec_inspect_line
from drivers.serial_link import LineSplitter

__all__ = ["CrcMode", "LinkError", "Received", "Sent", "WindowLink", "WindowServer",
           "answer_to", "encode", "inspect_line", "outcome_of", "time_seq"]

FramePredicate = Callable[[dict[str, Any]], bool]

# Frames kept for wait_for()/next_received() before the oldest unread ones are dropped:
# a long chaos run must not grow without bound on the evaluator's hellos.
INBOX_MAX = 10_000
POLL_S = 0.1
WRITE_TIMEOUT_S = 2.0
READ_CHUNK = 65536
# What went on the wire: the line (with its '\n'), the frame (None for a raw line), the
# CRC sent (None when there was none) and the correct CRC.
Sent = Encoded


class LinkError(Exception):
    """The port cannot be opened, was lost, or a frame could not be written."""


def time_seq() -> int:
    """A seq derived from the wall clock (milliseconds mod 2^31), so that separate runs of a
    tool do not reuse each other's numbers without keeping a counter on disk."""
    return int(time.time() * 1000) % 2**31


# --- decoding what arrives ----------------------------------------------------------

@dataclass(frozen=True)
class Received:
    """One line that arrived, decoded as far as it goes (common.serial_codec.inspect_line).

    `error` is None for a usable frame (valid CRC, a JSON object with a string `type` and
    an integer `seq`, and for the evaluator's own types the fields SPEC §4 promises);
    otherwise the reject kind (crc, no_crc, utf8, json, too_long, bad_frame, bad_field) and
    `detail` says why. `frame` is the JSON object whenever the line parses, even with a bad
    CRC, so that a monitor can still show what it claimed to be.
    """

    line: bytes
    t: float                         # time.monotonic() when the line was complete
    at: float                        # time.time() at the same moment
    frame: dict[str, Any] | None
    error: str | None = None
    detail: str = ""
    crc_in_frame: int | None = None  # None: the line carried no *CRC suffix
    crc_computed: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def type(self) -> str | None:
        value = self.frame.get("type") if self.frame else None
        return value if isinstance(value, str) else None


def inspect_line(line: bytes, require_crc: bool = True, t: float | None = None,
                 at: float | None = None) -> Received:
    """Decode any protocol line (either direction), never raising, stamped with when it
    arrived. A frame of a type the evaluator sends is also checked against SPEC §4 (a
    `rated` without its level is a `bad_field`); a window frame only for its framing, since
    judging it is the evaluator's job (`common.serial_codec.decode_line`)."""
    t = time.monotonic() if t is None else t
    at = time.time() if at is None else at
    seen = codec_inspect_line(line, require_crc)
    error, detail = seen.error, seen.detail
    if error is None and seen.frame is not None and seen.frame["type"] in EVALUATOR_TYPES:
        problem = reply_problem(seen.frame)
        if problem is not None:
            error, detail = "bad_field", problem
    return Received(line, t, at, seen.frame, error, detail, seen.crc_in_frame,
                    seen.crc_computed)


# --- sending ------------------------------------------------------------------------

class _FrameExchange(ABC):
    """The send/wait API shared by WindowLink and WindowServer; subclasses move bytes."""

    def __init__(self, require_crc: bool = True) -> None:
        self.require_crc = require_crc
        self._cond = threading.Condition()
        self._inbox: deque[Received] = deque(maxlen=INBOX_MAX)
        self._seq = time_seq()
        self._seq_lock = threading.Lock()
        self._lost: str | None = None
        self._stop = threading.Event()

    # -- API -------------------------------------------------------------------------

    @property
    def lost(self) -> str | None:
        """Why the link went away (None while it works)."""
        return self._lost

    def next_seq(self) -> int:
        with self._seq_lock:
            self._seq = (self._seq + 1) % 2**31
            return self._seq

    def send(self, frame_type: str, /, **fields: Any) -> int:
        """Send one CRC-framed frame of this type; returns its seq (`seq=` overrides)."""
        seq = fields.pop("seq", None)
        seq = self.next_seq() if seq is None else seq
        self.send_frame({"type": frame_type, "seq": seq, **fields})
        return int(seq) if isinstance(seq, int) else -1

    def send_frame(self, frame: dict[str, Any], crc: CrcMode = "ok") -> Sent:
        """Send a complete frame as given (its own type and seq)."""
        sent = encode(frame, crc)
        self._write(sent.line)
        return sent

    def send_raw(self, data: bytes) -> None:
        """Send bytes exactly as given (add the b"\\n" yourself)."""
        self._write(data)

    def exchange(self, frame_type: str, /, timeout: float = 2.0,
                 **fields: Any) -> dict[str, Any] | None:
        """Send a frame and wait for its ack or nak; None when none came in time."""
        seq = self.send(frame_type, **fields)
        return self.wait_for(answer_to(seq), timeout)

    def next_received(self, timeout: float | None) -> Received | None:
        """The oldest unread line (good or bad), waiting up to `timeout` seconds for one;
        None on timeout, or at once when the link is lost and nothing is left to read."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._inbox:
                if self._lost is not None or self._stop.is_set():
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(POLL_S if remaining is None else min(remaining, POLL_S))
            return self._inbox.popleft()

    def wait_for(self, predicate: FramePredicate, timeout: float) -> dict[str, Any] | None:
        """The first unread valid frame matching `predicate`, waiting up to `timeout`.

        It is taken out of the inbox; frames that do not match stay there, in order, for
        later calls (so an ack read early is not lost to a later wait for `rated`).
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for item in self._inbox:
                    if item.ok and item.frame is not None and predicate(item.frame):
                        self._inbox.remove(item)
                        return item.frame
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._lost is not None or self._stop.is_set():
                    return None
                self._cond.wait(min(remaining, POLL_S))

    def frames(self, timeout: float) -> Iterator[dict[str, Any]]:
        """Valid frames as they arrive, until `timeout` seconds from now (bad lines are
        skipped: use next_received to see them)."""
        deadline = time.monotonic() + timeout
        while True:
            item = self.next_received(max(0.0, deadline - time.monotonic()))
            if item is None:
                return
            if item.ok and item.frame is not None:
                yield item.frame

    def drain(self) -> list[Received]:
        """Take everything unread at once."""
        with self._cond:
            items = list(self._inbox)
            self._inbox.clear()
            return items

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- for subclasses ----------------------------------------------------------------

    @abstractmethod
    def _write(self, data: bytes) -> None: ...

    def _deliver(self, line: bytes) -> None:
        item = inspect_line(line, self.require_crc)
        with self._cond:
            self._inbox.append(item)
            self._cond.notify_all()

    def _set_lost(self, reason: str | None) -> None:
        with self._cond:
            self._lost = reason
            self._cond.notify_all()


def answer_to(seq: int) -> FramePredicate:
    """Predicate for the ack or nak of the frame with this seq."""
    return lambda f: f.get("type") in ("ack", "nak") and f.get("seq") == seq


def outcome_of(case_id: str) -> FramePredicate:
    """Predicate for the `rated` or `expired` frame of this case."""
    return lambda f: f.get("type") in ("rated", "expired") and f.get("case_id") == case_id


# --- a port we open (the window PC's side) --------------------------------------------

class _SerialPort:
    """The only code here that knows pyserial: its exceptions become LinkError."""

    def __init__(self, url: str, baudrate: int) -> None:
        self.url = url
        try:
            self._port = serial.serial_for_url(
                url, baudrate=baudrate, bytesize=serial.EIGHTBITS,
                parity=serial.PARITY_NONE, stopbits=serial.STOPBITS_ONE,
                timeout=POLL_S, write_timeout=WRITE_TIMEOUT_S)
        except Exception as e:  # noqa: BLE001 - SerialException, OSError, ValueError…
            raise LinkError(f"cannot open {url}: {_one_line(e)}") from None

    def discard_input(self) -> None:
        try:
            self._port.reset_input_buffer()
        except Exception:  # noqa: BLE001 - not every port type can; stale data is harmless
            pass

    def read(self) -> bytes:
        """Up to POLL_S waiting for a byte, then whatever else has arrived."""
        try:
            first: bytes = self._port.read(1)
            if not first:
                return b""
            # socket:// only ever reports 0 or 1 byte waiting: read the rest non-blocking.
            self._port.timeout = 0
            try:
                rest: bytes = self._port.read(READ_CHUNK)
            finally:
                self._port.timeout = POLL_S
        except Exception as e:  # noqa: BLE001 - whatever the port raises, it is gone
            raise LinkError(f"{self.url}: {_one_line(e)}") from None
        return first + rest

    def write(self, data: bytes) -> None:
        try:
            self._port.write(data)
            self._port.flush()
        except Exception as e:  # noqa: BLE001
            raise LinkError(f"cannot write to {self.url}: {_one_line(e)}") from None

    def close(self) -> None:
        try:
            self._port.close()
        except Exception:  # noqa: BLE001 - being discarded anyway
            pass


class WindowLink(_FrameExchange):
    """Open `url` (a device path, a pty, `socket://host:port`, `loop://`) as the window PC.

    Raises LinkError when the port cannot be opened. Input that was waiting before the
    link opened is discarded unless `keep_stale` (it answers frames nobody is waiting
    for any more); pyserial itself always discards it when it opens a device or pty.
    A reader thread collects lines until close() or until the port is lost (then `lost`
    says why and the wait methods return at once).
    """

    def __init__(self, url: str, baudrate: int = 115200, require_crc: bool = True,
                 keep_stale: bool = False) -> None:
        super().__init__(require_crc)
        self.url = url
        self._port = _SerialPort(url, baudrate)
        if not keep_stale:
            self._port.discard_input()
        self._write_lock = threading.Lock()
        self._thread = threading.Thread(target=self._read_loop, name="window-link",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1.0)
        self._port.close()

    def _write(self, data: bytes) -> None:
        if self._lost is not None:
            raise LinkError(self._lost)
        with self._write_lock:
            self._port.write(data)

    def _read_loop(self) -> None:
        splitter = LineSplitter()
        while not self._stop.is_set():
            try:
                chunk = self._port.read()
            except LinkError as e:
                if not self._stop.is_set():
                    self._set_lost(f"port lost: {e}")
                return
            for line in splitter.feed(chunk):
                self._deliver(line)


# --- a TCP server the evaluator connects to -------------------------------------------

class WindowServer(_FrameExchange):
    """Listen on TCP for an evaluator whose `serial.port` is `self.url` (socket://…).

    One evaluator at a time: a new connection replaces the old one (the daemon
    reconnects after losing the link). send() raises LinkError while none is connected;
    `lost` stays None here, since the evaluator is expected to come back.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0,
                 require_crc: bool = True) -> None:
        super().__init__(require_crc)
        try:
            self._listener = socket.create_server((host, port))
        except OSError as e:
            raise LinkError(f"cannot listen on {host}:{port}: {e}") from None
        self._listener.settimeout(POLL_S)
        self.host = host
        self.port = int(self._listener.getsockname()[1])
        self.connections = 0             # accepted so far
        self._conn: socket.socket | None = None
        self._conn_lock = threading.Lock()
        self._connected = threading.Condition(self._conn_lock)
        self._threads: list[threading.Thread] = []
        accept = threading.Thread(target=self._accept_loop, name="window-server",
                                  daemon=True)
        accept.start()
        self._threads.append(accept)

    @property
    def url(self) -> str:
        return f"socket://{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        return self._conn is not None

    def wait_connected(self, timeout: float, after: int = 0) -> bool:
        """Wait until an evaluator is connected and more than `after` connections have
        been accepted in all (pass the old `connections` to wait for a reconnect)."""
        deadline = time.monotonic() + timeout
        with self._connected:
            while self._conn is None or self.connections <= after:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._connected.wait(min(remaining, POLL_S))
            return True

    def disconnect(self) -> None:
        """Drop the current evaluator connection (it is expected to reconnect)."""
        with self._conn_lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            _close_socket(conn)

    def close(self) -> None:
        self._stop.set()
        self.disconnect()
        for thread in self._threads:
            thread.join(1.0)
        self._listener.close()

    def _write(self, data: bytes) -> None:
        with self._conn_lock:
            conn = self._conn
            if conn is None:
                raise LinkError(f"no evaluator connected to {self.url}")
            try:
                conn.sendall(data)
            except OSError as e:
                raise LinkError(f"cannot write to the evaluator: {e}") from None

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _addr = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(POLL_S)
            with self._connected:
                old, self._conn = self._conn, conn
                self.connections += 1
                self._connected.notify_all()
            if old is not None:
                _close_socket(old)
            reader = threading.Thread(target=self._read_loop, args=(conn,),
                                      name="window-server-reader", daemon=True)
            reader.start()
            self._threads = [t for t in self._threads if t.is_alive()] + [reader]

    def _read_loop(self, conn: socket.socket) -> None:
        splitter = LineSplitter()
        while not self._stop.is_set():
            try:
                chunk = conn.recv(READ_CHUNK)
            except TimeoutError:
                continue
            except OSError:
                break
            if not chunk:
                break
            for line in splitter.feed(chunk):
                self._deliver(line)
        with self._conn_lock:
            if self._conn is conn:
                self._conn = None
        _close_socket(conn)


def _close_socket(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    conn.close()


def _one_line(exc: BaseException) -> str:
    """pyserial's message without its repetitions ("[Errno 2] could not open port X:
    [Errno 2] No such file…" becomes "No such file…")."""
    text = " ".join(str(exc).split())
    text = _PYSERIAL_NOISE.sub("", text)
    return text or type(exc).__name__


_PYSERIAL_NOISE = re.compile(r"^(?:\[Errno -?\d+\] )?(?:could not open port \S+: )?"
                             r"(?:\[Errno -?\d+\] )?", re.IGNORECASE)
