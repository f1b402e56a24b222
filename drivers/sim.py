"""The simulator control socket (SPEC §8): simulated keys in, screen events out.

One UNIX socket at `<data_dir>/sim.sock` serves both the sim input and the sim display,
newline-delimited JSON both ways. To the daemon these are just another KeyInput and
another Display; `hcp-sim device`, tests and the chaos runner drive it from outside.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeGuard

from device.core.model import KeyDown, KeyUp
from device.ports import DriverError, DriverStatus, Emit, MonotonicClock, socket_path_problem
from drivers.targets import ScreenTargets
from drivers.touch import DEFAULT_SIM_ZONES, zone_for

log = logging.getLogger("hcp.sim")

MAX_REQUEST = 4096
NESTED_TOO_DEEPLY = "bad request: JSON nested too deeply"
MAX_HOLD_MS = 60_000
MAX_CLOCK_OFFSET_S = 10 * 366 * 86400   # a step of up to ten years either way
# The `fail` op (a test seam, like `clock`): served only when the daemon's environment
# has HCP_SIM_FAULT_OP=1 (the chaos runner's devices). Read here rather than in the
# composition root so the seam stays inside the sim driver it belongs to.
SIM_FAULT_OP_ENV = "HCP_SIM_FAULT_OP"
FAULT_PARTS = ("display", "indicators")
MAX_FAULT_TEXT = 200
# Unread screen events one client may have queued before it is dropped: about 500 screens,
# eight minutes of a prompt's once-a-second countdown.
MAX_CLIENT_BACKLOG = 1 << 20
# Clients attached at once: each holds a descriptor and two threads. One more is told
# so and closed: a script that leaks connections must not take the descriptors the
# daemon's serial port, panel and outbox need.
MAX_CLIENTS = 32
BUSY = f"busy: {MAX_CLIENTS} clients are attached, the most this socket takes"

StatusProvider = Callable[[], dict[str, Any]]
ClockStepper = Callable[[float], None]        # wall-clock offset in seconds


class _Client:
    """One connected client. Sends go through a bounded queue drained by the client's own
    writer thread: the daemon's loop broadcasts screens and must never wait for a client
    that has stopped reading (a suspended terminal, a stuck script)."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self._out: deque[bytes] = deque()
        self._queued = 0
        self._closed = False
        self._cond = threading.Condition()
        threading.Thread(target=self._write_loop, name="sim-client-writer",
                         daemon=True).start()

    def send(self, data: bytes) -> bool:
        """Queue data for the client; False once the client is gone or was dropped."""
        with self._cond:
            if self._closed:
                return False
            if self._queued + len(data) > MAX_CLIENT_BACKLOG:
                log.warning("sim client dropped: it has not read %d bytes of screen events",
                            self._queued)
                self._close_locked()
                return False
            self._out.append(data)
            self._queued += len(data)
            self._cond.notify()
        return True

    def close(self) -> None:
        with self._cond:
            self._close_locked()

    def _close_locked(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._out.clear()
        self._queued = 0
        self._cond.notify()
        # Wakes the reader thread too, which then removes the client from the server.
        with contextlib.suppress(OSError):
            self.conn.shutdown(socket.SHUT_RDWR)

    def _write_loop(self) -> None:
        while True:
            with self._cond:
                while not self._out and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                data = self._out.popleft()
                self._queued -= len(data)
            try:
                self.conn.sendall(data)
            except OSError:
                self.close()
                return


def _refuse(conn: socket.socket) -> None:
    """Tell a client beyond MAX_CLIENTS why, briefly, and close it."""
    with contextlib.suppress(OSError):
        conn.settimeout(0.5)
        conn.sendall((json.dumps({"ev": "error", "error": BUSY}) + "\n").encode())
    with contextlib.suppress(OSError):
        conn.close()


class SimServer:
    """The socket itself: accepts clients, parses their ops, broadcasts screen events.

    Shared by the sim input and the sim display: each `acquire()`s it and `release()`s it
    when closed, and the socket closes with the last of them (a stop closes the keys
    first, then shows the last screens: the display must still have its socket).

    `clock_op`: serve `{"op": "clock"}`, which steps the daemon's wall clock (a test seam
    for chaos runs and clock-jump tests). Off unless asked for: a sim display on a
    technician's bench must not let any local user move the time ratings carry.

    `fault_op` (default: HCP_SIM_FAULT_OP=1 in the environment): serve
    `{"op": "fail", "part": "display"|"indicators", "error": TEXT|null}`, a driver that
    fails on demand (chaos runs). `display`: every show() raises DriverError(TEXT) until
    the op comes again with `error: null`, as a panel that stopped answering does (the
    daemon's own retry brings the screen back). `indicators`: the sim device has no LEDs,
    so the op reports the part failing through the input's emit, as a driver reports a
    lost part (DriverStatus), and `null` reports it working again; a feedback that works
    meanwhile clears it too, as on a real device.
    """

    def __init__(self, path: Path, clock_op: bool = False,
                 fault_op: bool | None = None) -> None:
        self.path = Path(path)
        self.clock_op = clock_op
        # A colour display's buttons (SPEC §10): the `touch` op hits them, in screen
        # pixels; None on the OLED, whose touch op keeps its five columns.
        self.targets: ScreenTargets | None = None
        self.fault_op = (os.environ.get(SIM_FAULT_OP_ENV) == "1" if fault_op is None
                         else fault_op)
        # part -> the error it fails with (the `fail` op); read by SimDisplay.show
        self.failing: dict[str, str] = {}
        self._users = 0
        self._clients: list[_Client] = []
        self._lock = threading.Lock()
        self._emit: Emit | None = None
        self._clock: MonotonicClock | None = None
        self._last_event: bytes | None = None
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self.status_provider: StatusProvider | None = None
        # Test seam: `{"op": "clock", "offset_s": X}` steps the daemon's wall clock by X
        # seconds from the host's (chaos runs, clock-jump tests), when `clock_op` is on.
        # The host clock is never touched.
        self.clock_stepper: ClockStepper | None = None

    # --- lifecycle

    def open(self) -> None:
        if self._sock is not None:
            return
        too_long = socket_path_problem(self.path)
        if too_long is not None:
            raise DriverError(f"sim socket {self.path}: {too_long}; choose a shorter "
                              "[device] data_dir")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(self.path))
            os.chmod(self.path, 0o660)
            sock.listen(8)
        except OSError as e:
            sock.close()
            raise DriverError(f"sim socket {self.path}: {e.strerror or e}") from None
        self._sock = sock
        threading.Thread(target=self._accept_loop, name="sim-accept", daemon=True).start()

    def acquire(self) -> None:
        with self._lock:
            self._users += 1

    def release(self) -> None:
        """One user is done with the socket; the last one closes it."""
        with self._lock:
            self._users -= 1
            last = self._users <= 0
        if last:
            self.close()

    def close(self) -> None:
        self._stop.set()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
            self._sock = None
        with self._lock:
            clients, self._clients = self._clients, []
        for c in clients:
            c.close()
            with contextlib.suppress(OSError):
                c.conn.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def attach_input(self, emit: Emit, clock: MonotonicClock) -> None:
        self._emit = emit
        self._clock = clock

    def detach_input(self) -> None:
        """Presses from now on are ignored (the daemon is stopping)."""
        self._emit = None

    # --- out

    def broadcast(self, event: dict[str, Any], remember: bool = False) -> None:
        data = (json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        # Under the lock, so that a client accepted meanwhile gets the current screen
        # first and this one after it, never the other way round. send() only queues.
        with self._lock:
            if remember:
                self._last_event = data
            self._clients = [c for c in self._clients if c.send(data)]

    # --- in

    def _accept_loop(self) -> None:
        sock = self._sock
        assert sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                if self._stop.is_set():
                    return
                # e.g. EMFILE: the socket stays open for the next client; never spin
                time.sleep(0.05)
                continue
            with self._lock:
                full = len(self._clients) >= MAX_CLIENTS
            if full:
                _refuse(conn)
                continue
            client = _Client(conn)
            with self._lock:
                self._clients.append(client)
                if self._last_event is not None:
                    client.send(self._last_event)  # a new client sees the current screen
            threading.Thread(target=self._client_loop, args=(client,), name="sim-client",
                             daemon=True).start()

    def _client_loop(self, client: _Client) -> None:
        try:
            with contextlib.suppress(OSError):
                self._read_requests(client)
        finally:
            with self._lock:
                if client in self._clients:
                    self._clients.remove(client)
            client.close()
            with contextlib.suppress(OSError):
                client.conn.close()

    def _read_requests(self, client: _Client) -> None:
        buf = b""
        # Inside a line already answered "request too long": the rest of it, up to its
        # newline, is dropped too, never taken for a request of its own.
        skipping = False
        while not self._stop.is_set():
            chunk = client.conn.recv(4096)
            if not chunk:
                return
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if skipping:
                    skipping = False
                elif len(line) > MAX_REQUEST:
                    self._reply(client, {"ev": "error", "error": "request too long"})
                elif line.strip():
                    self._request(client, line)
            if len(buf) > MAX_REQUEST:
                if not skipping:
                    self._reply(client, {"ev": "error", "error": "request too long"})
                skipping = True
                buf = b""

    def _reply(self, client: _Client, event: dict[str, Any]) -> None:
        client.send((json.dumps(event, ensure_ascii=False) + "\n").encode())

    def _request(self, client: _Client, line: bytes) -> None:
        try:
            req = json.loads(line)
            if not isinstance(req, dict):
                raise ValueError("not an object")
        except (ValueError, UnicodeDecodeError) as e:
            self._reply(client, {"ev": "error", "error": f"bad request: {e}"})
            return
        except RecursionError:
            self._reply(client, {"ev": "error", "error": NESTED_TOO_DEEPLY})
            return
        op = req.get("op")
        if op in ("press", "hold"):
            level = req.get("level")
            if not _is_int(level) or not 1 <= level <= 5:
                self._reply(client, {"ev": "error", "op": op, "error": "level must be 1..5"})
                return
            ms = req.get("ms", 0) if op == "hold" else 0
            if not _is_int(ms) or not 0 <= ms <= MAX_HOLD_MS:
                self._reply(client, {"ev": "error", "op": op,
                                     "error": f"ms must be 0..{MAX_HOLD_MS}"})
                return
            self._press(level, ms / 1000)
        elif op == "touch":
            x, y = req.get("x"), req.get("y")
            if not _is_int(x) or not _is_int(y):
                self._reply(client, {"ev": "error", "op": op, "error": "x and y must be integers"})
                return
            targets = self.targets
            level = (targets.hit(x, y) if targets is not None
                     else zone_for(DEFAULT_SIM_ZONES, x, y))
            if level is not None:  # a touch outside every button does nothing
                self._press(level, 0.0)
        elif op == "clock" and self.clock_op:
            offset = req.get("offset_s")
            if (not isinstance(offset, int | float) or isinstance(offset, bool)
                    or not math.isfinite(offset) or abs(offset) > MAX_CLOCK_OFFSET_S):
                self._reply(client, {"ev": "error", "op": op,
                                     "error": "offset_s must be a number of seconds "
                                              f"within ±{MAX_CLOCK_OFFSET_S}"})
                return
            if self.clock_stepper is None:
                self._reply(client, {"ev": "error", "op": op, "error": "no clock to step"})
                return
            self.clock_stepper(float(offset))
            self._reply(client, {"ev": "clock", "offset_s": float(offset)})
        elif op == "fail" and self.fault_op:
            self._fail(client, req)
        elif op == "status":
            status = self.status_provider() if self.status_provider else {}
            self._reply(client, {"ev": "status", **status})
        else:
            self._reply(client, {"ev": "error", "error": f"unknown op {str(op)[:40]!r}"})

    def _fail(self, client: _Client, req: dict[str, Any]) -> None:
        part, error = req.get("part"), req.get("error")
        if part not in FAULT_PARTS:
            self._reply(client, {"ev": "error", "op": "fail",
                                 "error": f"part must be one of {', '.join(FAULT_PARTS)}"})
            return
        if error is not None and (not isinstance(error, str) or not error.strip()
                                  or len(error) > MAX_FAULT_TEXT):
            self._reply(client, {"ev": "error", "op": "fail",
                                 "error": f"error must be null or 1..{MAX_FAULT_TEXT} "
                                          "characters of text"})
            return
        if error is None:
            self.failing.pop(part, None)
        else:
            self.failing[part] = error
        if part == "indicators":
            emit, clock = self._emit, self._clock
            if emit is not None and clock is not None:
                emit(DriverStatus("indicators", error, clock.monotonic()))
        self._reply(client, {"ev": "fail", "part": part, "error": error})

    def _press(self, level: int, hold_s: float) -> None:
        emit, clock = self._emit, self._clock
        if emit is None or clock is None:
            return  # sim display only: keys come from real hardware
        emit(KeyDown(level, clock.monotonic(), input="sim"))
        if hold_s <= 0:
            emit(KeyUp(level, clock.monotonic()))
            return
        timer = threading.Timer(hold_s, lambda: emit(KeyUp(level, clock.monotonic())))
        timer.daemon = True
        timer.start()


def _is_int(v: Any) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)
