"""Audit of the platform's follow-up and query API on hostile input: every request is
answered, a bad parameter or body is a 4xx naming it (never a 503 "store unavailable"
that sends a client into retries, never a dropped connection), and a follow-up is never
changed past the rules of city_platform.followups (no personal data in a note, a closed
follow-up stays closed)."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from city_platform.server import PlatformServer
from city_platform.store import Store
from tests.support import postgres as pg
from tests.support.ratings import make_rating

# fixtures
postgres_server, postgres_url, store_url = (
    pg.postgres_server, pg.postgres_url, pg.store_url)


@pytest.fixture
def server(store_url: str) -> Iterator[PlatformServer]:
    store = Store.open(store_url)
    platform = PlatformServer("127.0.0.1", 0, store).start()
    yield platform
    platform.shutdown()
    platform.close()
    store.close()


def request(server: PlatformServer, method: str, path: str, body: bytes | None = None
            ) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(method, path, body=body,
                     headers={"Content-Type": "application/json"} if body else {})
        response = conn.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else None
    finally:
        conn.close()


def bad_rating(server: PlatformServer) -> str:
    rating = make_rating(level=1)
    server.submit([rating])
    rating_id: str = rating["rating_id"]
    return rating_id


# Moves that skip the rules ----------------------------------------------------------------

def test_setting_complex_does_not_slip_a_phone_number_into_the_note(
        server: PlatformServer) -> None:
    """Found by the audit: with "complex" given and the state unchanged, the move's
    checks were skipped: a note with a mobile number (personal data §11 forbids), or
    over 500 characters, or an empty "by", was stored."""
    rid = bad_rating(server)
    for body in ({"state": "open", "by": "张三", "complex": True,
                  "note": "市民电话 13812345678"},
                 {"state": "open", "by": "", "complex": True},
                 {"state": "open", "by": "张三", "complex": True, "note": "长" * 501}):
        status, answer = request(server, "POST", f"/api/followups/{rid}",
                                 json.dumps(body).encode())
        assert status == 409, (body, answer)
    stored = server.store.followup(rid)
    assert stored is not None and stored.note is None and not stored.complex


def test_a_closed_follow_up_stays_as_it_was_closed(server: PlatformServer) -> None:
    """Found by the audit: a closed follow-up took a new note, "by" and complex flag
    when "complex" was given with state "closed"."""
    rid = bad_rating(server)
    status, _ = request(server, "POST", f"/api/followups/{rid}", json.dumps(
        {"state": "closed", "by": "李四", "note": "已当面致歉并整改"}).encode())
    assert status == 200
    status, answer = request(server, "POST", f"/api/followups/{rid}", json.dumps(
        {"state": "closed", "by": "王五", "note": "改写", "complex": True}).encode())
    assert status == 409 and "closed" in answer["error"]
    stored = server.store.followup(rid)
    assert stored is not None
    assert (stored.note, stored.updated_by, stored.complex) == ("已当面致歉并整改", "李四", False)


def test_complex_alone_still_marks_an_open_case_complex(server: PlatformServer) -> None:
    rid = bad_rating(server)
    status, answer = request(server, "POST", f"/api/followups/{rid}", json.dumps(
        {"state": "open", "by": "张三", "complex": True}).encode())
    assert status == 200 and answer["complex"] is True and answer["state"] == "open"


# Text that no store keeps ------------------------------------------------------------------

@pytest.mark.parametrize("field", ["note", "by"])
@pytest.mark.parametrize("text", ["\\u0000", "\\ud800"])
def test_a_note_or_by_that_is_not_text_is_refused(server: PlatformServer, field: str,
                                                  text: str) -> None:
    """Found by the audit: a lone surrogate in note or by made the store's UPDATE raise
    UnicodeEncodeError: the connection closed without an answer; a NUL was a 503 "store
    unavailable" on PostgreSQL, which a client retries."""
    rid = bad_rating(server)
    body = {"state": "contacted", "by": "张三", "note": "已回访"}
    raw = json.dumps(body, ensure_ascii=False).replace(
        f'"{body[field]}"', f'"x{text}y"').encode()
    status, answer = request(server, "POST", f"/api/followups/{rid}", raw)
    assert status in (400, 409), answer
    assert field in answer["error"]
    stored = server.store.followup(rid)
    assert stored is not None and stored.state == "open"


@pytest.mark.parametrize("path", [
    "/api/followups?hall=a%00b", "/api/followups?state=open%00",
    "/api/rating_ids?device=a%00", "/api/hall?hall=%00"])
def test_a_nul_in_a_query_parameter_is_a_400_naming_it(server: PlatformServer,
                                                       path: str) -> None:
    """Found by the audit: on PostgreSQL (text cannot hold NUL) these were 503 "store
    unavailable" with Retry-After: a bad request told to come again."""
    from city_platform.hall import Hall

    server.hall = server.hall or Hall(server.store, _config())
    status, answer = request(server, "GET", path)
    assert status == 400, answer
    name = path.split("?")[1].split("=")[0]
    assert name in answer["error"]


def test_a_nul_in_the_followup_path_is_a_client_error(server: PlatformServer) -> None:
    status, answer = request(server, "POST", "/api/followups/ab%00cd", json.dumps(
        {"state": "contacted", "by": "张三"}).encode())
    assert status in (400, 404), answer


def test_an_unknown_state_filter_is_a_400_not_an_empty_list(server: PlatformServer) -> None:
    """Found by the audit: /api/followups?state=opne answered 200 with no follow-ups,
    which reads as "nothing to do"."""
    bad_rating(server)
    status, answer = request(server, "GET", "/api/followups?state=opne")
    assert status == 400 and "state" in answer["error"]
    status, answer = request(server, "GET", "/api/followups?state=open")
    assert status == 200 and len(answer["followups"]) == 1


def _config() -> Any:
    from city_platform.config import PlatformConfig

    return PlatformConfig()


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["/api/followups?state=", "/api/followups?hall=",
                        "/api/rating_ids?device=", "/api/followups/"]),
       st.text(st.characters(exclude_categories=[]) | st.sampled_from("\x00\ud800'\";%"),
               max_size=30))
def test_any_parameter_is_answered_without_a_5xx(tmp_path: Path, endpoint: str,
                                                 value: str) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'ratings.db'}")
    server = PlatformServer("127.0.0.1", 0, store).start()
    try:
        path = endpoint + quote(value.encode("utf-8", "surrogatepass"), safe="")
        if endpoint.endswith("/"):
            status, _ = request(server, "POST", path, b'{"state": "closed", "by": "x"}')
        else:
            status, _ = request(server, "GET", path)
        assert status < 500
    finally:
        server.shutdown()
        server.close()
        store.close()
