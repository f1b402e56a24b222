"""HTTP client for the aggregation platform (SPEC §9): one POST per batch, one answer
per rating, on a kept-alive connection.

Every failure becomes a PlatformError that says whether retrying can help; nothing of
http.client, ssl or socket leaks out. The bearer token is read from a file and never
appears in an error message or a log line.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

from broker_bridge.profile import GovProfile
from common.backoff import parse_retry_after
from common.rating import InvalidRecord, decode_json_object

STATUSES = frozenset({"accepted", "duplicate", "rejected"})
RETRYABLE_HTTP = frozenset({408, 429})
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
_STALE_CONNECTION = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                     ConnectionAbortedError)


class PlatformError(Exception):
    """The platform did not answer usefully.

    `retryable` (5xx, 408, 429, timeouts, connection errors, garbled answers): retry the
    same batch with backoff. Otherwise (other 4xx, redirects): the batch was refused as
    a whole — a configuration problem, retried slowly. `retry_after` is the platform's
    Retry-After in seconds, when it sent one.
    """

    def __init__(self, detail: str, *, retryable: bool, status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after


class Result(NamedTuple):
    """The platform's answer for one rating (immutable; one per rating, so no frozen
    dataclass: those are slow to build)."""

    rating_id: str
    status: str
    error: str | None


class _Deadline:
    """Cuts a request off when it runs past its deadline. http.client's timeout bounds each
    socket operation, not the exchange: a platform that trickles its answer a byte at a time
    would otherwise hold a batch (and its worker) for as long as it likes.

    One watcher thread per client, started on demand and gone after a minute idle; arming
    and disarming cost a lock and a notify."""

    IDLE_EXIT_S = 60.0

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._conn: http.client.HTTPConnection | None = None
        self._at: float | None = None
        self._thread: threading.Thread | None = None
        self.expired = False

    def arm(self, conn: http.client.HTTPConnection, seconds: float) -> None:
        with self._cond:
            self._conn, self._at, self.expired = conn, time.monotonic() + seconds, False
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="platform-deadline",
                                                daemon=True)
                self._thread.start()
            self._cond.notify()

    def disarm(self) -> None:
        with self._cond:
            self._conn = self._at = None

    def _watch(self) -> None:
        with self._cond:
            while True:
                if self._at is None:
                    if not self._cond.wait(self.IDLE_EXIT_S) and self._at is None:
                        self._thread = None
                        return
                    continue
                left = self._at - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                conn, self._conn, self._at = self._conn, None, None
                self.expired = True
                sock = conn.sock if conn is not None else None
                if sock is not None:
                    # Wakes the worker's blocked read; it then reports the timeout.
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)


class PlatformClient:
    """POSTs batches of raw rating payloads to `url`. Not thread-safe: one per worker.

    With a `profile` (platform.profile = "gov") each record is posted in the gov field
    names instead (docs/gov-profile.md); the envelope and the answer stay SPEC §9's.
    """

    def __init__(self, url: str, timeout_s: float, token_file: str = "",
                 ca_file: str = "", profile: GovProfile | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.url = url
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._timeout = timeout_s
        self._token_file = token_file
        self._token = self._read_token()
        self._ssl = ssl.create_default_context(cafile=ca_file or None) if self._https else None
        self._profile = profile
        self._conn: http.client.HTTPConnection | None = None
        self._used = False  # has the current connection carried a request already?
        self._deadline = _Deadline()

    def _read_token(self) -> str:
        if not self._token_file:
            return ""
        try:
            token = Path(self._token_file).read_bytes().decode("utf-8").strip()
        except OSError as e:
            raise PlatformError(f"cannot read token_file {self._token_file}: {e.strerror}",
                                retryable=False) from None
        except UnicodeDecodeError as e:
            raise PlatformError(f"token_file {self._token_file} is not UTF-8 text (byte "
                                f"{e.start})", retryable=False) from None
        # A header carries it: a line break, a control character or non-ASCII text would
        # make every request raise (and the worker set every rating aside as unprocessable).
        if not (token.isascii() and token.isprintable()):
            raise PlatformError(f"token_file {self._token_file} must hold one line of "
                                "printable ASCII (a bearer token)", retryable=False)
        return token

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._https:
                self._conn = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self._timeout, context=self._ssl)
            else:
                self._conn = http.client.HTTPConnection(
                    self._host, self._port, timeout=self._timeout)
            self._used = False
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def post_ratings(self, payloads: Sequence[bytes]) -> dict[str, Result]:
        """POST `{"ratings": [...]}` built from the raw payloads (each a valid JSON
        object); return the platform's answer per rating_id; raise PlatformError."""
        if self._profile is not None:
            payloads = [self._profile.rating_payload(p) for p in payloads]
        body = b'{"ratings":[' + b",".join(payloads) + b"]}"
        status, reason, headers, data = self._exchange(body)
        if not 200 <= status < 300:
            retryable = status >= 500 or status in RETRYABLE_HTTP
            if status in (401, 403) and self._token_file:
                self._token = self._read_token()  # the token may have been rotated
            snippet = data[:200].decode("utf-8", "replace").strip().replace("\n", " ")
            raise PlatformError(f"HTTP {status} {reason}" + (f": {snippet}" if snippet else ""),
                                retryable=retryable, status=status,
                                retry_after=parse_retry_after(headers.get("Retry-After")))
        return _parse_results(data, status)

    def _exchange(self, body: bytes) -> tuple[int, str, http.client.HTTPMessage, bytes]:
        try:
            return self._exchange_until_deadline(body)
        finally:
            self._deadline.disarm()

    def _exchange_until_deadline(
            self, body: bytes) -> tuple[int, str, http.client.HTTPMessage, bytes]:
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   "Content-Length": str(len(body))}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        # timeout_s bounds the whole exchange, both attempts included.
        ends = time.monotonic() + self._timeout
        for attempt in (1, 2):
            conn = self._connection()
            reused = self._used
            self._deadline.arm(conn, max(0.0, ends - time.monotonic()))
            try:
                if conn.sock is None:
                    conn.connect()
                    if self._deadline.expired:  # connected just as the time ran out
                        raise TimeoutError
                    self._deadline.arm(conn, max(0.0, ends - time.monotonic()))
                conn.request("POST", self._path, body=body, headers=headers)
                self._used = True
                response = conn.getresponse()
                data = response.read(MAX_RESPONSE_BYTES + 1)
                if len(data) > MAX_RESPONSE_BYTES:
                    self.close()
                    raise PlatformError("answer larger than 16 MiB", retryable=True)
                if response.will_close:
                    self.close()
                return response.status, response.reason, response.headers, data
            except _STALE_CONNECTION as e:
                self.close()
                if self._deadline.expired:
                    raise PlatformError(f"no answer within {self._timeout:g} s",
                                        retryable=True) from None
                # A kept-alive connection the server had already closed: try once more
                # on a fresh one before calling it a failure.
                if reused and attempt == 1:
                    continue
                raise PlatformError(f"connection lost: {_describe(e)}", retryable=True) from None
            except TimeoutError:
                self.close()
                raise PlatformError(f"no answer within {self._timeout:g} s",
                                    retryable=True) from None
            except ssl.SSLCertVerificationError as e:
                self.close()
                # A configuration problem (wrong CA, wrong host name), like a bad token.
                raise PlatformError(f"TLS certificate not trusted: {e.verify_message}",
                                    retryable=False) from None
            except (OSError, http.client.HTTPException) as e:
                self.close()
                if self._deadline.expired:
                    raise PlatformError(f"no answer within {self._timeout:g} s",
                                        retryable=True) from None
                raise PlatformError(f"cannot reach {self._host}:{self._port}: {_describe(e)}",
                                    retryable=True) from None
        raise AssertionError("unreachable")


