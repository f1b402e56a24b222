"""The reference aggregation platform: a DEVELOPMENT AID, not the real 评价汇聚平台.

A small HTTP server that implements SPEC §9 faithfully (one result per record,
de-duplication by rating_id, SQLite storage) for development, the demo and tests, with
chaos controls (errors, 429 + Retry-After, hangs, slowness, lost answers) so the
bridge's retry and exactly-once behaviour can be shown against a misbehaving platform.

    hcp-sim platform --listen 127.0.0.1:8080 --db platform.db [--token-file FILE]
                     [--tls-cert FILE --tls-key FILE]
    hcp-sim platform counts --url http://127.0.0.1:8080
    hcp-sim platform chaos error --status 503 --for 60 --url http://127.0.0.1:8080
"""

from __future__ import annotations

import argparse
import json
import signal
import sqlite3
import ssl
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from broker_bridge.profile import EXPIRED, ID_FIELD, check_gov_record
from common.rating import InvalidRecord, check_record

DEFAULT_PATH = "/api/ratings"
MAX_BODY_BYTES = 16 * 1024 * 1024
CHAOS_MODES = ("normal", "error", "hang", "slow", "drop")

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS ratings (
    rating_id   TEXT PRIMARY KEY,
    device_id   TEXT NOT NULL,
    level       INTEGER NOT NULL,
    rated_at    TEXT NOT NULL,
    received_at TEXT NOT NULL,
    times_seen  INTEGER NOT NULL DEFAULT 1,
    record      TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS expired_prompts (
    prompt_id   TEXT PRIMARY KEY,
    device_id   TEXT NOT NULL,
    case_id     TEXT NOT NULL,
    expired_at  TEXT NOT NULL,
    received_at TEXT NOT NULL,
    times_seen  INTEGER NOT NULL DEFAULT 1,
    record      TEXT NOT NULL
)
"""


# Storage ----------------------------------------------------------------------------

class RatingStore:
    """Ratings in one SQLite file; a rating_id is stored once, later copies are counted."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # "accepted" means on disk
        self._db.executescript(SCHEMA_SQL)
        self._lock = threading.Lock()
        self.requests = 0
        self.rejected = 0

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def submit(self, records: list[Any]) -> list[dict[str, Any]]:
        """One result per record, in order: accepted (new), duplicate, rejected."""
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        results: list[dict[str, Any]] = []
        with self._lock:
            self.requests += 1
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for record in records:
                    results.append(self._submit_one(record, now))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return results

    def _submit_one(self, record: Any, now: str) -> dict[str, Any]:
        if isinstance(record, dict) and "schema" not in record and ID_FIELD in record:
            return self._submit_gov(record, now)
        try:
            check_record(record)
        except InvalidRecord as e:
            self.rejected += 1
            return {"rating_id": e.rating_id or _loose_id(record), "status": "rejected",
                    "error": f"{e.reason}: {e.detail}"}
        rating_id = record["rating_id"]
        inserted = self._db.execute(
            "INSERT OR IGNORE INTO ratings (rating_id, device_id, level, rated_at, "
            "received_at, record) VALUES (?, ?, ?, ?, ?, ?)",
            (rating_id, record["device_id"], record["level"], record["rated_at"], now,
             json.dumps(record, ensure_ascii=False))).rowcount
        if inserted:
            return {"rating_id": rating_id, "status": "accepted", "error": None}
        self._db.execute("UPDATE ratings SET times_seen = times_seen + 1 WHERE rating_id = ?",
                         (rating_id,))
        return {"rating_id": rating_id, "status": "duplicate", "error": None}

    def _submit_gov(self, record: dict[str, Any], now: str) -> dict[str, Any]:
        """A record in the gov profile's default field names (docs/gov-profile.md): a
        rating is stored like any rating (its level read from satisfaction in the default
        direction); an expired prompt is kept apart, since it is not a rating."""
        try:
            kind = check_gov_record(record)
        except InvalidRecord as e:
            self.rejected += 1
            return {"rating_id": e.rating_id or _loose_id(record), "status": "rejected",
                    "error": f"{e.reason}: {e.detail}"}
        rating_id = record[ID_FIELD]
        text = json.dumps(record, ensure_ascii=False)
        if kind == EXPIRED:
            table, key = "expired_prompts", "prompt_id"
            inserted = self._db.execute(
                "INSERT OR IGNORE INTO expired_prompts (prompt_id, device_id, case_id, "
                "expired_at, received_at, record) VALUES (?, ?, ?, ?, ?, ?)",
                (rating_id, record["deviceCode"], record["projectNo"], record["assessTime"],
                 now, text)).rowcount
        else:
            table, key = "ratings", "rating_id"
            inserted = self._db.execute(
                "INSERT OR IGNORE INTO ratings (rating_id, device_id, level, rated_at, "
                "received_at, record) VALUES (?, ?, ?, ?, ?, ?)",
                (rating_id, record["deviceCode"], int(record["satisfaction"]),
                 record["assessTime"], now, text)).rowcount
        if inserted:
            return {"rating_id": rating_id, "status": "accepted", "error": None}
        self._db.execute(f"UPDATE {table} SET times_seen = times_seen + 1 WHERE {key} = ?",
                         (rating_id,))
        return {"rating_id": rating_id, "status": "duplicate", "error": None}

    def counts(self) -> dict[str, Any]:
        with self._lock:
            total, copies = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(times_seen), 0) FROM ratings").fetchone()
            by_device = dict(self._db.execute(
                "SELECT device_id, COUNT(*) FROM ratings GROUP BY device_id ORDER BY device_id"))
            by_level = {str(level): n for level, n in self._db.execute(
                "SELECT level, COUNT(*) FROM ratings GROUP BY level ORDER BY level DESC")}
            expired = self._db.execute("SELECT COUNT(*) FROM expired_prompts").fetchone()[0]
            return {
                "total": total,
                "good": sum(by_level.get(str(v), 0) for v in (3, 4, 5)),
                "bad": sum(by_level.get(str(v), 0) for v in (1, 2)),
                "by_level": by_level,
                "by_device": by_device,
                "duplicates": copies - total,   # copies received again (stored once)
                "rejected": self.rejected,      # since this process started
                "requests": self.requests,      # answered POSTs since this process started
                "expired_prompts": expired,     # gov profile: prompts that timed out unrated
            }

    def rating_ids(self, device_id: str | None = None) -> list[str]:
        with self._lock:
            if device_id is None:
                rows = self._db.execute("SELECT rating_id FROM ratings ORDER BY rowid")
            else:
                rows = self._db.execute(
                    "SELECT rating_id FROM ratings WHERE device_id = ? ORDER BY rowid",
                    (device_id,))
            return [r[0] for r in rows]

    def times_seen(self) -> dict[str, int]:
        """rating_id → how many copies arrived (1 = exactly once on the wire)."""
        with self._lock:
            return dict(self._db.execute("SELECT rating_id, times_seen FROM ratings"))


