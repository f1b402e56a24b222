"""`[http] max_connections`: connections that never finish a request (a slow or hostile
client) cannot grow the platform without bound. Beyond the cap a new connection is closed
at once, with a warning; when one of the held connections goes, the platform serves
again. The key is checked like any other."""

from __future__ import annotations

import json
import logging
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from city_platform.config import DEFAULT_MAX_CONNECTIONS, load
from city_platform.server import PlatformServer
from city_platform.store import Store
from common.configschema import ConfigError

CAP = 3


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PlatformServer]:
    store = Store.open(f"sqlite:///{tmp_path / 'city.db'}")
    platform = PlatformServer("127.0.0.1", 0, store, max_connections=CAP).start()
    try:
        yield platform
    finally:
        platform.shutdown()
        platform.close()
        store.close()


def _slow_client(port: int) -> socket.socket:
    """Connects and sends half a request line, then nothing."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(b"GET /heal")
    return sock


def _closed_at_once(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            return sock.recv(100) == b""
        except ConnectionResetError:
            return True


def _healthz(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
        assert json.loads(answer.read())["ok"] is True
        return int(answer.status)


def test_connections_beyond_the_cap_are_closed_and_the_platform_serves_again(
        server: PlatformServer, caplog: pytest.LogCaptureFixture) -> None:
    port = server.port
    assert _healthz(port) == 200
    slow = [_slow_client(port) for _ in range(CAP)]
    deadline = time.monotonic() + 5
    while server._server.active < CAP and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server._server.active == CAP
    with caplog.at_level(logging.WARNING, logger="hcp.platform.http"):
        assert _closed_at_once(port)
        assert _closed_at_once(port)
    assert caplog.text.count("connections are open ([http] max_connections)") == 1
    slow.pop().close()
    deadline = time.monotonic() + 5
    while server._server.active >= CAP and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _healthz(port) == 200
    for sock in slow:
        sock.close()


def test_max_connections_is_a_checked_key(tmp_path: Path) -> None:
    config = tmp_path / "platform.toml"
    config.write_text("[http]\nmax_connections = 64\n", encoding="utf-8")
    assert load(str(config)).max_connections == 64
    config.write_text("", encoding="utf-8")
    assert load(str(config)).max_connections == DEFAULT_MAX_CONNECTIONS
    for bad in ("0", "-1", "\"many\"", "1.5", "true"):
        config.write_text(f"[http]\nmax_connections = {bad}\n", encoding="utf-8")
        with pytest.raises(ConfigError) as caught:
            load(str(config))
        assert any("[http] max_connections" in p or "max_connections" in p
                   for p in caught.value.problems), caught.value.problems


def _read_all(sock: socket.socket, wait_s: float = 2.0) -> bytes:
    sock.settimeout(wait_s)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return data
        if not chunk:
            return data
        data += chunk


def test_a_get_with_a_body_is_answered_once_and_its_body_is_not_a_request(
        server: PlatformServer) -> None:
    body = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"   # would be a second request
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(body), body))
        answer = _read_all(sock)
    assert answer.count(b"HTTP/1.1 ") == 1, answer
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert b"\r\nConnection: close\r\n" in answer


def test_a_get_without_a_body_keeps_its_connection(server: PlatformServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
        sock.sendall(request + request)
        answer = _read_all(sock, 1.0)
    assert answer.count(b"HTTP/1.1 200 ") == 2, answer
    assert b"Connection: close" not in answer
