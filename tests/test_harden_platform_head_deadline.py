"""`[http] head_timeout_s`: a request's line and headers must all arrive within the
bound, however the client spaces its bytes, and its body within the bound and a second
per BODY_BYTES_PER_S bytes. A client that trickles one byte at a time
(each within the per-read timeout) would otherwise hold one of the `max_connections`
slots for ever. Idle time between kept-alive requests is not part of the bound."""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from city_platform.config import DEFAULT_HEAD_TIMEOUT_S, load
from city_platform.server import BODY_BYTES_PER_S, PlatformServer
from city_platform.store import Store
from common.configschema import ConfigError
from tests.support.mosquitto import TestCA
from tests.support.ratings import encode, make_rating

DEADLINE_S = 1.0
HEAD = b"GET /healthz HTTP/1.1\r\nHost: x\r\nUser-Agent: trickle\r\n\r\n"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(f"sqlite:///{tmp_path / 'city.db'}")
    yield s
    s.close()


@pytest.fixture
def server(store: Store) -> Iterator[PlatformServer]:
    platform = PlatformServer("127.0.0.1", 0, store, max_connections=8,
                              head_timeout_s=DEADLINE_S).start()
    try:
        yield platform
    finally:
        platform.shutdown()
        platform.close()


def _closed(sock: socket.socket) -> bytes | None:
    """What the server sent before closing, or None while the connection is open."""
    sock.setblocking(False)
    try:
        data = sock.recv(65536)
    except BlockingIOError:
        return None
    except ConnectionResetError:
        return b""
    finally:
        sock.setblocking(True)
    if not data:
        return b""
    sock.settimeout(2)
    while True:   # the rest of an answer, up to the close
        try:
            more = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            return data
        if not more:
            return data
        data += more


def _answer(sock: socket.socket) -> bytes:
    """One whole answer (status line, headers and its Content-Length of body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))
    while len(body) < length:
        body += sock.recv(65536)
    return data


def _trickle(sock: socket.socket, data: bytes, every_s: float, for_s: float) -> bytes | None:
    """Send `data` a byte every `every_s` (the whole head would take longer than
    `for_s`); return what the server answered at its close, or None if it never did."""
    end = time.monotonic() + for_s
    for byte in data:
        answer = _closed(sock)
        if answer is not None:
            return answer
        if time.monotonic() > end:
            return None
        try:
            sock.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            return b""
        time.sleep(every_s)
    raise AssertionError("the whole head was sent: trickle slower")


def _wait_idle(server: PlatformServer, timeout_s: float = 5.0) -> int:
    deadline = time.monotonic() + timeout_s
    while server._server.active and time.monotonic() < deadline:
        time.sleep(0.02)
    return server._server.active


def test_a_trickled_head_is_closed_at_the_deadline_with_408_and_a_warning(
        server: PlatformServer, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="hcp.platform.http"), \
            socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        started = time.monotonic()
        answer = _trickle(sock, HEAD, every_s=0.1, for_s=4 * DEADLINE_S)
        took = time.monotonic() - started
        peer = f"127.0.0.1:{sock.getsockname()[1]}"
    assert answer is not None, "a trickling client held its connection past the deadline"
    assert DEADLINE_S * 0.9 <= took <= DEADLINE_S + 1.5, took
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert _wait_idle(server) == 0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, caplog.text
    assert peer in warnings[0].getMessage()
    assert "[http] head_timeout_s" in warnings[0].getMessage()


def test_trickled_headers_after_a_whole_request_line_are_refused_not_served(
        server: PlatformServer) -> None:
    """The request line arrives at once; the headers never finish: not served with the
    headers that did arrive, but 408."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"POST /api/ratings HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 100\r\n")
        answer = _trickle(sock, b"X-Pad: " + b"a" * 100, every_s=0.1, for_s=4 * DEADLINE_S)
    assert answer is not None and answer.startswith(b"HTTP/1.1 408 "), answer
    assert server.store.counts()["total"] == 0