def _loose_id(record: Any) -> str | None:
    rid = record.get("rating_id") if isinstance(record, dict) else None
    return rid if isinstance(rid, str) else None


# Chaos --------------------------------------------------------------------------------

@dataclass
class ChaosMode:
    """How the ratings endpoint misbehaves (only POST {path}; counts stay honest).

    error: answer `status` (e.g. 503, 500, 429, 401) with `retry_after` if set;
    hang:  read the request, never answer, close after `for_s` (or when changed);
    slow:  store, then wait `delay_s` before answering;
    drop:  store, then close the connection without answering (the answer is lost).
    `for_s` / `requests` limit how long / how many requests; then back to normal.
    """

    mode: str = "normal"
    status: int = 503
    retry_after: str | None = None
    delay_s: float = 2.0
    for_s: float | None = None
    requests: int | None = None
    until: float | None = None  # monotonic deadline derived from for_s


class Chaos:
    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._mode = ChaosMode()

    def set(self, spec: dict[str, Any]) -> ChaosMode:
        """Replace the current mode; raise ValueError on a bad spec."""
        unknown = set(spec) - {"mode", "status", "retry_after", "delay_s", "for_s", "requests"}
        if unknown:
            raise ValueError(f"unknown keys: {', '.join(sorted(unknown))}")
        mode = ChaosMode(**spec)
        if mode.mode not in CHAOS_MODES:
            raise ValueError(f"mode must be one of {', '.join(CHAOS_MODES)}")
        if not isinstance(mode.status, int) or not 100 <= mode.status <= 599:
            raise ValueError("status must be an HTTP status code")
        if mode.retry_after is not None:
            mode.retry_after = str(mode.retry_after)
        if mode.for_s is not None:
            mode.until = time.monotonic() + float(mode.for_s)
        with self._lock:
            self._mode = mode
            self._lock.notify_all()
        return mode

    def take(self) -> ChaosMode:
        """The mode for one request (counting it against `requests`)."""
        with self._lock:
            mode = self._mode
            expired = mode.until is not None and time.monotonic() >= mode.until
            if mode.mode == "normal" or expired or mode.requests == 0:
                self._mode = ChaosMode()
                return self._mode
            if mode.requests is not None:
                mode.requests -= 1
            return mode

    def current(self) -> dict[str, Any]:
        with self._lock:
            mode = self._mode
            out = asdict(mode)
            out.pop("until")
            out["remaining_s"] = (None if mode.until is None
                                  else max(0.0, round(mode.until - time.monotonic(), 3)))
            return out

    def hang(self, mode: ChaosMode) -> None:
        """Block while `mode` is still the current one and its time has not run out."""
        with self._lock:
            while self._mode is mode:
                left = None if mode.until is None else mode.until - time.monotonic()
                if left is not None and left <= 0:
                    return
                self._lock.wait(timeout=left if left is not None else 1.0)


