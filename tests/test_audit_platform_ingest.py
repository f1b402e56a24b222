"""Audit of the platform's ingest on hostile input: a record the store cannot keep (a
NUL character, which PostgreSQL refuses; a lone surrogate, which is not UTF-8; a gov
time outside what a datetime holds) is one `rejected` record, never a batch that fails
forever (a 5xx the bridge retries without end), and every answer is one the client can
read."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker_bridge.profile import GovProfile
from city_platform.records import Incoming, Rejected, read_record
from city_platform.server import PlatformServer
from city_platform.store import Store
from tests.support import postgres as pg
from tests.support.ratings import make_rating

# fixtures
postgres_server, postgres_url, store_url, store = (
    pg.postgres_server, pg.postgres_url, pg.store_url, pg.store)

TZ = ZoneInfo("Asia/Shanghai")


def gov(**overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = GovProfile().rating(make_rating(level=2))
    record.update(overrides)
    return record


def statuses(results: list[dict[str, Any]]) -> list[str]:
    return [r["status"] for r in results]


def post(port: int, body: bytes) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/api/ratings", body=body,
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# A lone surrogate ------------------------------------------------------------------------

def test_a_rejected_record_whose_id_is_not_text_still_gets_an_answer(tmp_path: Path) -> None:
    """Found by the audit: the rejected record's rating_id was echoed as it came; a lone
    surrogate cannot be encoded as UTF-8, so the answer failed after the batch was
    committed: the connection closed without one, and the bridge re-sent the batch
    forever."""
    store = Store.open(f"sqlite:///{tmp_path / 'ratings.db'}")
    server = PlatformServer("127.0.0.1", 0, store).start()
    try:
        good = make_rating()
        body = ('{"ratings": [' + json.dumps(good) + ', {"rating_id": "\\ud800x", '
                '"level": 9}]}').encode()
        status, answer = post(server.port, body)
        assert status == 200
        results = json.loads(answer)["results"]
        assert statuses(results) == ["accepted", "rejected"]
        assert results[1]["rating_id"] is None and results[1]["error"]
    finally:
        server.shutdown()
        server.close()
        store.close()


@pytest.mark.parametrize("field", ["hallCode", "evalDetail", "handleUserName", "extra"])
def test_a_gov_record_with_a_lone_surrogate_is_rejected_not_the_batch(
        store: Store, field: str) -> None:
    """Found by the audit: check_gov_record looks at a few fields only; a lone surrogate
    anywhere else made the store's insert raise UnicodeEncodeError: a 500 for the whole
    batch, every time it came again."""
    good = make_rating()
    results = store.submit([good, gov(**{field: "H\udc80"})])
    assert statuses(results) == ["accepted", "rejected"]
    assert field in results[1]["error"] or "surrogate" in results[1]["error"]
    assert store.rating_ids() == [good["rating_id"]]


# NUL ------------------------------------------------------------------------------------

def _with_nul(where: str) -> dict[str, Any]:
    if where == "hall_id":
        return make_rating(hall_id="HG\x0001")
    if where == "case_id":
        return make_rating(case={"case_id": "C\x00", "service_code": "1"})
    if where == "staff_name":
        return make_rating(staff={"staff_id": "S1", "staff_name": "王\x00芳"})
    if where == "gov hallCode":
        return gov(hallCode="HG\x0001")
    return gov(extra="\x00")


@pytest.mark.parametrize("where", ["hall_id", "case_id", "staff_name", "gov hallCode",
                                   "gov extra"])
def test_a_nul_character_rejects_its_record_not_the_batch(store: Store, where: str) -> None:
    """Found by the audit: PostgreSQL text cannot hold NUL; a record with one made the
    whole batch fail (StoreError, 503): the bridge retried it forever and the good
    ratings with it were never stored. (A staff_name with NUL stored in SQLite would
    break the dashboard's PostgreSQL query the same way.)"""
    good = make_rating()
    results = store.submit([good, _with_nul(where)])
    assert statuses(results) == ["accepted", "rejected"]
    assert "NUL" in results[1]["error"]
    assert store.rating_ids() == [good["rating_id"]]


def test_a_backslash_u0000_as_text_is_not_a_nul() -> None:
    """The literal text \\u0000 (a backslash, then u0000) is harmless text."""
    record = make_rating(staff={"staff_id": "S1", "staff_name": "a\\u0000b"})
    assert isinstance(read_record(record, TZ), Incoming)


# Gov times --------------------------------------------------------------------------------

@settings(max_examples=150, deadline=None)
@given(st.datetimes(), st.sampled_from(["Asia/Shanghai", "America/Los_Angeles", "UTC",
                                        "Pacific/Kiritimati"]))
def test_a_gov_record_of_any_time_is_read_or_rejected(moment: Any, zone: str) -> None:
    """Found by the audit: an assessTime in year 1 (or 9999 west of UTC) overflowed
    when converted to UTC: OverflowError out of read_record, a 500 for the batch."""
    record = gov(assessTime=moment.strftime("%Y-%m-%d %H:%M:%S"))
    result = read_record(record, ZoneInfo(zone))
    assert isinstance(result, Incoming | Rejected)
    if isinstance(result, Rejected):
        assert "assessTime" in result.error
    else:
        assert 1999 <= result.local_day.year <= 2100


def test_a_gov_record_from_year_one_is_rejected_not_the_batch(store: Store) -> None:
    good = make_rating()
    results = store.submit([good, gov(assessTime="0001-01-01 00:00:00")])
    assert statuses(results) == ["accepted", "rejected"]
    assert "assessTime" in results[1]["error"]


# Gov fields that are not values ------------------------------------------------------------

@pytest.mark.parametrize("field", ["areaCode", "hallCode", "windowCode", "evalDetail",
                                   "projectNo", "handleUserId"])
@pytest.mark.parametrize("value", [["HG01"], {"a": 1}, "x" * 65])
def test_a_gov_field_that_is_not_a_short_value_is_rejected(field: str, value: Any) -> None:
    """Found by the audit: a list or an object in hallCode (and the other columns) was
    stored as its Python repr ("['HG01']"): a hall the report and the dashboard then
    showed, from a record that should have been refused."""
    result = read_record(gov(**{field: value}), TZ)
    assert isinstance(result, Rejected), result
    assert field in result.error


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["areaCode", "hallCode", "windowCode", "evalDetail", "projectNo",
                        "handleUserId", "handleUserName", "taskName", "other"]),
       st.text(st.characters(exclude_categories=[]) | st.sampled_from("\x00\ud800\udfff"),
               max_size=70)
       | st.integers() | st.none() | st.booleans())
