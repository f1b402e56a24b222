"""Audit of the platform's HTTP framing on odd but possible requests: each request gets
exactly one answer that names what was wrong, and the connection never reads a body's
bytes as the next request."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from city_platform.server import PlatformServer
from city_platform.store import Store
from tests.support.ratings import make_rating


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PlatformServer]:
    store = Store.open(f"sqlite:///{tmp_path / 'ratings.db'}")
    platform = PlatformServer("127.0.0.1", 0, store).start()
    yield platform
    platform.shutdown()
    platform.close()
    store.close()


def exchange(server: PlatformServer, data: bytes, wait_s: float = 1.0) -> bytes:
    """Send raw bytes; everything the server answers until it closes or goes quiet."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=wait_s) as conn:
        conn.sendall(data)
        out = b""
        try:
            while chunk := conn.recv(65536):
                out += chunk
        except TimeoutError:
            pass
    return out


def ratings_request(headers: str, body: bytes) -> bytes:
    return (f"POST /api/ratings HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode() + body)


def body() -> bytes:
    return json.dumps({"ratings": [make_rating()]}).encode()


@pytest.mark.parametrize("content_type", ["Application/JSON", "APPLICATION/JSON; charset=UTF-8",
                                          "application/json ; charset=utf-8"])
def test_the_media_type_is_case_insensitive(server: PlatformServer, content_type: str) -> None:
    """Found by the audit: a media type is case-insensitive (RFC 9110 8.3.1), but
    "Application/JSON" was refused with 415: a valid batch never stored."""
    data = body()
    answer = exchange(server, ratings_request(
        f"Content-Type: {content_type}\r\nContent-Length: {len(data)}\r\n", data))
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]


@pytest.mark.parametrize("content_type", ["application/jsonp", "application/json-seq",
                                          "text/plain", ""])
def test_another_media_type_is_a_415(server: PlatformServer, content_type: str) -> None:
    data = body()
    answer = exchange(server, ratings_request(
        f"Content-Type: {content_type}\r\nContent-Length: {len(data)}\r\n", data))
    assert answer.startswith(b"HTTP/1.1 415"), answer[:200]


def test_a_chunked_body_is_refused_once_with_the_reason(server: PlatformServer) -> None:
    """Found by the audit: a chunked body (no Content-Length) was read as empty: 400
    "body is not JSON", and then its chunks were read as the next request on the same
    connection, which got a second, HTML answer."""
    data = body()
    chunked = f"{len(data):x}\r\n".encode() + data + b"\r\n0\r\n\r\n"
    answer = exchange(server, ratings_request(
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n", chunked))
    assert answer.startswith(b"HTTP/1.1 411"), answer[:200]
    assert answer.count(b"HTTP/1.") == 1, answer
    assert b"Content-Length" in answer
    assert server.store.counts()["total"] == 0


@pytest.mark.parametrize("length", ["1_0", "+10", "0x10", "10, 10", "1e1", "\u00b9"])
def test_a_content_length_that_is_not_digits_is_refused(server: PlatformServer,
                                                       length: str) -> None:
    """Found by the audit: int() read "1_0" and "+10" as 10: a length no client means,
    which a proxy in front would read otherwise (a request smuggled past it)."""
    answer = exchange(server, ratings_request(
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n",
        b'{"ratings": []}'))
    assert answer.split(b" ", 2)[1] in (b"400", b"413"), answer[:200]
    assert answer.count(b"HTTP/1.") == 1, answer


def test_two_different_content_lengths_are_refused(server: PlatformServer) -> None:
    data = body()
    answer = exchange(server, ratings_request(
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
        "Content-Length: 5\r\n", data))
    assert answer.split(b" ", 2)[1] in (b"400", b"413"), answer[:200]
    assert server.store.counts()["total"] == 0


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(st.characters(min_codepoint=0x20, max_codepoint=0xff), max_size=40),
       st.text(st.characters(min_codepoint=0x20, max_codepoint=0xff), max_size=12))
def test_any_content_type_and_length_get_one_answer_and_no_5xx(
        server: PlatformServer, content_type: str, length: str) -> None:
    data = body()
    answer = exchange(server, ratings_request(
        f"Content-Type: {content_type}\r\nContent-Length: {length.strip() or '0'}\r\n",
        data[:20]), wait_s=0.3)
    if answer:
        assert answer.startswith(b"HTTP/1.1 ") and not answer.startswith(b"HTTP/1.1 5")
