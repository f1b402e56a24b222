"""The upstream with records that share an id: a gov-profile rating and an expired-prompt
record (both in the gov names) with one id, from one device or two, and records of ours
(posted through the profile) in the same batch. A real loopback HTTP server stands in
for the province and keeps what it is sent; every record the city stored is posted and
answered exactly once, also when one of a batch's two requests fails and is retried."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker_bridge.profile import GovProfile
from city_platform.store import Store
from city_platform.upstream import Upstream
from tests.support import postgres as pg
from tests.support.ratings import make_rating

postgres_server, postgres_url, store_url = (
    pg.postgres_server, pg.postgres_url, pg.store_url)


class Province:
    """Answers SPEC §9 by assessId: accepted the first time an (id, device, type) is
    seen, duplicate after. `fail_next(n)` answers the next n requests 503."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str, str]] = []   # (assessId, deviceCode, type)
        self.requests: list[list[tuple[str, str, str]]] = []
        self._fail = 0
        self._lock = threading.Lock()
        province = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status, answer = province.answer(
                    [(r["assessId"], r["deviceCode"], r["assessType"])
                     for r in body["ratings"]])
                data = json.dumps(answer).encode()
                self.send_response(status)
                for name, value in (("Content-Length", str(len(data))),
                                    ("Content-Type", "application/json")):
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/ratings"

    def answer(self, keys: list[tuple[str, str, str]]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.requests.append(keys)
            if self._fail > 0:
                self._fail -= 1
                return 503, {"error": "busy"}
            seen = set(self.received)
            self.received += keys
        return 200, {"results": [
            {"rating_id": k[0], "status": "duplicate" if k in seen else "accepted",
             "error": None} for k in keys]}

    def fail_next(self, n: int) -> None:
        with self._lock:
            self._fail = n

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def province() -> Iterator[Province]:
    p = Province()
    yield p
    p.close()


@pytest.fixture
def city(store_url: str) -> Iterator[Store]:
    s = Store.open(store_url, "UTC", upstream=True)
    yield s
    s.close()


def _forward(city: Store, province: Province, until: Callable[[], bool],
             batch_max: int = 100) -> None:
    upstream = Upstream(city, {"url": province.url, "profile": "gov", "timeout_s": 5,
                               "batch_max": batch_max, "retry_cap_s": 0.2})
    upstream.start()
    try:
        deadline = time.monotonic() + 30
        while not until() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)   # anything more it would send
    finally:
        upstream.stop()


def _gov_rating(device: str, rating_id: str | None = None) -> dict[str, Any]:
    record = GovProfile(timezone="UTC").rating(make_rating(device, level=2))
    if rating_id is not None:
        record["assessId"] = rating_id
    return record


def _gov_expired(device: str, rating_id: str | None = None) -> dict[str, Any]:
    record = GovProfile(timezone="UTC").expired(
        device, {"event": "prompt_expired", "at": "2026-11-25T02:40:00Z", "case_id": "C-1"})
    if rating_id is not None:
        record["assessId"] = rating_id
    return record


def _stored(city: Store) -> Counter[tuple[str, str, str]]:
    rows = city.db.execute("SELECT rating_id, device_id, 'rated' FROM ratings UNION ALL "
                           "SELECT prompt_id, device_id, 'expired' FROM expired_prompts"
                           ).fetchall()
    return Counter((r[0], r[1], r[2]) for r in rows)


def _all_answered(city: Store) -> Callable[[], bool]:
    return lambda: set(city.upstream_counts()) == {"accepted"}


def test_a_rating_and_an_expired_prompt_of_two_devices_with_one_id(
        city: Store, province: Province) -> None:
    shared = "ab" * 16
    results = city.submit([_gov_rating("421100-HG01-W01", shared),
                           _gov_expired("421100-HG01-W02", shared)])
    assert [r["status"] for r in results] == ["accepted", "accepted"]
    _forward(city, province, _all_answered(city))
    assert Counter(province.received) == _stored(city)
    assert max(Counter(province.received).values()) == 1
    assert all(len({k[0] for k in keys}) == len(keys) for keys in province.requests)
    assert city.upstream_counts() == {"accepted": 2}


