"""The status socket (SPEC §13): a running daemon answers `hcp-device status` and
`hcp-device doctor` on `<data_dir>/status.sock`, a UNIX socket only the daemon's user
and group can open.

One request per connection, newline-delimited JSON (`{"op": "status"}`), one answer
line, then the server hangs up. The server runs on its own threads and reads the daemon's
state through a provider that returns plain values the loop keeps, so a slow, silent or
hostile client can never hold up the loop. `OutboxGlance` is the part of that state the
loop refreshes for it (oldest pending, last rating, last rejected).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.text import display_text
from device import __version__
from device.outbox import Outbox, StorageError
from device.ports import socket_path_problem

if TYPE_CHECKING:
    from device.daemon import Daemon

log = logging.getLogger("hcp.device")

STATUS_SOCKET = "status.sock"
SOCKET_MODE = 0o660          # the daemon's user and group, nobody else
# What the process umask must hide while the socket is bound: bind() creates the file
# with 0777 & ~umask, so with this umask it is born 0660 and never wider.
_BIND_UMASK = 0o117
MAX_REQUEST = 1024           # bytes of one request line; `{"op": "status"}` is 16
REQUEST_TIMEOUT_S = 2.0      # for reading the request and writing the answer
MAX_CONNECTIONS = 8          # served at once; more are told "busy" and closed
OPS = ("status",)
ERROR_CHARS = 200

StatusProvider = Callable[[], dict[str, Any]]


def status_socket_path(data_dir: Path | str) -> Path:
    return Path(data_dir) / STATUS_SOCKET


# --- answering one request ------------------------------------------------------------


def answer(line: bytes, provider: StatusProvider) -> dict[str, Any]:
    """The answer to one request line: `{"ok": true, "status": {...}}` or `{"ok": false,
    "error": "..."}`. Never raises, whatever the line or the provider does."""
    try:
        request = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return {"ok": False, "error": "not a JSON line (send {\"op\": \"status\"})"}
    except RecursionError:
        return {"ok": False, "error": "not a JSON line this server reads: nested too deeply "
                                      "(send {\"op\": \"status\"})"}
    if not isinstance(request, dict) or request.get("op") not in OPS:
        return {"ok": False, "error": "unknown request (send {\"op\": \"status\"})"}
    try:
        status = provider()
        json.dumps(status)   # an answer that cannot be sent is the provider's error
    except Exception as e:  # noqa: BLE001 - a status request must never take the server down
        log.warning("status socket: the status could not be read: %s", type(e).__name__)
        return {"ok": False, "error": f"status unavailable ({type(e).__name__})"}
    return {"ok": True, "status": status}


def _encode(reply: dict[str, Any]) -> bytes:
    return (json.dumps(reply, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


# --- the server -----------------------------------------------------------------------


class StatusServer:
    """Listens on `path`; `open()` after the outbox is open, `close()` at shutdown."""

    def __init__(self, path: Path, provider: StatusProvider, *,
                 timeout_s: float = REQUEST_TIMEOUT_S,
                 max_connections: int = MAX_CONNECTIONS) -> None:
        self.path = Path(path)
        self.provider = provider
        self.timeout_s = timeout_s
        self._slots = threading.BoundedSemaphore(max_connections)
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def open(self) -> None:
        """Bind and listen; OSError if the socket cannot be made (the caller decides
        whether that matters: for the daemon it does not)."""
        if self._sock is not None:
            return
        too_long = socket_path_problem(self.path)
        if too_long is not None:
            raise OSError(f"{too_long}; choose a shorter [device] data_dir")
        if self.path.is_symlink() or (self.path.exists() and not self.path.is_socket()):
            raise OSError(f"{self.path} exists and is not a socket; not replacing it")
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()   # a stale socket of a daemon that died
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # The umask is the process's: held only around bind(), which the daemon calls
            # from its loop at ready, when no other thread of it creates files.
            with _umask(_BIND_UMASK):
                sock.bind(str(self.path))
            os.chmod(self.path, SOCKET_MODE)   # also when the umask was already stricter
            sock.listen(MAX_CONNECTIONS)
        except OSError:
            sock.close()
            raise
        self._stop.clear()
        self._sock = sock
        self._thread = threading.Thread(target=self._accept_loop, name="status-accept",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        sock, self._sock = self._sock, None
        if sock is None:
            return
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)   # wakes accept()
        sock.close()
        if self._thread is not None:
            self._thread.join(2.0)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _accept_loop(self) -> None:
        sock = self._sock
        assert sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                if self._stop.is_set():
                    return
                time.sleep(0.05)   # e.g. EMFILE: let descriptors free up, never spin
                continue
            if not self._slots.acquire(blocking=False):
                _send_and_close(conn, _encode({"ok": False, "error": "busy, try again"}))
                continue
            threading.Thread(target=self._serve, args=(conn,), name="status-client",
                             daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            deadline = time.monotonic() + self.timeout_s
            line = _read_line(conn, deadline)
            if line is None:
                reply: dict[str, Any] = {
                    "ok": False, "error": f"no request line of at most {MAX_REQUEST} bytes "
                                          f"within {self.timeout_s:g} s"}
            else:
                reply = answer(line, self.provider)
            with contextlib.suppress(OSError):
                conn.settimeout(max(0.1, deadline - time.monotonic()))
                conn.sendall(_encode(reply))
        finally:
            with contextlib.suppress(OSError):
                conn.close()
            self._slots.release()


def _read_line(conn: socket.socket, deadline: float) -> bytes | None:
    """The first line the client sends, or None when it sends more than MAX_REQUEST
    bytes without a newline, hangs up first, or is too slow."""
    buf = b""
    try:
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or len(buf) > MAX_REQUEST:
                return None
            conn.settimeout(left)
            chunk = conn.recv(MAX_REQUEST + 1 - len(buf))
            if not chunk:
                # A request without its newline still counts, once the client is done.
                return buf or None
            buf += chunk
    except OSError:   # socket.timeout is an OSError
        return None
    line = buf.split(b"\n", 1)[0]
    return line if len(line) <= MAX_REQUEST else None


def _send_and_close(conn: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):
        conn.setblocking(False)
        conn.send(data)
    with contextlib.suppress(OSError):
        conn.close()


@contextlib.contextmanager
def _umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


# --- the client ------------------------------------------------------------------------


class NoDaemon(Exception):
    """No daemon answered on the status socket; the message says why, naming it."""


def ask_status(path: Path, timeout_s: float = 3.0) -> dict[str, Any]:
    """The running daemon's status, or NoDaemon saying which socket was tried and why."""
    where = f"no daemon answered on {path}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout_s)
        try:
            sock.connect(str(path))
        except FileNotFoundError:
            raise NoDaemon(f"{where}: the socket does not exist (is hcp-device running "
                           "with this config?)") from None
        except ConnectionRefusedError:
            if not path.is_socket():
                raise NoDaemon(f"{where}: it is not a socket but another file, in the "
                               "daemon's way (its log says so); move it aside") from None
            raise NoDaemon(f"{where}: the socket is left over from a daemon that is not "
                           "running any more") from None
        except PermissionError:
            raise NoDaemon(f"{where}: permission denied (run as the daemon's user or a "
                           "member of its group, or with sudo)") from None
        except OSError as e:
            raise NoDaemon(f"{where}: {e.strerror or e}") from None
        buf = b""
        # A server that is busy answers and hangs up before reading: its answer is still
        # there to read after the write fails.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(b'{"op": "status"}\n')
        try:
            while b"\n" not in buf:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
                if len(buf) > 1 << 20:
                    break
        except OSError as e:
            why = e.strerror or f"no answer within {timeout_s:g} s"
            raise NoDaemon(f"{where}: {why}") from None
    finally:
        sock.close()
    try:
        reply = json.loads(buf.split(b"\n", 1)[0])
    except (ValueError, RecursionError):
        raise NoDaemon(f"{where}: the answer was not JSON") from None
    if not isinstance(reply, dict):
        raise NoDaemon(f"{where}: the answer was not a JSON object")
    if not reply.get("ok") or not isinstance(reply.get("status"), dict):
        raise NoDaemon(f"{where}: it said: {str(reply.get('error'))[:ERROR_CHARS]}")
    status: dict[str, Any] = reply["status"]
    return status