def _describe(e: BaseException) -> str:
    text = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return str(text)


def _parse_results(data: bytes, status: int) -> dict[str, Result]:
    def garbled(why: str) -> PlatformError:
        return PlatformError(f"HTTP {status} but {why}", retryable=True, status=status)

    try:
        # Strict like every JSON the bridge reads: a result with two "status" keys could
        # mean accepted to us and rejected to the platform.
        answer = decode_json_object(data.removeprefix(b"\xef\xbb\xbf"))  # a BOM is fine
    except InvalidRecord as e:
        raise garbled(f"the body is not a JSON object ({e.reason}: {e.detail[:100]})"
                      ) from None
    results = answer.get("results")
    if not isinstance(results, list):
        raise garbled("the body has no results list")
    out: dict[str, Result] = {}
    for item in results:
        if not isinstance(item, dict):
            continue
        rating_id, verdict, error = item.get("rating_id"), item.get("status"), item.get("error")
        # isinstance first: `[] in STATUSES` raises TypeError (unhashable).
        if isinstance(rating_id, str) and isinstance(verdict, str) and verdict in STATUSES:
            out[rating_id] = Result(rating_id, str(verdict),
                                    None if error is None else _text(error))
    return out


def _text(error: object) -> str:
    """The platform's error as text we can pass on in a receipt: at most 500 characters,
    and no lone surrogate ("\\ud800" is valid JSON, but not UTF-8: encoding the receipt
    raised in the bridge's loop, and the platform gave the same answer after each
    restart)."""
    if isinstance(error, str):
        text = error
    else:
        try:
            text = json.dumps(error, ensure_ascii=False)
        except (ValueError, RecursionError):  # as deep as the decoder would go
            text = type(error).__name__
    return text[:500].encode("utf-8", "replace").decode("utf-8")