# HTTP ---------------------------------------------------------------------------------

class PlatformServer:
    """The reference platform on host:port; `serve_forever()` or `start()` in a thread."""

    def __init__(self, host: str, port: int, db_path: Path, path: str = DEFAULT_PATH,
                 token: str | None = None, max_batch: int = 1000,
                 tls_cert: Path | None = None, tls_key: Path | None = None) -> None:
        self.store = RatingStore(db_path)
        self.chaos = Chaos()
        self.path = path
        self.token = token
        self.max_batch = max_batch
        self._server = _QuietServer((host, port), _make_handler(self))
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

    @property
    def port(self) -> int:
        port: int = self._server.server_address[1]
        return port

    @property
    def base_url(self) -> str:
        host = str(self._server.server_address[0])
        return f"{'https' if self._tls else 'http'}://{host}:{self.port}"

    @property
    def url(self) -> str:
        return self.base_url + self.path

    def serve_forever(self) -> None:
        self._server.serve_forever(poll_interval=0.2)

    def start(self) -> PlatformServer:
        self._thread = threading.Thread(target=self.serve_forever, name="platform", daemon=True)
        self._thread.start()
        return self

    def shutdown(self) -> None:
        """Stop serving (call from another thread than serve_forever's)."""
        self.chaos.set({"mode": "normal"})  # release hung requests
        self._server.shutdown()

    def close(self) -> None:
        self._server.server_close()
        self.store.close()


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hangs up mid-request (or fails TLS) is not news here