# --- what the loop keeps for the status ---------------------------------------------


class OutboxGlance:
    """The outbox at a glance, as plain values: refreshed on the daemon's loop thread
    (at start, after each stored rating, after each receipt), read from any thread.
    The server thread never reads the outbox itself: only the loop may touch it."""

    def __init__(self, outbox: Outbox, wall: Callable[[], float]) -> None:
        self.outbox = outbox
        self.wall = wall
        # Each replaced whole, never changed in place: other threads read them.
        self._oldest: float | None = None
        self._last_rating: dict[str, Any] | None = None
        self._last_rejected: dict[str, Any] | None = None

    def refresh(self, rejected_too: bool = True) -> None:
        """Loop thread only. The rejected list (up to 100 records to decode) is read at
        start and after a receipt that rejected something, not after every rating."""
        try:
            self._oldest = _epoch(self.outbox.oldest_rated_at())
            rejected = self.outbox.rejected() if rejected_too else []
        except StorageError:
            return
        if rejected:
            last = rejected[-1]
            rating = last.get("rating")
            if not isinstance(rating, dict):
                rating = {}
            at = last.get("rejected_at")
            self._last_rejected = {
                "rating_id": str(rating.get("rating_id", ""))[:64],
                "at": _iso(at) if isinstance(at, int | float) else None,
                # The platform's reason, as one line of safe text.
                "reason": display_text(str(last.get("error", "")))[:ERROR_CHARS],
            }

    def stored(self, rating: dict[str, Any]) -> None:
        """Loop thread only: a rating was durably stored (the daemon's on_stored)."""
        level = rating.get("level")
        # Time and level only: nothing that could name the citizen, the clerk or the case.
        self._last_rating = {"rated_at": str(rating.get("rated_at", ""))[:40],
                             "level": level if isinstance(level, int) else None}
        self.refresh(rejected_too=False)

    def receipted(self, done: dict[str, str]) -> None:
        """Loop thread only: receipts removed ratings (the daemon's on_receipted)."""
        self.refresh(rejected_too="rejected" in done.values())

    def status(self, base: dict[str, Any], *, broker_connects: int,
               clock_synced: bool) -> dict[str, Any]:
        """The daemon's `status()` with the glance and the SPEC §13 keys added."""
        oldest = self._oldest
        broker = base.get("broker")
        return {
            **base,
            "backlog": int(base.get("backlog", 0)),
            "oldest_pending_s": None if oldest is None
            else max(0, round(self.wall() - oldest)),
            "mqtt_connected": broker == "connected",
            "broker_connects": broker_connects,
            "serial_open": bool(base.get("serial_open")),
            "last_rating": self._last_rating,
            "last_rejected": self._last_rejected,
            "clock_synced": clock_synced,
            "version": __version__,
            "versions": {"hcp-device": __version__, "python": platform.python_version()},
        }


