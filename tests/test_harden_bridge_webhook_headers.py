"""The watcher's webhook gives each attempt one deadline (`webhook_timeout_s`) for the
whole exchange, headers included: a receiver that trickles its status line and headers
a byte at a time (each read within the timeout) held the webhook thread, and every alert
queued behind it, as long as it liked. Against a real loopback socket server."""

from __future__ import annotations

import socket
import ssl
import threading
import time

import pytest

from broker_bridge.watch import webhook
from broker_bridge.watch.webhook import Webhook
from tests.support.mosquitto import TestCA
from tests.test_audit_watch_webhook import wait

BYTE_EVERY_S = 0.05


class TricklingReceiver:
    """Reads each request, then sends `HTTP/1.1 200 OK` and a header one byte every
    50 ms for up to `trickle_s` seconds (then the end of the headers)."""

    def __init__(self, trickle_s: float, head: bytes = b"HTTP/1.1 200 OK\r\n",
                 tls: ssl.SSLContext | None = None) -> None:
        self.trickle_s = trickle_s
        self.tls = tls
        self.head = head
        self.accepted: list[float] = []
        self.bodies: list[bytes] = []
        self.stopping = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.listener.getsockname()[1]}/hook"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(time.monotonic())
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                if self.tls is not None:
                    conn = self.tls.wrap_socket(conn, server_side=True)
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(4096)
                head, _, body = data.partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(body) < length:
                    body += conn.recv(4096)
                self.bodies.append(body)
                answer = self.head + b"X-Slow: "
                for i in range(len(answer)):
                    conn.sendall(answer[i:i + 1])
                    time.sleep(BYTE_EVERY_S)
                ends = time.monotonic() + self.trickle_s
                while time.monotonic() < ends and not self.stopping.is_set():
                    conn.sendall(b"a")
                    time.sleep(BYTE_EVERY_S)
                conn.sendall(b"\r\nContent-Length: 0\r\n\r\n")
            except OSError:
                pass

    def close(self) -> None:
        self.stopping.set()
        self.listener.close()


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(webhook, "RETRY_DELAYS_S", (0.01, 0.01, 0.01))


ALERT = b'{"alert": "backlog"}'


def post_one(url: str, timeout_s: float) -> tuple[Webhook, float]:
    """One alert through a webhook of its own: the webhook, stopped, and the seconds
    until the alert was delivered or dropped."""
    hook = Webhook(url, timeout_s)
    hook.start()
    started = time.monotonic()
    try:
        hook.send(ALERT)
        assert wait(lambda: hook.delivered + hook.dropped == 1, 20)
        return hook, time.monotonic() - started
    finally:
        hook.stop()


@pytest.mark.parametrize("head", [b"HTTP/1.1 200 OK\r\n", b""], ids=["headers", "status"])
def test_headers_that_trickle_in_cost_one_deadline_per_attempt(head: bytes) -> None:
    receiver = TricklingReceiver(trickle_s=60, head=head)
    try:
        hook, took = post_one(receiver.url, 1.0)
    finally:
        receiver.close()
    # Four attempts (retried as failures), each cut at the 1 s deadline.
    assert hook.delivered == 0 and hook.dropped == 1
    assert len(receiver.accepted) == 1 + len(webhook.RETRY_DELAYS_S)
    assert receiver.bodies[0] == ALERT
    assert took < 4 * 1.0 + 3, took
    gaps = [b - a for a, b in zip(receiver.accepted, receiver.accepted[1:], strict=False)]
    assert all(gap < 1.8 for gap in gaps), gaps


def test_an_answer_within_the_deadline_is_delivered() -> None:
    """Headers that come slowly but in time (about 0.6 s of a 3 s deadline) still count."""
    receiver = TricklingReceiver(trickle_s=0.2)
    try:
        hook, _ = post_one(receiver.url, 3.0)
    finally:
        receiver.close()
    assert hook.delivered == 1 and len(receiver.accepted) == 1


@pytest.mark.parametrize(("trickle_s", "timeout_s", "delivered"), [(0.2, 3.0, 1), (60, 1.0, 0)],
                         ids=["in-time", "trickling"])
def test_over_https_too(test_ca: TestCA, monkeypatch: pytest.MonkeyPatch, trickle_s: float,
                        timeout_s: float, delivered: int) -> None:
    """The deadline's connection keeps urllib's TLS: verified against the system's CAs
    (here the test CA, through SSL_CERT_FILE), in time delivered, trickling cut."""
    monkeypatch.setenv("SSL_CERT_FILE", str(test_ca.ca_file))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*test_ca.issue("webhook"))
    receiver = TricklingReceiver(trickle_s=trickle_s, tls=context)
    try:
        hook, took = post_one(receiver.url, timeout_s)
    finally:
        receiver.close()
    assert hook.delivered == delivered and receiver.bodies[0] == ALERT
    assert took < 4 * timeout_s + 3
