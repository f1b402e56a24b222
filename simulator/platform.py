"""`hcp-sim platform`: the city platform (city_platform, `hcp-platform`) on one SQLite
file with its chaos controls switched on, for development, the demo and tests — a thin
wrapper kept for the technicians' muscle memory and the tests that start it.

The chaos controls (errors, 429 + Retry-After, hangs, slowness, lost answers) show the
bridge's retry and exactly-once behaviour against a misbehaving platform; `hcp-platform
run` has them off unless `[http] chaos = true`.

    hcp-sim platform --listen 127.0.0.1:8080 --db platform.db [--token-file FILE]
                     [--tls-cert FILE --tls-key FILE]
    hcp-sim platform counts --url http://127.0.0.1:8080
    hcp-sim platform chaos error --status 503 --for 60 --url http://127.0.0.1:8080
"""

from __future__ import annotations

import argparse
import json
import signal
import ssl
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import quote

from city_platform.chaos import CHAOS_MODES
from city_platform.server import DEFAULT_PATH
from city_platform.server import PlatformServer as CityPlatformServer
from city_platform.store import Store, StoreError

# The server -------------------------------------------------------------------------

class PlatformServer(CityPlatformServer):
    """hcp-platform's server on an SQLite file, chaos controls enabled; `serve_forever()`
    or `start()` in a thread. `close()` also closes the store."""

    def __init__(self, host: str, port: int, db_path: Path, path: str = DEFAULT_PATH,
                 token: str | None = None, max_batch: int = 1000,
                 tls_cert: Path | None = None, tls_key: Path | None = None) -> None:
        store = Store.open("sqlite:///" + str(Path(db_path).resolve()))
        try:
            super().__init__(host, port, store, path, token, max_batch, tls_cert, tls_key,
                             chaos=True,
                             server_name="hcp-reference-platform/1 (development aid)")
        except BaseException:
            store.close()
            raise

    def close(self) -> None:
        super().close()
        self.store.close()


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

    def times_seen(self) -> dict[str, dict[str, int]]:
        """device_id → rating_id → copies received: a rating is the pair (issue 17)."""
        result: dict[str, dict[str, int]] = self._call("GET", "/api/times_seen")["times_seen"]
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
        description="The city platform (hcp-platform) on one SQLite file with its chaos "
                    "controls on, for development and tests; a city runs 'hcp-platform run'. "
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
    if not 1 <= args.max_batch <= 100_000:   # as hcp-platform's [http] max_batch
        print(f"hcp-sim platform: --max-batch must be 1 to 100000, got {args.max_batch}",
              file=sys.stderr)
        return 2
    host, sep, port = args.listen.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        print(f"hcp-sim platform: --listen must be HOST:PORT, got {args.listen!r}",
              file=sys.stderr)
        return 2
    try:
        token = _read_token(args.token_file)
        server = PlatformServer(host.strip("[]"), int(port), Path(args.db), args.path, token,
                                args.max_batch,
                                Path(args.tls_cert) if args.tls_cert else None,
                                Path(args.tls_key) if args.tls_key else None)
    except (OSError, StoreError, ssl.SSLError) as e:
        print(f"hcp-sim platform: {e}", file=sys.stderr)
        return 1

    def on_signal(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"hcp-platform (development mode, chaos controls on) on {server.url}, db {args.db}"
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