def test_any_gov_value_is_stored_or_rejected(tmp_path: Path, field: str, value: Any) -> None:
    """Whatever text (surrogates and NUL included) sits in a gov field, the batch's good
    rating is stored and the record is answered."""
    store = Store.open(f"sqlite:///{tmp_path / 'ratings.db'}")
    try:
        good = make_rating()
        results = store.submit([good, gov(**{field: value})])
        assert results[0]["status"] == "accepted"
        assert results[1]["status"] in ("accepted", "rejected")
        json.dumps(results, ensure_ascii=False).encode("utf-8")
    finally:
        store.close()


# NaN and Infinity ---------------------------------------------------------------------------

@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_gov_record_with_nan_is_rejected_and_the_dashboard_still_reads(
        store: Store, value: float) -> None:
    """Found by the audit: the server's json.loads takes NaN and Infinity (not JSON); a
    gov record with one in any field was stored as the text `NaN`, which no JSON reader
    takes: on PostgreSQL the dashboard's query (`record::json`) failed for the rest of
    the day (503 on /api/hall), and the province would get it as it is."""
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    good = make_rating(rated_at=now.isoformat())
    record = GovProfile().rating(make_rating(level=4, rated_at=now.isoformat()))
    record["pf"] = value
    results = store.submit([good, record])
    assert statuses(results) == ["accepted", "rejected"]
    assert "NaN" in results[1]["error"] or "Infinity" in results[1]["error"]
    assert store.latest_staff(now.astimezone(store.tz).date()) == {good["device_id"]: "王芳"}