def _epoch(iso: object) -> float | None:
    if not isinstance(iso, str):
        return None
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except (ValueError, OverflowError):
        return None


def _iso(epoch: float) -> str | None:
    try:
        return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (ValueError, OverflowError, OSError):
        return None


# --- wiring ------------------------------------------------------------------------------


def attach_status_server(daemon: Daemon) -> StatusServer:
    """A status server for this daemon, opened once its outbox is open (the daemon's
    `on_ready`, on the loop's thread) and fed by the loop's observers. The caller closes
    it after the daemon has shut down. A socket that cannot be made is logged and the
    daemon runs on: status is for people, never a reason to stop rating."""
    glance = OutboxGlance(daemon.outbox, daemon.clock.wall)
    server = StatusServer(
        status_socket_path(daemon.config.device.data_dir),
        lambda: glance.status(daemon.status(), broker_connects=daemon.uplink.connects,
                              clock_synced=daemon.clock.synced()))
    before_ready, before_stored, before_receipted = (
        daemon.on_ready, daemon.on_stored, daemon.on_receipted)

    def ready() -> None:
        glance.refresh()
        try:
            server.open()
        except OSError as e:
            log.warning("status socket %s: %s; `hcp-device status` will not answer",
                        server.path, e.strerror or e)
        if before_ready is not None:
            before_ready()

    def stored(rating: dict[str, Any]) -> None:
        glance.stored(rating)
        if before_stored is not None:
            before_stored(rating)

    def receipted(done: dict[str, str]) -> None:
        glance.receipted(done)
        if before_receipted is not None:
            before_receipted(done)

    daemon.on_ready, daemon.on_stored, daemon.on_receipted = ready, stored, receipted
    return server
