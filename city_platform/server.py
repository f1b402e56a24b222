"""The platform's HTTP server: the §9 ingest API, the follow-ups API, the hall dashboard
and its live updates, counts for tests, and (when enabled) the chaos controls.

Standard library only (ThreadingHTTPServer): a city's hall has tens of windows, the
bridge keeps one connection per worker, and every request is short except the
dashboard's event stream, which holds one thread per open browser.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import parse_qs, unquote, urlsplit

from city_platform import __version__
from city_platform.chaos import Chaos
from city_platform.config import DEFAULT_HEAD_TIMEOUT_S, DEFAULT_MAX_CONNECTIONS
from city_platform.followups import STATES, FollowupError
from city_platform.store import AmbiguousRating, Store, StoreError

if TYPE_CHECKING:
    from city_platform.hall import Hall  # noqa: F401 - the dashboard, when there is one

log = logging.getLogger("hcp.platform.http")

QUIET_LOG_S = 60.0   # at most one warning a minute about connections turned away or late
HEAD = "its request line and headers"
# A request body is due within [http] head_timeout_s plus a second per this many bytes:
# 16 MiB, the largest body taken, may take 17 minutes; a batch of 100 ratings (60 KiB)
# 4 s more than a head.
BODY_BYTES_PER_S = 16 * 1024

DEFAULT_PATH = "/api/ratings"
MAX_BODY_BYTES = 16 * 1024 * 1024
TOKEN_COOKIE = "hcp_token"
SSE_MIN_INTERVAL_S = 0.5


class PlatformServer:
    """The platform on host:port; `serve_forever()`, or `start()` in a thread."""

    def __init__(self, host: str, port: int, store: Store, path: str = DEFAULT_PATH,
                 token: str | None = None, max_batch: int = 1000,
                 tls_cert: Path | None = None, tls_key: Path | None = None,
                 chaos: bool = False, hall: Hall | None = None,
                 server_name: str = f"hcp-platform/{__version__}",
                 max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 head_timeout_s: float = DEFAULT_HEAD_TIMEOUT_S) -> None:
        self.store = store
        self.chaos = Chaos()
        self.chaos_enabled = chaos
        self.path = path
        self.token = token
        self.max_batch = max_batch
        self.hall = hall
        self.server_name = server_name
        self.on_stored: list[Callable[[], None]] = []   # told after a batch committed
        heads = _HeadDeadlines(head_timeout_s)
        self._server = _QuietServer((host, port), _make_handler(self, heads))
        self._server.max_connections = max_connections
        self._server.heads = heads
        self._server.daemon_threads = True
        self._tls = tls_cert is not None
        if tls_cert is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls_cert, tls_key)
            # The handshake happens in the request's own thread (Handler.setup), so a
            # client that connects and says nothing cannot stall the accept loop.
            self._server.socket = context.wrap_socket(
                self._server.socket, server_side=True, do_handshake_on_connect=False)
        self._thread: threading.Thread | None = None
        self.stopping = threading.Event()
        # Kept-alive client connections: closed with the server, so that no request is
        # served by a platform whose store is being closed (a client then reconnects).
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()

    @property
    def port(self) -> int:
        port: int = self._server.server_address[1]
        return port

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def base_url(self) -> str:
        return f"{'https' if self._tls else 'http'}://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return self.base_url + self.path

    def serve_forever(self) -> None:
        reaper = threading.Thread(target=self._server.heads.run, args=(self.stopping,),
                                  name="platform-http-heads", daemon=True)
        reaper.start()
        try:
            self._server.serve_forever(poll_interval=0.2)
        finally:
            self.stopping.set()

    def start(self) -> Self:
        self._thread = threading.Thread(target=self.serve_forever, name="platform-http",
                                        daemon=True)
        self._thread.start()
        return self

    def shutdown(self) -> None:
        """Stop serving (from another thread than serve_forever's)."""
        self.stopping.set()
        self.chaos.set({"mode": "normal"})  # release hung requests
        if self.hall is not None:
            self.hall.wake_all()
        self._server.shutdown()

    def close(self) -> None:
        self._server.server_close()
        with self.connections_lock:
            open_now = list(self.connections)
        for conn in open_now:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def submit(self, records: list[Any]) -> list[dict[str, Any]]:
        results = self.store.submit(records)
        for listener in self.on_stored:
            listener()
        return results


def _peer(client_address: Any) -> str:
    host, port = client_address[0], client_address[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


class _HeadDeadlines:
    """Connections whose request line and headers are not all in yet, each with the time
    by which they must be; one thread (`run`) closes the read side of those past it, so
    that a client trickling its bytes (each read within the handler's timeout) cannot
    hold a connection slot for ever. The handler, woken by the closed read side, answers
    408. A warning names the peer, at most every QUIET_LOG_S."""

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        # socket -> (deadline, peer, what is awaited, its bound in seconds)
        self._due: dict[socket.socket, tuple[float, Any, str, float]] = {}
        self._late: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = 0
        self._warned_at = -QUIET_LOG_S

    def begin(self, sock: socket.socket, client_address: Any,
              bound_s: float | None = None, what: str = HEAD) -> None:
        """From now, `what` (the head; or a body, with its own bound) must be in within
        `bound_s` (default: the head's)."""
        bound = self.limit_s if bound_s is None else bound_s
        with self._lock:
            self._due[sock] = (time.monotonic() + bound, client_address, what, bound)

    def is_late(self, sock: socket.socket) -> bool:
        return sock in self._late

    def end(self, sock: socket.socket) -> bool:
        """What was awaited is in; True if its deadline had passed (its read side is
        closed)."""
        with self._lock:
            self._due.pop(sock, None)
            return sock in self._late

    def forget(self, sock: socket.socket) -> None:
        with self._lock:
            self._due.pop(sock, None)
            self._late.discard(sock)

    def run(self, stopping: threading.Event) -> None:
        tick = min(1.0, self.limit_s / 4)
        while not stopping.wait(tick):
            self.reap(time.monotonic())

    def reap(self, now: float) -> None:
        with self._lock:
            late = [(sock, peer, what, bound)
                    for sock, (due, peer, what, bound) in self._due.items() if due <= now]
            for sock, *_ in late:
                del self._due[sock]
                self._late.add(sock)
        for sock, peer, what, bound in late:
            # The plain socket's shutdown, also under TLS: SSLSocket.shutdown would drop
            # its TLS state under the handler's thread.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RD)
            self._warn(peer, what, bound)

    def _warn(self, peer: Any, what: str, bound: float) -> None:
        self._closed += 1
        now = time.monotonic()
        if now - self._warned_at >= QUIET_LOG_S:
            more = self._closed - 1
            log.warning("closed the connection from %s: %s took more than %.3g s ([http] "
                        "head_timeout_s%s)%s", _peer(peer), what, bound,
                        "" if what == HEAD else ", and a second per "
                        f"{BODY_BYTES_PER_S // 1024} KiB of body",
                        f"; {more} more since the last such warning" if more else "")
            self._warned_at, self._closed = now, 0


class _QuietServer(ThreadingHTTPServer):
    """At most `max_connections` connections served at once; one more is closed as soon
    as it is accepted (before a thread is started for it), with a warning at most every
    QUIET_LOG_S: the bridges retry, and nothing is stored from a connection refused.
    The first request's head (after the TLS handshake, if any) is due `heads.limit_s`
    after the accept."""

    max_connections = DEFAULT_MAX_CONNECTIONS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.heads = _HeadDeadlines(DEFAULT_HEAD_TIMEOUT_S)
        self._active = 0
        self._active_lock = threading.Lock()
        self._turned_away = 0
        self._warned_at = -QUIET_LOG_S

    @property
    def active(self) -> int:
        return self._active

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._active_lock:
            full = self._active >= self.max_connections
            if not full:
                self._active += 1
        if full:
            self._turn_away(request)
            return
        self.heads.begin(request, client_address)
        try:
            super().process_request(request, client_address)
        except BaseException:   # no thread was started: it will not count itself out
            self._leave(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._leave(request)

    def _leave(self, request: Any) -> None:
        self.heads.forget(request)
        with self._active_lock:
            self._active -= 1

    def _turn_away(self, request: Any) -> None:
        self._turned_away += 1
        now = time.monotonic()
        if now - self._warned_at >= QUIET_LOG_S:
            log.warning("%d connections are open ([http] max_connections): turned away "
                        "%d new one%s", self.max_connections, self._turned_away,
                        "" if self._turned_away == 1 else "s")
            self._warned_at, self._turned_away = now, 0
        self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hangs up mid-request (or fails TLS) is not news here


def _make_handler(platform: PlatformServer,
                  heads: _HeadDeadlines) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes; with Nagle's algorithm the body waits
        # for the client's delayed ACK: ~40 ms per request instead of ~1.4 ms on loopback.
        disable_nagle_algorithm = True
        server_version = platform.server_name
        timeout = 60  # an idle kept-alive connection is closed after this

        def setup(self) -> None:
            if isinstance(self.request, ssl.SSLSocket):
                self.request.settimeout(10)
                self.request.do_handshake()
            super().setup()
            with platform.connections_lock:  # after a handshake that may fail: no leak
                platform.connections.add(self.request)

        def finish(self) -> None:
            with platform.connections_lock:
                platform.connections.discard(self.request)
            super().finish()

        def handle(self) -> None:
            # The first request's head is timed from the accept; a kept-alive connection's
            # next one from its first byte: the idle time between is `timeout`.
            self.close_connection = True
            self.handle_one_request()
            while not self.close_connection and self._next_request_begins():
                self.handle_one_request()

        def _next_request_begins(self) -> bool:
            try:
                if not self.rfile.peek(1):  # type: ignore[attr-defined]  # a BufferedReader
                    return False
            except OSError:   # idle for `timeout`, or gone
                return False
            heads.begin(self.request, self.client_address)
            return True

        def parse_request(self) -> bool:
            if heads.is_late(self.request):
                self.command, self.requestline = "", ""
                return self._too_late()
            parsed = super().parse_request()   # reads the headers
            if heads.end(self.request) and parsed:
                return self._too_late()
            return parsed

        def _too_late(self) -> bool:
            """Not served with what arrived of its head: 408, if it can be written."""
            self.close_connection = True
            self.request_version = self.protocol_version   # an answer with a status line
            with contextlib.suppress(OSError):
                self._json(408, {"error": "the request line and headers took more than "
                                 f"{heads.limit_s:g} s"})
            return False

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass  # counts and the store tell the story; errors are logged where they occur

        # GET ---------------------------------------------------------------------------
        def do_GET(self) -> None:  # noqa: N802
            if (self.headers.get("Content-Length", "0").strip() not in ("", "0")
                    or "Transfer-Encoding" in self.headers):
                # A GET with a body: answered, then the connection is closed, so that the
                # body is never read as the next request.
                self.close_connection = True
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            if url.path == "/healthz":
                return self._json(200, {"ok": True, "version": __version__})
            if not self._authorized(query) or not self._query_ok(query):
                return None
            try:
                return self._get(url.path, query)
            except StoreError as e:
                log.error("store: %s", e)
                return self._json(503, {"error": "store unavailable"}, {"Retry-After": "1"})

        def _get(self, path: str, query: dict[str, list[str]]) -> None:
            store = platform.store
            if path == "/api/counts":
                return self._json(200, store.counts())
            if path == "/api/rating_ids":
                device = query.get("device", [None])[0]
                return self._json(200, {"rating_ids": store.rating_ids(device)})
            if path == "/api/times_seen":
                return self._json(200, {"times_seen": store.times_seen()})
            if path == "/api/followups":
                state = query.get("state", [None])[0]
                if state is not None and state not in STATES:
                    return self._json(400, {"error": "query parameter state must be one of "
                                            f"{', '.join(STATES)}"})
                hall_id = query.get("hall", [None])[0]
                rows = store.followups(state=state, hall_id=hall_id)
                return self._json(200, {"followups": [f.as_json() for f in rows]})
            if path == "/api/upstream":
                return self._json(200, store.upstream_counts())
            if path == "/_chaos" and platform.chaos_enabled:
                return self._json(200, platform.chaos.current())
            hall = platform.hall
            if hall is not None:
                if path == "/":
                    return self._send(200, hall.page().encode("utf-8"),
                                      "text/html; charset=utf-8", self._cookie_headers(query))
                hall_id = query.get("hall", [None])[0]
                if path == "/api/hall":
                    return self._json(200, hall.snapshot(hall_id))
                if path == "/api/events":
                    return self._events(hall_id)
            return self._json(404, {"error": "not found"})

        def _events(self, hall_id: str | None) -> None:
            """Server-sent events: the hall's snapshot now and at every change."""
            assert platform.hall is not None
            hall = platform.hall
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            version = -1
            try:
                while not platform.stopping.is_set():
                    version = hall.wait_change(version, timeout=15.0)
                    data = json.dumps(hall.snapshot(hall_id), ensure_ascii=False)
                    self.wfile.write(f"event: hall\ndata: {data}\n\n".encode())
                    self.wfile.flush()
                    # At most two redraws a second per browser: under a burst of batches
                    # the page stays within the 2 s promise without a snapshot per batch.
                    platform.stopping.wait(SSE_MIN_INTERVAL_S)
            except (OSError, ValueError):
                return  # the browser went away

        # POST --------------------------------------------------------------------------
        def do_POST(self) -> None:  # noqa: N802
            body = self._read_body()
            if body is None:
                return None
            url = urlsplit(self.path)
            if not self._authorized(parse_qs(url.query)) or not self._query_ok(
                    parse_qs(url.query)):
                return None
            if url.path == "/_chaos" and platform.chaos_enabled:
                return self._set_chaos(body)
            if url.path.startswith("/api/followups/"):
                device = parse_qs(url.query).get("device", [None])[0]
                rating_id = unquote(url.path[len("/api/followups/"):])
                if "\x00" in rating_id:
                    return self._json(400, {"error": "the rating id in the path holds a NUL "
                                            "character"})
                return self._move_followup(rating_id, device, body)
            if url.path != platform.path:
                return self._json(404, {"error": f"not found; ratings go to {platform.path}"})
            return self._ratings(body)

        def _set_chaos(self, body: bytes) -> None:
            try:
                spec = json.loads(body)
                if not isinstance(spec, dict):
                    raise ValueError("body must be a JSON object")
                platform.chaos.set(spec)
            except (ValueError, TypeError) as e:
                return self._json(400, {"error": str(e)})
            return self._json(200, platform.chaos.current())

        def _move_followup(self, rating_id: str, device_id: str | None, body: bytes) -> None:
            try:
                request = json.loads(body)
            except (ValueError, RecursionError):
                return self._json(400, {"error": "body is not JSON"})
            if not isinstance(request, dict):
                return self._json(400, {"error": "body must be a JSON object"})
            state, note, by = request.get("state"), request.get("note"), request.get("by")
            complex_case = request.get("complex")
            if not isinstance(state, str) or not isinstance(by, str) or not (
                    note is None or isinstance(note, str)) or not (
                    complex_case is None or isinstance(complex_case, bool)):
                return self._json(400, {"error": "body is {\"state\": …, \"by\": …, "
                                        "\"note\": … (optional), \"complex\": true|false "
                                        "(optional)}"})
            try:
                moved = platform.store.move_followup(rating_id, state, note, by, complex_case,
                                                     device_id=device_id)
            except AmbiguousRating as e:
                return self._json(409, {"error": str(e), "devices": e.devices})
            except FollowupError as e:
                status = 404 if str(e).startswith("no follow-up") else 409
                return self._json(status, {"error": str(e)})
            except StoreError as e:
                log.error("store: %s", e)
                return self._json(503, {"error": "store unavailable"}, {"Retry-After": "1"})
            if platform.hall is not None:
                platform.hall.changed()
            return self._json(200, moved.as_json())

        def _ratings(self, body: bytes) -> None:
            mode = platform.chaos.take()
            if mode.mode == "error":
                headers = {"Retry-After": mode.retry_after} if mode.retry_after else {}
                return self._json(mode.status, {"error": f"chaos: HTTP {mode.status}"}, headers)
            if mode.mode == "hang":
                platform.chaos.hang(mode)
                self.close_connection = True
                return None
            # A media type is case-insensitive (RFC 9110 8.3.1); its parameters may follow.
            media_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if media_type != "application/json":
                return self._json(415, {"error": "Content-Type must be application/json"})
            try:
                request = json.loads(body)
            except (ValueError, RecursionError):
                return self._json(400, {"error": "body is not JSON"})
            ratings = request.get("ratings") if isinstance(request, dict) else None
            if not isinstance(ratings, list) or not ratings:
                return self._json(400, {"error": "body must be {\"ratings\": [record, ...]} "
                                        "with at least one record"})
            if len(ratings) > platform.max_batch:
                return self._json(413, {"error": f"at most {platform.max_batch} ratings "
                                        "per request"})
            try:
                results = platform.submit(ratings)
            except StoreError as e:
                # Nothing of the batch was committed: the bridge retries it (§9, 5xx).
                log.error("store: %s; batch of %d not stored, asked to retry", e, len(ratings))
                return self._json(503, {"error": "store unavailable"}, {"Retry-After": "1"})
            except Exception:
                # A bug of ours, not the client's: said loudly, nothing stored, and the
                # bridge retries (5xx) rather than losing the batch.
                log.exception("batch of %d not stored: internal error", len(ratings))
                return self._json(500, {"error": "internal error; nothing stored"})
            if mode.mode == "slow":
                # Stored first, answered late: a bridge that gives up and re-sends must
                # meet the de-duplication, which is the point of this mode.
                time.sleep(mode.delay_s)
            if mode.mode == "drop":
                self.close_connection = True  # stored, but the answer never arrives
                return None
            return self._json(200, {"results": results})

        # plumbing ----------------------------------------------------------------------
        def _read_body(self) -> bytes | None:
            if "Transfer-Encoding" in self.headers:
                # Not read here: its bytes would be taken for the next request.
                self._json(411, {"error": "send the body with a Content-Length (a "
                                 "Transfer-Encoding such as chunked is not taken)"})
                self.close_connection = True
                return None
            lengths = set(self.headers.get_all("Content-Length") or ["0"])
            text = lengths.pop().strip() if len(lengths) == 1 else ""
            # Digits only: int() also takes "+10" and "1_0", which a proxy in front
            # would read otherwise.
            length = int(text) if text.isascii() and text.isdigit() else -1
            if not 0 <= length <= MAX_BODY_BYTES:
                self._json(413 if length > MAX_BODY_BYTES else 400,
                           {"error": f"Content-Length must be one number of bytes, at most "
                            f"{MAX_BODY_BYTES}"})
                self.close_connection = True
                return None
            # A body trickled a byte per read would hold the connection for ever, as a
            # head would: it has the head's bound and a second per BODY_BYTES_PER_S.
            bound = heads.limit_s + length / BODY_BYTES_PER_S
            what = f"its body of {length} bytes"
            heads.begin(self.request, self.client_address, bound, what)
            try:
                body = self.rfile.read(length)
            finally:
                late = heads.end(self.request)
            if late:
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self._json(408, {"error": f"{what} took more than {bound:.3g} s"})
                return None
            return body

        def _given_token(self, query: dict[str, list[str]]) -> str:
            header = self.headers.get("Authorization", "")
            if header.startswith("Bearer "):
                return header[len("Bearer "):]
            if "token" in query:
                return query["token"][0]
            cookie = SimpleCookie(self.headers.get("Cookie", ""))
            morsel = cookie.get(TOKEN_COOKIE)
            return morsel.value if morsel is not None else ""

        def _authorized(self, query: dict[str, list[str]]) -> bool:
            if platform.token is None:
                return True
            given = self._given_token(query).encode("utf-8")
            if hmac.compare_digest(given, platform.token.encode("utf-8")):
                return True
            self._json(401, {"error": "missing or wrong bearer token"},
                       {"WWW-Authenticate": "Bearer"})
            return False

        def _query_ok(self, query: dict[str, list[str]]) -> bool:
            """A NUL character is in no id, hall or state (and PostgreSQL cannot even
            compare one): a 400 naming the parameter, not a store error (503)."""
            for name, values in query.items():
                if "\x00" in name or any("\x00" in v for v in values):
                    shown = name.replace("\x00", "\\x00")[:40]
                    self._json(400, {"error": f"query parameter {shown} holds a NUL "
                                     "character"})
                    return False
            return True

        def _cookie_headers(self, query: dict[str, list[str]]) -> dict[str, str]:
            # A hall screen opens /?token=… once; the cookie keeps the stream authorised.
            if platform.token is None or "token" not in query:
                return {}
            return {"Set-Cookie": f"{TOKEN_COOKIE}={platform.token}; Path=/; HttpOnly; "
                                  "SameSite=Strict"}

        def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(obj, ensure_ascii=False).encode("utf-8")
            self._send(status, data, "application/json; charset=utf-8", headers)

        def _send(self, status: int, data: bytes, content_type: str,
                  headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            if self.close_connection:
                self.send_header("Connection", "close")
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

    return Handler