def _make_handler(platform: PlatformServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes; with Nagle's algorithm the body waits
        # for the client's delayed ACK: ~40 ms per request instead of ~1.4 ms on loopback.
        disable_nagle_algorithm = True
        server_version = "hcp-reference-platform/1 (development aid)"
        timeout = 60  # an idle kept-alive connection is closed after this

        def setup(self) -> None:
            if isinstance(self.request, ssl.SSLSocket):
                self.request.settimeout(10)
                self.request.do_handshake()
            super().setup()

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass  # the bridge's metrics and this server's counts tell the story

        def do_GET(self) -> None:  # noqa: N802
            url = urlsplit(self.path)
            if url.path == "/healthz":
                return self._json(200, {"ok": True, "development_aid": True})
            if not self._authorized():
                return None
            if url.path == "/api/counts":
                return self._json(200, platform.store.counts())
            if url.path == "/api/rating_ids":
                device = parse_qs(url.query).get("device", [None])[0]
                return self._json(200, {"rating_ids": platform.store.rating_ids(device)})
            if url.path == "/api/times_seen":
                return self._json(200, {"times_seen": platform.store.times_seen()})
            if url.path == "/_chaos":
                return self._json(200, platform.chaos.current())
            return self._json(404, {"error": "not found"})

        def do_POST(self) -> None:  # noqa: N802
            body = self._read_body()
            if body is None:
                return None
            if not self._authorized():
                return None
            url = urlsplit(self.path)
            if url.path == "/_chaos":
                return self._set_chaos(body)
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

        def _ratings(self, body: bytes) -> None:
            mode = platform.chaos.take()
            if mode.mode == "error":
                headers = {"Retry-After": mode.retry_after} if mode.retry_after else {}
                return self._json(mode.status, {"error": f"chaos: HTTP {mode.status}"}, headers)
            if mode.mode == "hang":
                platform.chaos.hang(mode)
                self.close_connection = True
                return None
            if not self.headers.get("Content-Type", "").startswith("application/json"):
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
            results = platform.store.submit(ratings)
            if mode.mode == "slow":
                # Stored first, answered late: a bridge that gives up and re-sends must
                # meet the de-duplication, which is the point of this mode.
                time.sleep(mode.delay_s)
            if mode.mode == "drop":
                self.close_connection = True  # stored, but the answer never arrives
                return None
            return self._json(200, {"results": results})

        def _read_body(self) -> bytes | None:
            try:
                length = int(self.headers.get("Content-Length", "0"))
            except ValueError:
                length = -1
            if not 0 <= length <= MAX_BODY_BYTES:
                self._json(413, {"error": "body too large or bad Content-Length"})
                self.close_connection = True
                return None
            return self.rfile.read(length)

        def _authorized(self) -> bool:
            if platform.token is None:
                return True
            if self.headers.get("Authorization", "") == f"Bearer {platform.token}":
                return True
            self._json(401, {"error": "missing or wrong bearer token"},
                       {"WWW-Authenticate": "Bearer"})
            return False

        def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(obj, ensure_ascii=False).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

    return Handler


# Client (for tests, the chaos runner and the CLI) ---------------------------------------

class PlatformControl:
    """Talks to a running reference platform: counts, rating ids, chaos."""

    def __init__(self, base_url: str, token: str | None = None, timeout_s: float = 5.0,
                 ca_file: Path | str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s
        self._ssl = ssl.create_default_context(cafile=ca_file) if ca_file else None

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(request, timeout=self.timeout_s,
                                    context=self._ssl) as response:
            return json.loads(response.read())

    def counts(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/api/counts")
        return result

    def rating_ids(self, device_id: str | None = None) -> list[str]:
        query = "" if device_id is None else f"?device={quote(device_id)}"
        result: list[str] = self._call("GET", "/api/rating_ids" + query)["rating_ids"]
        return result

    def times_seen(self) -> dict[str, int]:
        result: dict[str, int] = self._call("GET", "/api/times_seen")["times_seen"]
        return result

    def chaos_state(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/_chaos")
        return result

    def chaos(self, mode: str, **params: Any) -> dict[str, Any]:
        """e.g. chaos("error", status=503, for_s=60, retry_after=2); chaos("normal")."""
        result: dict[str, Any] = self._call("POST", "/_chaos", {"mode": mode, **params})
        return result


# Command line -------------------------------------------------------------------------

def _read_token(path: str | None) -> str | None:
    if not path:
        return None
    return Path(path).read_text(encoding="utf-8").strip()


def _serve(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="hcp-sim platform",
        description="Reference aggregation platform (development aid, not the real one). "
                    "Also: 'hcp-sim platform counts --help', 'hcp-sim platform chaos --help'.")
    parser.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT")
    parser.add_argument("--db", required=True, metavar="FILE", help="SQLite file (created)")
    parser.add_argument("--path", default=DEFAULT_PATH, help="ratings endpoint path")
    parser.add_argument("--token-file", metavar="FILE",
                        help="require 'Authorization: Bearer <token in FILE>'")
    parser.add_argument("--max-batch", type=int, default=1000,
                        help="ratings per request before 413")
    parser.add_argument("--tls-cert", metavar="FILE", help="serve HTTPS with this certificate")
    parser.add_argument("--tls-key", metavar="FILE", help="the certificate's private key")
    args = parser.parse_args(argv)
    host, sep, port = args.listen.rpartition(":")
    if not sep or not port.isdigit():
        print(f"hcp-sim platform: --listen must be HOST:PORT, got {args.listen!r}",
              file=sys.stderr)
        return 2
    try:
        token = _read_token(args.token_file)
        server = PlatformServer(host.strip("[]"), int(port), Path(args.db), args.path, token,
                                args.max_batch,
                                Path(args.tls_cert) if args.tls_cert else None,
                                Path(args.tls_key) if args.tls_key else None)
    except (OSError, sqlite3.Error, ssl.SSLError) as e:
        print(f"hcp-sim platform: {e}", file=sys.stderr)
        return 1

    def on_signal(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"reference platform (DEVELOPMENT AID) on {server.url}, db {args.db}"
          + (", bearer token required" if token else ""), file=sys.stderr, flush=True)
    server.serve_forever()
    server.close()
    return 0


def _client_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--url", default="http://127.0.0.1:8080",
                        help="base URL of the reference platform")
    parser.add_argument("--token-file", metavar="FILE")
    return parser


def _counts(argv: list[str]) -> int:
    parser = _client_parser("hcp-sim platform counts", "Show what the platform has stored.")
    parser.add_argument("--json", action="store_true", help="print the raw JSON")
    args = parser.parse_args(argv)
    try:
        counts = PlatformControl(args.url, _read_token(args.token_file)).counts()
    except (OSError, urllib.error.URLError, ValueError) as e:
        print(f"hcp-sim platform counts: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(counts, ensure_ascii=False, indent=2))
        return 0
    print(f"ratings: {counts['total']}  (好评 {counts['good']}, 差评 {counts['bad']}; "
          f"copies received again: {counts['duplicates']}, rejected: {counts['rejected']})")
    for level in ("5", "4", "3", "2", "1"):
        print(f"  level {level}: {counts['by_level'].get(level, 0)}")
    for device, n in counts["by_device"].items():
        print(f"  {device}: {n}")
    return 0


def _chaos(argv: list[str]) -> int:
    parser = _client_parser("hcp-sim platform chaos",
                            "Make the ratings endpoint misbehave for a while.")
    parser.add_argument("mode", choices=CHAOS_MODES)
    parser.add_argument("--status", type=int, default=503, help="for mode error")
    parser.add_argument("--retry-after", help="Retry-After header value (mode error)")
    parser.add_argument("--delay", type=float, default=2.0, help="seconds (mode slow)")
    parser.add_argument("--for", dest="for_s", type=float, help="seconds, then normal again")
    parser.add_argument("--requests", type=int, help="this many requests, then normal again")
    args = parser.parse_args(argv)
    params: dict[str, Any] = {"status": args.status, "delay_s": args.delay}
    for key in ("retry_after", "for_s", "requests"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    try:
        state = PlatformControl(args.url, _read_token(args.token_file)).chaos(args.mode, **params)
    except (OSError, urllib.error.URLError, ValueError) as e:
        print(f"hcp-sim platform chaos: {e}", file=sys.stderr)
        return 1
    print(json.dumps(state))
    return 0


def main(argv: list[str]) -> int:
    if argv and argv[0] == "counts":
        return _counts(argv[1:])
    if argv and argv[0] == "chaos":
        return _chaos(argv[1:])
    return _serve(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
