"""Audit of the watcher's webhook (broker_bridge/watch/webhook.py) against receivers
that answer oddly: a redirect, an answer that trickles in, a name the resolver never
answers for."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

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


def test_a_resolver_that_does_not_answer_does_not_hold_the_webhook(
        no_retry_delays: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """getaddrinfo takes no timeout: a receiver's name that the resolver never answers
    for held each post for the resolver's own limits, outside the webhook's deadline.
    (The resolver is stood in for: this machine's would answer at once.)"""
    receiver = Receiver("ok")
    port = receiver.server.server_address[1]
    real = socket.getaddrinfo
    lookups: list[str] = []

    def slow_resolver(host: str, *args: Any, **kwargs: Any) -> Any:
        lookups.append(host)
        if host == "hook.example":
            time.sleep(8)   # a resolver that does not answer
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow_resolver)
    hook = Webhook(f"http://hook.example:{port}/hook", 1.0)
    hook.start()
    try:
        started = time.monotonic()
        hook.send(b'{"alert": "backlog"}')
        assert wait(lambda: hook.delivered + hook.dropped == 1, 30)
        assert hook.dropped == 1 and receiver.requests == []
        # four attempts of at most 1 s each, not four of 8 s
        assert time.monotonic() - started < 7, time.monotonic() - started
        assert lookups.count("hook.example") == 4
    finally:
        hook.stop()
        receiver.close()


def test_a_name_that_resolves_is_posted_to(no_retry_delays: None) -> None:
    receiver = Receiver("ok")
    port = receiver.server.server_address[1]
    hook = Webhook(f"http://localhost:{port}/hook", 2.0)
    hook.start()
    try:
        hook.send(b'{"alert": "backlog"}')
        assert wait(lambda: hook.delivered + hook.dropped == 1, 10)
        assert hook.delivered == 1
        assert receiver.requests == [("POST", "/hook", b'{"alert": "backlog"}')]
    finally:
        hook.stop()
        receiver.close()
