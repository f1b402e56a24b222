"""Alerts to an HTTP webhook as well as MQTT: a POST per alert message (for a robot,
alerts that wait go together), from its own thread so a slow or dead webhook never
delays the watcher. Best effort: a few retries,
then the message is dropped with a log line (MQTT carries every alert regardless).

The body is the alert message itself or a 企业微信 / 钉钉 group robot's markdown
message (broker_bridge/watch/channels.py). A robot's refusal (`errcode` ≠ 0 in a 200
answer) is a failure like an HTTP error, and posts to a robot are paced to its limit of
20 messages a minute (DingTalk blocks a robot for 10 minutes beyond it); alerts that
wait meanwhile go out together, a line each, in as few messages as fit."""

from __future__ import annotations

import collections
import functools
import http.client
import io
import json
import logging
import queue
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from broker_bridge.watch.channels import (
    DINGTALK,
    JSON,
    ROBOTS,
    render_many,
    robot_refusal,
    signed_url,
)

log = logging.getLogger("hcp.watch.webhook")

QUEUE_MAX = 1000
RETRY_DELAYS_S = (1.0, 4.0, 15.0)
ROBOT_POSTS_PER_MINUTE = 20  # both robots' documented limit
PACE_WINDOW_S = 60.0
ROBOT_BATCH_MAX = 50  # alerts in one robot message at most (the byte limit comes first)


