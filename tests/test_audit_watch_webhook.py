"""Audit of the watcher's webhook (broker_bridge/watch/webhook.py) against receivers
that answer oddly: a redirect, an answer that trickles in."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from broker_bridge.watch import webhook
from broker_bridge.watch.webhook import Webhook


class Receiver:
    """A loopback HTTP server: POST /hook answers per `mode`; every request is noted."""

    def __init__(self, mode: str) -> None:
        self.requests: list[tuple[str, str, bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                receiver.requests.append(("GET", self.path, b""))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append(("POST", self.path, body))
                if receiver.mode == "redirect" and self.path == "/hook":
                    self.send_response(302)
                    self.send_header("Location", "/elsewhere")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if receiver.mode == "trickle":
                    self.send_response(200)
                    self.send_header("Content-Length", "100000")
                    self.end_headers()
                    try:
                        for _ in range(400):
                            self.wfile.write(b" ")
                            self.wfile.flush()
                            time.sleep(0.05)
                    except OSError:
                        pass
                    return
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.mode = mode
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def no_retry_delays(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(webhook, "RETRY_DELAYS_S", (0.01, 0.01, 0.01))


def wait(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def test_a_redirect_is_not_taken_for_a_delivery(no_retry_delays: None) -> None:
    """urllib follows a 302 to a POST with a GET without the body: the alert was lost
    and counted as delivered."""
    receiver = Receiver("redirect")
    hook = Webhook(receiver.url, 2.0)
    hook.start()
    try:
        hook.send(b'{"alert": "backlog"}')
        assert wait(lambda: hook.delivered + hook.dropped == 1, 10)
        assert hook.delivered == 0 and hook.dropped == 1
        assert all(method == "POST" for method, _, _ in receiver.requests)
    finally:
        hook.stop()
        receiver.close()


def test_an_answer_that_trickles_in_does_not_hold_the_webhook(
        no_retry_delays: None) -> None:
    """The receiver sends its headers, then a byte every 50 ms: each read came within
    the 1 s timeout, so one post took as long as the receiver liked (here 20 s; a
    hostile one, hours) and every alert behind it waited."""
    receiver = Receiver("trickle")
    hook = Webhook(receiver.url, 1.0)
    hook.start()
    try:
        started = time.monotonic()
        hook.send(b'{"alert": "backlog"}')
        assert wait(lambda: hook.delivered + hook.dropped == 1, 15)
        assert time.monotonic() - started < 10
    finally:
        hook.stop()
        receiver.close()
