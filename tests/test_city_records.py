"""Whatever a client posts, the platform answers each record and never crashes: a
property test over arbitrary JSON values, and over valid records with one field
replaced by anything."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from city_platform.records import Incoming, Rejected, read_record
from city_platform.store import Store
from tests.support.ratings import make_rating

TZ = ZoneInfo("Asia/Shanghai")
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20)
FIELDS = ["rating_id", "device_id", "hall_id", "window_id", "level", "reason", "trigger",
          "case", "staff", "rated_at", "clock_synced", "schema", "seq", "input",
          "assessId", "assessType", "satisfaction", "assessTime", "deviceCode"]


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_any_json_value_is_read_or_rejected(value: Any) -> None:
    assert isinstance(read_record(value, TZ), Incoming | Rejected)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(FIELDS), json_values, st.booleans())
@example("satisfaction", [], True)   # crashed the batch: an unhashable table lookup
def test_a_valid_record_with_one_field_replaced(field: str, value: Any, gov: bool) -> None:
    record: dict[str, Any] = make_rating(level=2)
    if gov:
        from broker_bridge.profile import GovProfile

        record = GovProfile().rating(record)
    record[field] = value
    result = read_record(record, TZ)
    assert isinstance(result, Incoming | Rejected)
    if isinstance(result, Incoming):
        assert 0 <= result.level <= 5 and result.rated_at.tzinfo is not None


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(json_values, max_size=5))
def test_a_batch_with_junk_stores_exactly_its_valid_records(
        tmp_path: Path, junk: list[Any]) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'ratings.db'}")
    try:
        before = store.counts()["total"]
        good = [make_rating(level=1 + i) for i in range(3)]
        results = store.submit(junk + good)
        assert len(results) == len(junk) + 3
        assert [r["status"] for r in results[len(junk):]] == ["accepted"] * 3
        assert all(r["status"] == "rejected" for r in results[:len(junk)])
        assert store.counts()["total"] == before + 3
    finally:
        store.close()


def test_an_internal_error_is_a_500_not_a_dropped_connection(
        tmp_path: Path, monkeypatch: Any) -> None:
    import http.client
    import json

    from city_platform.server import PlatformServer

    store = Store.open(f"sqlite:///{tmp_path / 'ratings.db'}")
    server = PlatformServer("127.0.0.1", 0, store).start()

    def broken(records: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(store, "submit", broken)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("POST", "/api/ratings", json.dumps({"ratings": [make_rating()]}),
                     {"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == 500
        assert "nothing stored" in json.loads(response.read())["error"]
        conn.close()
    finally:
        server.shutdown()
        server.close()
        store.close()
