"""The bridge's own HTTP endpoint: `/metrics` (Prometheus text format) and `/healthz`
(200 while connected to the broker with subscriptions granted and every worker alive,
503 otherwise)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST

log = logging.getLogger("hcp.bridge.http")


class EndpointError(Exception):
    """The endpoint cannot listen (address in use, permission denied)."""


class StatusEndpoint:
    """Serves `render_metrics()` and `healthy()` on host:port in a daemon thread."""

    def __init__(self, host: str, port: int, render_metrics: Callable[[], bytes],
                 healthy: Callable[[], bool]) -> None:
        handler = _make_handler(render_metrics, healthy)
        try:
            self._server = ThreadingHTTPServer((host, port), handler)
        except OSError as e:
            raise EndpointError(f"cannot listen on {host}:{port}: {e.strerror}") from None
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,),
                                        name="http", daemon=True)

    @property
    def port(self) -> int:
        port: int = self._server.server_address[1]
        return port

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _make_handler(render_metrics: Callable[[], bytes],
                  healthy: Callable[[], bool]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._answer(200, render_metrics(), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                ok = healthy()
                self._answer(200 if ok else 503, b"ok\n" if ok else b"not healthy: see the log\n",
                             "text/plain; charset=utf-8")
            else:
                self._answer(404, b"not found: try /metrics or /healthz\n",
                             "text/plain; charset=utf-8")

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            log.debug("%s %s", self.address_string(), format % args)

    return Handler
