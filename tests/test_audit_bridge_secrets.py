"""Audit: the secrets the bridge reads from files (the platform's bearer token, the
broker password) with content that cannot be used. Each must be a clear, named error
(a refused batch, or a one-line start-up error), never an exception that reaches a
worker's containment: there it made every rating of every batch "unprocessable" (dead
letter, acknowledged) instead of being held at the broker as the docs promise for a
bad token."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker_bridge.bridge import Bridge
from broker_bridge.config import MqttSettings, parse_bridge_config
from broker_bridge.metrics import BridgeMetrics
from broker_bridge.mqtt_link import LinkEvent
from broker_bridge.mqtt_setup import LinkError, configure_security
from broker_bridge.platform_client import PlatformClient, PlatformError
from tests.support.ratings import make_rating
from tests.test_bridge_loop import FakeLink

# Token file contents a bearer token header cannot carry: not UTF-8 (a file saved as
# UTF-16 by a Windows editor), a line break inside, a control character, non-ASCII.
UNUSABLE_TOKENS = [
    "token".encode("utf-16"),
    b"\xff\xfeabc",
    b"first-line\nsecond-line\n",
    b"abc\rdef",
    b"abc\x00def",
    "令牌abc".encode(),
]


class _Refusing(BaseHTTPRequestHandler):
    """A platform that answers 401 to every batch (the token is wrong)."""

    protocol_version = "HTTP/1.1"
    requests = 0

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        type(self).requests += 1
        body = b'{"error": "bad token"}'
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def refusing_platform() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api/ratings"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("content", UNUSABLE_TOKENS)
def test_an_unusable_token_file_is_a_named_error_at_start(tmp_path: Path,
                                                          content: bytes) -> None:
    token = tmp_path / "token"
    token.write_bytes(content)
    with pytest.raises(PlatformError) as caught:
        PlatformClient("http://127.0.0.1:9/api", 5.0, str(token))
    assert str(token) in caught.value.detail and not caught.value.retryable


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=40) | st.text(max_size=40).map(
    lambda t: t.encode("utf-8", "surrogatepass")))
def test_any_token_file_is_used_or_refused_by_name(content: bytes) -> None:
    """Whatever the file holds: a client whose request header can carry it, or a
    PlatformError naming the file."""
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        token = Path(d) / "token"
        token.write_bytes(content)
        try:
            client = PlatformClient("http://127.0.0.1:9/api", 5.0, str(token))
        except PlatformError as e:
            assert str(token) in e.detail
            return
        import http.client
        request = http.client.HTTPConnection("127.0.0.1", 9)
        request.putrequest("POST", "/api")
        if client._token:
            request.putheader("Authorization", f"Bearer {client._token}")  # must not raise


def _bridge(url: str, token: Path) -> tuple[Bridge, FakeLink, threading.Thread]:
    config = parse_bridge_config(Path("test.toml"), {
        "mqtt": {"client_id": "audit-token"},
        "platform": {"url": url, "token_file": str(token), "batch_wait_ms": 0,
                     "concurrency": 1, "client_error_retry_s": 0.1, "retry_cap_s": 1}})
    links: list[FakeLink] = []

    def factory(settings: MqttSettings, subscriptions: Sequence[tuple[str, int]],
                sink: Callable[[LinkEvent], None], holds: Callable[[str], bool]) -> FakeLink:
        links.append(FakeLink(sink))
        return links[0]

    bridge = Bridge(config, BridgeMetrics(), link_factory=factory)
    thread = threading.Thread(target=bridge.run, args=(None, 0.05), daemon=True)
    thread.start()
    assert links[0].started.wait(5)
    return bridge, links[0], thread


@pytest.mark.parametrize("content", UNUSABLE_TOKENS)
def test_a_token_rotated_to_unusable_content_holds_ratings_and_never_sets_them_aside(
        tmp_path: Path, refusing_platform: str, content: bytes) -> None:
    """The platform says 401, the bridge reads the token file again (rotation) and finds
    content it cannot send: that is still a refused batch (held at the broker, retried,
    an alert), not an exception that sets every rating aside as unprocessable."""
    token = tmp_path / "token"
    token.write_text("good-token\n")
    bridge, link, thread = _bridge(refusing_platform, token)
    try:
        token.write_bytes(content)
        record = make_rating("dev-1")
        link.deliver(1, 7, record)
        deadline = time.monotonic() + 3
        while _Refusing.requests < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)   # two failures alone would have set it aside by now
        with link.lock:
            letters = [body for topic, body in link.published if topic == "hcp/v1/deadletter"]
            alerts = [body for topic, body in link.published if topic == "hcp/v1/alerts"]
        assert letters == [], letters
        assert link.acks == [], "acknowledged a rating the platform never answered"
        assert alerts and alerts[0]["alert"] == "platform_refuses_batches"
        assert bridge.metrics.registry.get_sample_value(
            "hcp_bridge_internal_errors_total", {"where": "worker"}) == 0
        assert bridge.healthy
    finally:
        bridge.request_stop()
        thread.join(5)


@pytest.mark.parametrize("content", [b"\xff\xfepw", "pw".encode("utf-16")])
def test_a_password_file_that_is_not_utf8_is_a_link_error(tmp_path: Path,
                                                         content: bytes) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    password = tmp_path / "password"
    password.write_bytes(content)
    config = parse_bridge_config(Path("test.toml"), {
        "mqtt": {"client_id": "audit-pw", "username": "u", "password_file": str(password)},
        "platform": {"url": "http://127.0.0.1:9/api"}})
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="x")
    with pytest.raises(LinkError) as caught:
        configure_security(client, config.mqtt)
    assert str(password) in str(caught.value)


@pytest.mark.parametrize("command", ["run", "leave", "expired"])
def test_cli_with_an_unusable_secret_says_so_in_one_line(tmp_path: Path, command: str) -> None:
    bad = tmp_path / "secret"
    bad.write_bytes(b"\xff\xfe")
    config = tmp_path / "bridge.toml"
    platform: dict[str, Any] = {"url": "http://127.0.0.1:9/api", "token_file": str(bad)}
    if command == "expired":
        platform["profile"] = "gov"
    lines = ['[mqtt]', 'client_id = "audit-cli"', 'username = "u"',
             f'password_file = {json.dumps(str(bad))}', '[platform]']
    lines += [f"{k} = {json.dumps(v)}" for k, v in platform.items()]
    lines += ['[http]', 'listen = "127.0.0.1:19871"']
    config.write_text("\n".join(lines) + "\n")
    done = subprocess.run([sys.executable, "-m", "broker_bridge", command, "--config",
                           str(config)], capture_output=True, text=True, timeout=30,
                          cwd=Path(__file__).resolve().parent.parent)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode != 0
    assert str(bad) in done.stderr