def test_the_warning_comes_at_most_once_a_minute_and_counts_the_rest(
        server: PlatformServer, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="hcp.platform.http"):
        socks = [socket.create_connection(("127.0.0.1", server.port), timeout=5)
                 for _ in range(3)]
        for sock in socks:
            sock.sendall(b"GET /he")
        for sock in socks:
            sock.settimeout(DEADLINE_S + 3)
            assert sock.recv(100).startswith(b"HTTP/1.1 408 ")
            sock.close()
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1, caplog.text


def test_a_new_connection_that_sends_nothing_is_closed_at_the_deadline(
        server: PlatformServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        started = time.monotonic()
        sock.settimeout(DEADLINE_S + 3)
        try:
            data = sock.recv(100)
        except ConnectionResetError:
            data = b""
        took = time.monotonic() - started
    assert data == b"" or data.startswith(b"HTTP/1.1 408 "), data
    assert took <= DEADLINE_S + 1.5, took
    assert _wait_idle(server) == 0


def test_idle_time_between_kept_alive_requests_is_not_bounded_by_it(
        server: PlatformServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(HEAD)
        first = _answer(sock)
        assert first.startswith(b"HTTP/1.1 200 "), first
        time.sleep(DEADLINE_S * 2.5)   # idle, kept alive (the idle limit is 60 s)
        assert _closed(sock) is None
        sock.sendall(HEAD)
        second = _answer(sock)
    assert second.startswith(b"HTTP/1.1 200 "), second


def test_a_head_sent_in_pieces_within_the_deadline_is_served(server: PlatformServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        for piece in (HEAD[:10], HEAD[10:30], HEAD[30:]):
            sock.sendall(piece)
            time.sleep(DEADLINE_S / 5)
        answer = _answer(sock)
    assert answer.startswith(b"HTTP/1.1 200 "), answer


def test_the_deadline_of_a_second_request_counts_from_its_first_byte(
        server: PlatformServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(HEAD)
        assert _answer(sock).startswith(b"HTTP/1.1 200 ")
        time.sleep(DEADLINE_S * 1.5)
        answer = _trickle(sock, HEAD, every_s=0.1, for_s=4 * DEADLINE_S)
    assert answer is not None and answer.startswith(b"HTTP/1.1 408 "), answer


def test_a_trickled_tls_handshake_is_closed_at_the_deadline(
        store: Store, test_ca: TestCA) -> None:
    cert, key = test_ca.issue("platform")
    platform = PlatformServer("127.0.0.1", 0, store, tls_cert=cert, tls_key=key,
                              head_timeout_s=DEADLINE_S).start()
    try:
        client = ssl.create_default_context(cafile=str(test_ca.ca_file))
        outgoing = ssl.MemoryBIO()
        tls = client.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname="127.0.0.1")
        with pytest.raises(ssl.SSLWantReadError):
            tls.do_handshake()
        hello = outgoing.read()
        with socket.create_connection(("127.0.0.1", platform.port), timeout=5) as sock:
            started = time.monotonic()
            answer = _trickle(sock, hello, every_s=0.1, for_s=4 * DEADLINE_S)
            took = time.monotonic() - started
        # Closed, perhaps with a TLS alert record (content type 21) first.
        assert answer is not None and answer[:1] in (b"", b"\x15"), answer
        assert took <= DEADLINE_S + 1.5, took
        assert _wait_idle(platform) == 0
    finally:
        platform.shutdown()
        platform.close()


def test_one_reaper_thread_whatever_the_number_of_requests(server: PlatformServer) -> None:
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(HEAD)
            assert _answer(sock).startswith(b"HTTP/1.1 200 ")
    assert _wait_idle(server) == 0
    names = [t.name for t in threading.enumerate()]
    assert names.count("platform-http-heads") == 1, names
    assert not [n for n in names if n.startswith("Thread-") and "Timer" in n], names


def _config_problems(tmp_path: Path, text: str) -> list[str]:
    config = tmp_path / "platform.toml"
    config.write_text(text, encoding="utf-8")
    try:
        assert load(str(config)).head_timeout_s == (
            float(text.partition("= ")[2]) if text else DEFAULT_HEAD_TIMEOUT_S)
    except ConfigError as e:
        return list(e.problems)
    return []


def test_head_timeout_s_defaults_and_refuses_what_is_not_a_number(tmp_path: Path) -> None:
    assert 10 <= DEFAULT_HEAD_TIMEOUT_S <= 15
    assert _config_problems(tmp_path, "") == []
    for bad in ("\"soon\"", "true", "nan", "inf"):
        problems = _config_problems(tmp_path, f"[http]\nhead_timeout_s = {bad}\n")
        assert any("[http] head_timeout_s" in p for p in problems), (bad, problems)


@given(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False))
def test_head_timeout_s_is_taken_within_its_range_and_refused_outside(
        tmp_path_factory: pytest.TempPathFactory, seconds: float) -> None:
    problems = _config_problems(tmp_path_factory.mktemp("config"),
                                f"[http]\nhead_timeout_s = {seconds!r}\n")
    if 0.1 <= seconds <= 600:
        assert problems == []
    else:
        assert len(problems) == 1 and "[http] head_timeout_s" in problems[0], problems


def test_hcp_platform_run_takes_the_key_from_its_config(tmp_path: Path) -> None:
    from city_platform.run import build
    from tests.support.mosquitto import free_port

    config = tmp_path / "platform.toml"
    config.write_text(f'[store]\nurl = "sqlite:///{tmp_path / "run.db"}"\n'
                      f'[http]\nlisten = "127.0.0.1:{free_port()}"\n'
                      f"head_timeout_s = {DEADLINE_S}\n", encoding="utf-8")
    platform = build(load(str(config)))
    platform.server.start()
    try:
        with socket.create_connection(("127.0.0.1", platform.server.port), timeout=5) as sock:
            answer = _trickle(sock, HEAD, every_s=0.1, for_s=4 * DEADLINE_S)
        assert answer is not None and answer.startswith(b"HTTP/1.1 408 "), answer
    finally:
        platform.server.shutdown()
        platform.close()


def _post_head(body: bytes) -> bytes:
    return (b"POST /api/ratings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body))


def _batch() -> bytes:
    return b'{"ratings":[' + encode(make_rating()) + b"]}"


def test_a_trickled_body_is_closed_at_its_deadline_with_408_and_nothing_stored(
        server: PlatformServer, caplog: pytest.LogCaptureFixture) -> None:
    """The head at once, the body a byte at a time: due within the head's bound and a
    second per BODY_BYTES_PER_S bytes, then 408 and closed."""
    body = _batch()
    bound = DEADLINE_S + len(body) / BODY_BYTES_PER_S
    with caplog.at_level(logging.WARNING, logger="hcp.platform.http"), \
            socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(_post_head(body))
        started = time.monotonic()
        answer = _trickle(sock, body, every_s=0.1, for_s=4 * bound)
        took = time.monotonic() - started
    assert answer is not None, "a trickling body held its connection past the deadline"
    assert bound * 0.9 <= took <= bound + 1.5, (took, bound)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"its body of %d bytes" % len(body) in answer
    assert server.store.counts()["total"] == 0
    assert _wait_idle(server) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and f"its body of {len(body)} bytes" in warnings[0], warnings


def test_a_body_sent_in_pieces_within_its_deadline_is_stored(server: PlatformServer) -> None:
    body = _batch()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(_post_head(body))
        for piece in (body[:10], body[10:200], body[200:]):
            time.sleep(DEADLINE_S / 5)
            sock.sendall(piece)
        answer = _answer(sock)
        assert answer.startswith(b"HTTP/1.1 200 "), answer
        # and the connection is kept alive: the next request is served too
        sock.sendall(HEAD)
        assert _answer(sock).startswith(b"HTTP/1.1 200 ")
    assert server.store.counts()["total"] == 1