class Webhook(threading.Thread):
    def __init__(self, url: str, timeout_s: float, token_file: str = "",
                 fmt: str = JSON, secret_file: str = "",
                 wall_clock: Callable[[], float] = time.time) -> None:
        super().__init__(name="webhook", daemon=True)
        self.url = url
        self._shown_url = _without_query(url)  # a robot's key is in its query: not in logs
        self._timeout = timeout_s
        self._token_file = token_file
        self._format = fmt
        self._secret_file = secret_file
        self._wall = wall_clock
        self._queue: queue.Queue[bytes | None] = queue.Queue(QUEUE_MAX)
        self._stopping = threading.Event()
        self._recent_posts: collections.deque[float] = collections.deque()
        self.delivered = 0
        self.dropped = 0

    def send(self, payload: bytes) -> None:
        """Queue one alert message (never blocks; drops it when the queue is full)."""
        try:
            self._queue.put_nowait(payload)
        except queue.Full:
            self.dropped += 1
            log.error("webhook queue full (%d): an alert was not posted to %s", QUEUE_MAX,
                      self._shown_url)

    def stop(self, timeout: float = 1.0) -> None:
        """Give queued messages `timeout` seconds, then stop (retries are abandoned)."""
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        self.join(timeout)
        self._stopping.set()
        self.join(0.5)

    def run(self) -> None:
        waiting: list[bytes] = []
        last = False  # the stop sentinel has been taken: finish what waits, then end
        while waiting or not last:
            if not waiting:
                payload = self._queue.get()
                if payload is None:
                    return
                waiting.append(payload)
            if self._format in ROBOTS:
                # Alerts that arrive while the robot's minute is full join the next post.
                self._wait_for_a_post()
                while len(waiting) < ROBOT_BATCH_MAX and not last:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        last = True
                    else:
                        waiting.append(more)
            try:
                taken = self._deliver(waiting)
            except Exception as e:
                # Contained at the loop: a dead webhook thread would drop every later
                # alert while the watcher looked healthy.
                taken = len(waiting)
                self.dropped += taken
                log.error("webhook %s: %d alert(s) could not be sent (%s: unexpected)",
                          self._shown_url, taken, type(e).__name__)
                log.debug("the failure in full", exc_info=True)
            del waiting[:taken]

    def _deliver(self, waiting: list[bytes]) -> int:
        """Post the first of `waiting` (for a robot, as many as fit one message); return
        how many alerts that post carried, delivered or dropped."""
        body, taken = waiting[0], 1
        if self._format in ROBOTS:
            body, taken = render_many(self._format, [json.loads(p) for p in waiting])
        for attempt, delay in enumerate((0.0, *RETRY_DELAYS_S)):
            if delay and self._stopping.wait(delay):
                break
            if not self._wait_for_a_post():
                break
            if self._format in ROBOTS:
                self._recent_posts.append(time.monotonic())
            error = self._post(body)
            if error is None:
                self.delivered += taken
                return taken
            if attempt == 0:
                log.warning("webhook %s: %s; retrying", self._shown_url, error)
            else:
                log.debug("webhook %s: %s", self._shown_url, error)
        self.dropped += taken
        if self._stopping.is_set():
            log.error("webhook %s: stopping; %d alert(s) not posted", self._shown_url, taken)
        else:
            log.error("webhook %s: giving up on %d alert(s) after %d attempts",
                      self._shown_url, taken, len(RETRY_DELAYS_S) + 1)
        return taken

    def _wait_for_a_post(self) -> bool:
        """Wait until a robot may take one more post this minute; False when stopping."""
        if self._format not in ROBOTS:
            return True
        while len(self._recent_posts) >= ROBOT_POSTS_PER_MINUTE:
            wait = self._recent_posts[0] + PACE_WINDOW_S - time.monotonic()
            if wait <= 0:
                self._recent_posts.popleft()
            elif self._stopping.wait(wait):
                return False
        return True

    def _post(self, body: bytes) -> str | None:
        url = self.url
        if self._format == DINGTALK and self._secret_file:
            secret, error = _read_secret(self._secret_file, "webhook_secret_file")
            if error:
                return error
            url = signed_url(url, secret, round(self._wall() * 1000))
        # One deadline for the whole attempt — connecting, sending, the status line,
        # the headers and the answer — not a timeout per read, which a receiver sending a
        # byte at a time would never reach.
        request = _TimedRequest(url, data=body, method="POST")
        request.deadline = time.monotonic() + self._timeout
        # 钉钉 asks for the charset to be named; a plain JSON receiver keeps its header.
        request.add_header("Content-Type", "application/json; charset=utf-8"
                           if self._format in ROBOTS else "application/json")
        if self._token_file:
            token, error = _read_secret(self._token_file, "webhook_token_file")
            if error:
                return error
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with _OPENER.open(request, timeout=self._timeout) as response:
                answer = _read_answer(response, request.deadline)
                if answer is None:
                    return (f"HTTP {response.status}, but the answer took longer than "
                            f"{self._timeout:g} s")
                return robot_refusal(self._format, response.status, answer)
        except urllib.error.HTTPError as e:
            if 300 <= e.code < 400:
                return f"HTTP {e.code} (a redirect: not followed, set the final URL)"
            return f"HTTP {e.code}"
        except TimeoutError:
            return f"no complete answer within {self._timeout:g} s"
        except (OSError, urllib.error.URLError, ValueError, http.client.HTTPException) as e:
            # HTTPException: a garbled answer (bad status line, a header too long).
            reason = getattr(e, "reason", e)
            if isinstance(reason, TimeoutError):
                return f"no complete answer within {self._timeout:g} s"
            return str(reason)[:200]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer, not a delivery: urllib would follow a 302 to our POST
    with a GET without the body, and the alert was lost while counted delivered."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # urllib then raises HTTPError with the 3xx


class _TimedRequest(urllib.request.Request):
    """A request with the deadline of its whole exchange (time.monotonic())."""

    deadline = 0.0


def _time_left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the deadline has passed")
    return left