def test_nan_over_http_is_answered_per_record(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'ratings.db'}")
    server = PlatformServer("127.0.0.1", 0, store).start()
    try:
        good, record = make_rating(), gov()
        body = json.dumps({"ratings": [good, {**record, "pf": float("nan")}]}).encode()
        assert b"NaN" in body
        status, answer = post(server.port, body)
        assert status == 200
        assert statuses(json.loads(answer)["results"]) == ["accepted", "rejected"]
    finally:
        server.shutdown()
        server.close()
        store.close()


def test_a_gov_record_nested_as_deep_as_the_body_parses_is_answered(tmp_path: Path) -> None:
    """Found by the audit: an extra field nested just under what json.loads takes was
    too deep for the encoder a few frames further down: RecursionError, a 500 for the
    whole batch, every time the bridge sent it again."""
    store = Store.open(f"sqlite:///{tmp_path / 'ratings.db'}")
    server = PlatformServer("127.0.0.1", 0, store).start()
    try:
        good, head = json.dumps(make_rating()), json.dumps(gov())[:-1]
        for depth in range(940, 1000, 3):
            body = ('{"ratings": [' + good + ", " + head + ', "x": ' + "[" * depth + "1"
                    + "]" * depth + "}]}").encode()
            status, answer = post(server.port, body)
            assert status in (200, 400), (depth, status, answer)
            if status == 200:
                assert statuses(json.loads(answer)["results"])[0] in ("accepted", "duplicate")
    finally:
        server.shutdown()
        server.close()
        store.close()


# Any record, over HTTP, on both stores -------------------------------------------------

_ANY_TEXT = st.text(st.characters(exclude_categories=[]) | st.sampled_from("\x00\ud800\udfff"),
                    max_size=20)
_ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _ANY_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_ANY_TEXT, inner, max_size=3),
    max_leaves=10)
_FIELDS = ["rating_id", "device_id", "region_code", "hall_id", "window_id", "level",
           "reason", "trigger", "input", "case", "staff", "rated_at", "seq", "assessId",
           "assessType", "satisfaction", "assessTime", "deviceCode", "hallCode", "windowCode",
           "areaCode", "evalDetail", "projectNo", "handleUserId", "handleUserName", "extra"]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory,
            postgres_server: pg.PostgresServer) -> Iterator[list[PlatformServer]]:
    stores = [Store.open(f"sqlite:///{tmp_path_factory.mktemp('any') / 'ratings.db'}"),
              Store.open(postgres_server.create_database())]
    running = [PlatformServer("127.0.0.1", 0, s).start() for s in stores]
    yield running
    for server, store in zip(running, stores, strict=True):
        server.shutdown()
        server.close()
        store.close()


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.booleans(), st.sampled_from(_FIELDS),
       st.sampled_from(["HG\x00", "H\ud800", float("nan"), float("inf"), {"k\x00": 1},
                        ["\udfff"], "0001-01-01 00:00:00", "9999-12-31 23:59:59"])
       | _ANY_JSON)
def test_any_field_value_over_http_is_answered_and_the_good_rating_stored(
        servers: list[PlatformServer], as_gov: bool, field: str, value: Any) -> None:
    """One valid record with one field replaced by any JSON value (NaN, surrogates, NUL,
    nesting included), next to a good rating: on SQLite and PostgreSQL the answer is a
    200 with one result per record, and the good rating is stored."""
    record: dict[str, Any] = gov() if as_gov else make_rating(level=2)
    record[field] = value
    good = make_rating()
    body = json.dumps({"ratings": [good, record]}, ensure_ascii=True).encode()
    for server in servers:
        status, answer = post(server.port, body)
        assert status == 200, (server.store.db.dialect, answer[:300])
        results = json.loads(answer)["results"]
        assert [r["status"] for r in results][0] == "accepted"
        assert results[1]["status"] in ("accepted", "rejected", "duplicate")
        assert good["rating_id"] in server.store.rating_ids(good["device_id"])
