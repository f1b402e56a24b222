"""Store-and-forward to the province: while the province is down, 1,000 ratings arrive
at the city (some twice); once it is back every one reaches it, in the gov profile, the
province's answer per rating is kept, and the city stored none twice."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from broker_bridge.profile import GovProfile
from city_platform.server import PlatformServer
from city_platform.store import Store
from city_platform.upstream import Upstream
from tests.support.mosquitto import free_port
from tests.support.ratings import make_rating


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_the_province_down_while_1000_ratings_arrive(tmp_path: Path) -> None:
    province_port = free_port()   # nobody listens yet: connection refused
    city_store = Store.open(f"sqlite:///{tmp_path / 'city.db'}", upstream=True)
    city = PlatformServer("127.0.0.1", 0, city_store).start()
    upstream = Upstream(city_store, {"url": f"http://127.0.0.1:{province_port}/api/ratings",
                                     "profile": "gov", "timeout_s": 2, "batch_max": 100,
                                     "retry_cap_s": 0.5})
    city.on_stored.append(upstream.wake)
    upstream.start()
    province_store = Store.open(f"sqlite:///{tmp_path / 'province.db'}")
    province: PlatformServer | None = None
    try:
        ratings = [make_rating(f"421100-HG01-W{i % 20:02d}", level=1 + i % 5)
                   for i in range(1000)]
        gov_record = GovProfile().rating(make_rating("421100-HG02-W01", level=2))
        for start in range(0, 1000, 100):
            city.submit(ratings[start:start + 100])
        city.submit(ratings[:250])           # re-sent by bridges: duplicates
        city.submit([gov_record, gov_record])  # one arrived in the gov names already
        assert city_store.counts()["total"] == 1001
        assert city_store.upstream_counts() == {"pending": 1001}
        time.sleep(1.0)  # a few failed attempts meanwhile
        assert city_store.upstream_counts() == {"pending": 1001}

        province = PlatformServer("127.0.0.1", province_port, province_store).start()
        wait_until(lambda: city_store.upstream_counts() == {"accepted": 1001}, 60,
                   "the province to accept everything")
        assert province_store.counts()["total"] == 1001
        assert province_store.counts()["duplicates"] == 0
        assert set(province_store.rating_ids()) == set(city_store.rating_ids())
        # The province got gov records (assessId, satisfaction, …), ours mapped.
        (record,) = province_store.db.execute(
            "SELECT record FROM ratings WHERE rating_id = ?", (ratings[0]["rating_id"],)
        ).fetchone()
        assert '"assessId"' in record and '"satisfaction"' in record
        assert city_store.counts()["total"] == 1001   # nothing stored twice at the city
    finally:
        upstream.stop()
        city.shutdown()
        city.close()
        if province is not None:
            province.shutdown()
            province.close()
        city_store.close()
        province_store.close()


def test_the_generic_profile_forwards_our_records_and_keeps_the_answers(
        tmp_path: Path) -> None:
    province_store = Store.open(f"sqlite:///{tmp_path / 'province.db'}")
    province = PlatformServer("127.0.0.1", 0, province_store).start()
    city_store = Store.open(f"sqlite:///{tmp_path / 'city.db'}", upstream=True)
    # generic profile: the province gets our records as they are.
    upstream = Upstream(city_store, {"url": province.url, "profile": "generic",
                                     "retry_cap_s": 0.5})
    try:
        city_store.submit([make_rating(level=5), make_rating(level=2)])
        upstream.start()
        wait_until(lambda: city_store.upstream_counts() == {"accepted": 2}, 20,
                   "answers kept")
        rows = city_store.db.execute("SELECT status, answered_at FROM upstream").fetchall()
        assert len(rows) == 2 and all(status == "accepted" and at for status, at in rows)
        (record,) = province_store.db.execute("SELECT record FROM ratings LIMIT 1").fetchone()
        assert '"schema":"hcp.rating/1"' in record
    finally:
        upstream.stop()
        province.shutdown()
        province.close()
        province_store.close()
        city_store.close()


def test_an_unforeseen_failure_does_not_end_forwarding(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A failure nobody foresaw (here: the mapping of one record raises TypeError twice)
    is logged with its traceback, and forwarding resumes: every record still reaches the
    province, once."""
    province_store = Store.open(f"sqlite:///{tmp_path / 'province.db'}")
    province = PlatformServer("127.0.0.1", 0, province_store).start()
    city_store = Store.open(f"sqlite:///{tmp_path / 'city.db'}", upstream=True)
    upstream = Upstream(city_store, {"url": province.url, "profile": "generic",
                                     "retry_cap_s": 0.2})
    real_payload = upstream._payload
    failures = [TypeError("an unforeseen record"), TypeError("an unforeseen record")]

    def payload(record: str, gov: bool) -> bytes:
        if failures:
            raise failures.pop()
        return real_payload(record, gov)

    monkeypatch.setattr(upstream, "_payload", payload)
    try:
        with caplog.at_level(logging.ERROR, logger="hcp.platform.upstream"):
            city_store.submit([make_rating(level=5), make_rating(level=2)])
            upstream.start()
            wait_until(lambda: city_store.upstream_counts() == {"accepted": 2}, 20,
                       "answers kept after the failures")
        assert failures == []
        assert caplog.text.count("forwarding to the province failed unexpectedly") == 2
        assert "TypeError: an unforeseen record" in caplog.text        # the traceback
        (count,) = province_store.db.execute("SELECT COUNT(*) FROM ratings").fetchone()
        assert count == 2
    finally:
        upstream.stop()
        province.shutdown()
        province.close()
        province_store.close()
        city_store.close()