class _DeadlineReader(io.RawIOBase):
    """The answer's bytes, every read with the time left before `deadline` as its
    timeout: the status line and headers (which http.client reads a line at a time,
    each read with its own timeout) as well as the body."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__()
        self._sock = sock
        self._raw = sock.makefile("rb", buffering=0)   # counted: the socket stays open
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        self._sock.settimeout(_time_left(self._deadline))
        return self._raw.readinto(buffer)

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


class _DeadlineResponse(http.client.HTTPResponse):
    def __init__(self, sock: socket.socket, debuglevel: int = 0, method: str | None = None,
                 url: str | None = None, *, deadline: float) -> None:
        super().__init__(sock, debuglevel, method, url)
        self.fp.close()   # the plain reader http.client made: reads without a deadline
        self.fp = io.BufferedReader(_DeadlineReader(sock, deadline))


def _addresses_within(host: str, port: int, deadline: float) -> list[Any]:
    """The host's addresses, looked up in a thread of its own: getaddrinfo takes no
    timeout, and a resolver that does not answer holds the caller for as long as the
    system's resolver settings say (attempts × timeout, 10 s by default and often more)."""
    found: list[Any] = []
    failed: list[OSError] = []

    def look_up() -> None:
        try:
            found.extend(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except OSError as e:
            failed.append(e)

    lookup = threading.Thread(target=look_up, name="webhook-dns", daemon=True)
    lookup.start()
    lookup.join(_time_left(deadline))
    if lookup.is_alive():
        raise TimeoutError(f"no address for {host} within the deadline")
    if failed:
        raise failed[0]
    return found


class _DeadlineConnection(http.client.HTTPConnection):
    """Looks the host up, connects, sends and reads the answer within `deadline`."""

    def __init__(self, *args: Any, deadline: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline = deadline
        self.response_class = functools.partial(  # type: ignore[assignment]
            _DeadlineResponse, deadline=deadline)
        self._create_connection = self._connect_within_deadline

    def _connect_within_deadline(self, address: tuple[str, int], timeout: Any = None,
                                 source_address: Any = None) -> socket.socket:
        # socket.create_connection, with the lookup bounded too; each address is then
        # tried with the time left, as create_connection tries them.
        error: OSError | None = None
        for *_, sockaddr in _addresses_within(address[0], address[1], self._deadline):
            try:
                return socket.create_connection(sockaddr[:2], _time_left(self._deadline),
                                                source_address)
            except TimeoutError:
                raise
            except OSError as e:
                error = e
        raise error or OSError(f"no address for {address[0]}")

    def connect(self) -> None:
        self.timeout = _time_left(self._deadline)
        super().connect()   # for HTTPS, the TLS handshake too
        self.sock.settimeout(_time_left(self._deadline))


class _DeadlineHTTPSConnection(_DeadlineConnection, http.client.HTTPSConnection):
    pass


_DEADLINE_CONNECTIONS: dict[type, type] = {
    http.client.HTTPConnection: _DeadlineConnection,
    http.client.HTTPSConnection: _DeadlineHTTPSConnection,
}


class _DeadlineHandler(urllib.request.AbstractHTTPHandler):
    """urllib's HTTP(S) handler with the request's deadline on its connection (proxies
    and TLS settings as urllib's own)."""

    def do_open(self, http_class: Any, req: urllib.request.Request,
                **http_conn_args: Any) -> http.client.HTTPResponse:
        deadline = getattr(req, "deadline", None) or time.monotonic() + (req.timeout or 5.0)
        connection = functools.partial(_DEADLINE_CONNECTIONS[http_class], deadline=deadline)
        return super().do_open(connection, req, **http_conn_args)


class _DeadlineHTTPHandler(_DeadlineHandler, urllib.request.HTTPHandler):
    pass


class _DeadlineHTTPSHandler(_DeadlineHandler, urllib.request.HTTPSHandler):
    pass


_OPENER = urllib.request.build_opener(_NoRedirect, _DeadlineHTTPHandler,
                                      _DeadlineHTTPSHandler)
ANSWER_MAX = 64 * 1024


def _read_answer(response: http.client.HTTPResponse, deadline: float) -> bytes | None:
    """Up to ANSWER_MAX bytes of the answer, or None when it is still coming at
    `deadline` (a read that would wait beyond it raises TimeoutError: _DeadlineReader)."""
    answer = b""
    while len(answer) < ANSWER_MAX:
        if time.monotonic() > deadline:
            return None
        chunk = response.read1(min(4096, ANSWER_MAX - len(answer)))
        if not chunk:
            break
        answer += chunk
    return answer


def _read_secret(path: str, key: str) -> tuple[str, str | None]:
    """A one-line secret file's text (read at each post: rotating it needs no restart),
    and why it could not be read."""
    try:
        secret = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        return "", f"cannot read {key}: {getattr(e, 'strerror', None) or e}"
    return secret, None if secret else f"{key} is empty"


def _without_query(url: str) -> str:
    """The URL for a log line: WeCom's `key` and DingTalk's `access_token` are the
    robot's password and live in the query."""
    return url.split("?", 1)[0]