def test_a_rating_and_an_expired_prompt_of_one_device_with_one_id(
        city: Store, province: Province) -> None:
    """One device, one id, a rating and an expired prompt: the second is the same id of
    the same device, so a duplicate (SPEC §11: stored nothing more), and the province
    gets the one stored, once."""
    shared = "cd" * 16
    results = city.submit([_gov_rating("421100-HG01-W01", shared),
                           _gov_expired("421100-HG01-W01", shared)])
    assert [r["status"] for r in results] == ["accepted", "duplicate"]
    assert sum(_stored(city).values()) == 1
    results = city.submit([_gov_expired("421100-HG01-W01", shared)])   # in a later batch
    assert [r["status"] for r in results] == ["duplicate"]
    _forward(city, province, _all_answered(city))
    assert Counter(province.received) == _stored(city)
    assert city.upstream_counts() == {"accepted": 1}


def test_one_id_both_ways_in_either_order(city: Store, province: Province) -> None:
    shared = "ef" * 16
    assert city.submit([_gov_expired("421100-HG01-W01", shared)])[0]["status"] == "accepted"
    assert city.submit([_gov_rating("421100-HG01-W01", shared)])[0]["status"] == "duplicate"
    _forward(city, province, _all_answered(city))
    assert Counter(province.received) == _stored(city) == Counter(
        {(shared, "421100-HG01-W01", "expired"): 1})


def test_a_failed_second_request_does_not_post_the_first_again(
        city: Store, province: Province) -> None:
    """A batch of ours (posted through the profile) and of gov records (as they came)
    goes up in two requests; the second fails once: the first one's answers are kept,
    and only the second is posted again."""
    ours = make_rating("421100-HG01-W01", level=4)
    city.submit([ours, _gov_expired("421100-HG01-W02"), _gov_rating("421100-HG01-W03")])
    province.fail_next(0)

    # The first request (ours) is answered, the second (gov) fails once.
    original = province.server.RequestHandlerClass.do_POST  # type: ignore[attr-defined]
    calls = {"n": 0}

    def do_post(handler: BaseHTTPRequestHandler) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            province.fail_next(1)
        original(handler)

    province.server.RequestHandlerClass.do_POST = do_post  # type: ignore[attr-defined]
    _forward(city, province, _all_answered(city))
    assert Counter(province.received) == _stored(city), province.requests
    assert city.upstream_counts() == {"accepted": 3}


def test_many_shared_ids_over_small_batches(city: Store, province: Province) -> None:
    records = []
    for i in range(12):
        shared = f"{i:032x}"
        records += [_gov_rating("421100-HG01-W01", shared),
                    _gov_expired("421100-HG01-W02", shared),
                    _gov_rating("421100-HG01-W03", shared)]
    records.append(make_rating("421100-HG01-W04"))
    city.submit(records)
    _forward(city, province, _all_answered(city), batch_max=4)
    assert Counter(province.received) == _stored(city)
    assert sum(_stored(city).values()) == 37
    assert max(Counter(province.received).values()) == 1
    assert city.upstream_counts() == {"accepted": 37}


_RECORD = st.tuples(st.sampled_from(["rated", "expired"]), st.integers(0, 2),
                    st.sampled_from(["421100-HG01-W01", "421100-HG01-W02"]))


@settings(max_examples=40)
@given(st.lists(st.lists(_RECORD, min_size=1, max_size=6), min_size=1, max_size=3))
def test_each_id_of_a_device_is_stored_once_whatever_its_kinds(
        tmp_path_factory: pytest.TempPathFactory,
        batches: list[list[tuple[str, int, str]]]) -> None:
    """Any mix of ratings and expired prompts over a few ids and devices, in a few
    batches: each (id, device) is stored once, as the kind that came first, and queued
    once for the province; its first record is answered accepted, every other one
    duplicate."""
    city = Store.open(f"sqlite:///{tmp_path_factory.mktemp('city') / 'city.db'}", "UTC",
                      upstream=True)
    try:
        first: dict[tuple[str, str], str] = {}
        for batch in batches:
            records = [(_gov_rating if kind == "rated" else _gov_expired)(device, f"{n:032x}")
                       for kind, n, device in batch]
            statuses = [r["status"] for r in city.submit(records)]
            expected = []
            for kind, n, device in batch:
                key = (f"{n:032x}", device)
                expected.append("duplicate" if key in first else "accepted")
                first.setdefault(key, kind)
            assert statuses == expected
        assert _stored(city) == Counter({(rid, device, kind)
                                         for (rid, device), kind in first.items()})
        assert city.upstream_counts() == {"pending": len(first)}
        assert len(city.pending_upstream(100)) == len(first)
    finally:
        city.close()
