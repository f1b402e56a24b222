"""Play the window business system's side of the serial protocol (SPEC §4) from Python.

`WindowLink` opens a port (device path, pty, `socket://host:port`) like a window PC does;
`WindowServer` listens on TCP for an evaluator whose `serial.port` is `socket://…`. Both
send CRC-framed frames and collect what the evaluator sends back, for `hcp-sim window`,
the device simulator, the chaos runner and tests.

This module holds the two transports; what they share — sending, the inbox, waiting for a
frame, decoding what arrives — is simulator/frame_exchange.py, re-exported here.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from urllib.parse import urlsplit

import serial

from common.serial_codec import CrcMode, encode
from drivers.serial_link import LineSplitter
from simulator.frame_exchange import (
    POLL_S,
    FrameExchange,
    LinkError,
    Received,
    Sent,
    answer_to,
    inspect_line,
    outcome_of,
    time_seq,
)

__all__ = ["CrcMode", "LinkError", "Received", "Sent", "WindowLink", "WindowServer",
           "answer_to", "encode", "inspect_line", "outcome_of", "time_seq"]

WRITE_TIMEOUT_S = 2.0
READ_CHUNK = 65536


# --- a port we open (the window PC's side) --------------------------------------------

class _SerialPort:
    """The only code here that knows pyserial: its exceptions become LinkError."""

    def __init__(self, url: str, baudrate: int) -> None:
        self.url = url
        _check_url(url)
        try:
            # Exclusive, as the evaluator opens it: sharing the port with a running
            # hcp-device would split the evaluator's bytes between the two, unseen.
            self._port = serial.serial_for_url(
                url, baudrate=baudrate, bytesize=serial.EIGHTBITS,
                parity=serial.PARITY_NONE, stopbits=serial.STOPBITS_ONE,
                timeout=POLL_S, write_timeout=WRITE_TIMEOUT_S, exclusive=True)
        except Exception as e:  # noqa: BLE001 - SerialException, OSError, ValueError…
            if "exclusively lock" in str(e):
                raise LinkError(f"cannot open {url}: another program has it open; if it is "
                                "this evaluator's hcp-device, stop it first (sudo systemctl "
                                "stop hcp-device)") from None
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


class WindowLink(FrameExchange):
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

class WindowServer(FrameExchange):
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


def _check_url(url: str) -> None:
    """Refuse what pyserial would refuse with a meaningless message ("'debug|info|warning|
    error'" for socket://HOST:99999, a TypeError for socket://HOST)."""
    if not url.strip():
        raise LinkError("cannot open '': the port is empty (a device path, a pty or "
                        "socket://HOST:PORT)")
    if url.lower().startswith("socket://"):
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            port = None
        if port is None or not parts.hostname:
            raise LinkError(f"cannot open {url}: expected socket://HOST:PORT "
                            "with PORT 0–65535")


def _one_line(exc: BaseException) -> str:
    """pyserial's message without its repetitions ("[Errno 2] could not open port X:
    [Errno 2] No such file…" becomes "No such file…")."""
    text = " ".join(str(exc).split())
    text = _PYSERIAL_NOISE.sub("", text)
    return text or type(exc).__name__


_PYSERIAL_NOISE = re.compile(r"^(?:\[Errno -?\d+\] )?(?:could not open port \S+: )?"
                             r"(?:\[Errno -?\d+\] )?", re.IGNORECASE)
