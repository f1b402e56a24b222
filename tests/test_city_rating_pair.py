"""A rating is the pair (rating_id, device_id) at the city platform (issue 17, SPEC
proposal P1): a device that sends another device's rating_id — a bug, a cloned SD card,
an attacker — cannot make the genuine rating be answered or stored as a duplicate. On
SQLite and the private PostgreSQL, in the store, the CLI, the HTTP API, the upstream
queue, and through a real bridge and mosquitto."""

from __future__ import annotations

import http.client
import json
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from city_platform.server import PlatformServer
from city_platform.store import AmbiguousRating, Store, StoreError
from city_platform.store.db import POSTGRESQL
from city_platform.upstream import Upstream, one_per_id
from tests.support import postgres as pg
from tests.support.bridge import BridgeProcess
from tests.support.mosquitto import Mosquitto
from tests.support.ratings import FleetPublisher, make_rating
from tests.test_city_followups import FRIDAY_10_SHANGHAI, cli

# fixtures
postgres_server, postgres_url, store_url, store = (
    pg.postgres_server, pg.postgres_url, pg.store_url, pg.store)

GENUINE, OTHER = "421100-HG01-W01", "421100-HG01-W02"


def twins(level: int = 5, **overrides: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A genuine rating and another device's record with the same rating_id."""
    genuine = make_rating(GENUINE, level=level, **overrides)
    other = make_rating(OTHER, level=level, rating_id=genuine["rating_id"], **overrides)
    return genuine, other


def answers(results: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(r["rating_id"], r["status"]) for r in results]


def test_two_devices_one_rating_id_in_one_batch_both_stored_and_accepted(
        store: Store) -> None:
    genuine, other = twins(level=1)
    rid = genuine["rating_id"]
    # One result per record, in order, named by rating_id (SPEC §9): both accepted.
    assert answers(store.submit([other, genuine])) == [(rid, "accepted"), (rid, "accepted")]
    # Each device's own copy again is a duplicate, in a batch and across batches.
    assert answers(store.submit([genuine, other, genuine])) == [(rid, "duplicate")] * 3
    counts = store.counts()
    assert (counts["total"], counts["duplicates"]) == (2, 3)
    assert counts["by_device"] == {GENUINE: 1, OTHER: 1}
    assert store.times_seen() == {GENUINE: {rid: 3}, OTHER: {rid: 2}}
    assert store.rating_ids(GENUINE) == [rid] and store.rating_ids(OTHER) == [rid]
    assert sorted(store.rating_ids()) == [rid, rid]
    # The report's roll-up and the follow-ups count both ratings.
    assert int(store.db.execute("SELECT SUM(n) FROM daily_tally").fetchone()[0]) == 2
    assert sorted(f.device_id for f in store.followups()) == [GENUINE, OTHER]


def test_the_other_device_first_cannot_suppress_the_genuine_rating(store: Store) -> None:
    genuine, other = twins(level=2)
    rid = genuine["rating_id"]
    assert answers(store.submit([other])) == [(rid, "accepted")]
    assert answers(store.submit([other])) == [(rid, "duplicate")]
    assert answers(store.submit([genuine])) == [(rid, "accepted")]
    assert answers(store.submit([genuine])) == [(rid, "duplicate")]
    row = store.db.execute("SELECT record FROM ratings WHERE rating_id = ? AND device_id = ?",
                           (rid, GENUINE)).fetchone()
    assert json.loads(row[0])["device_id"] == GENUINE


def test_a_claimed_other_month_is_still_the_same_devices_duplicate(store: Store) -> None:
    genuine, other = twins(rated_at="2026-11-30T23:59:59.000Z")
    moved = {**other, "rated_at": "2026-12-01T00:00:01.000Z"}
    assert [s for _, s in answers(store.submit([genuine, other, moved]))] == [
        "accepted", "accepted", "duplicate"]
    if store.db.dialect == POSTGRESQL:
        rows = store.db.execute("SELECT device_id, tableoid::regclass::text FROM ratings "
                                "ORDER BY device_id").fetchall()
        assert rows == [(GENUINE, "ratings_202611"), (OTHER, "ratings_202611")]


def test_gov_records_and_expired_prompts_follow_the_pair(store: Store) -> None:
    from broker_bridge.profile import GovProfile

    genuine, other = twins(level=2)
    gov = [GovProfile().rating(r) for r in (genuine, other)]
    assert [s for _, s in answers(store.submit([*gov, *gov]))] == [
        "accepted", "accepted", "duplicate", "duplicate"]
    expired = [{"assessId": "a" * 32, "deviceCode": device, "assessType": "expired",
                "assessTime": "2026-11-25 10:31:07", "projectNo": "C-1"}
               for device in (GENUINE, OTHER)]
    assert [r["status"] for r in store.submit(expired)] == ["accepted", "accepted"]
    assert [r["status"] for r in store.submit(expired[1:])] == ["duplicate"]
    assert store.counts()["expired_prompts"] == 2


def test_concurrent_batches_of_two_devices_with_the_same_ids(store: Store) -> None:
    """Eight threads post overlapping batches in both orders where every rating_id is
    used by two devices: each pair accepted exactly once, 2 × 150 ratings stored."""
    pairs = [twins(level=1 + i % 5) for i in range(150)]
    records = [r for pair in pairs for r in pair]
    accepted: list[tuple[str, str]] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def post(offset: int) -> None:
        try:
            for start in range(offset * 25, len(records), 100):
                batch = records[start:start + 100]
                if offset % 2:
                    batch = batch[::-1]
                got = store.submit(batch)
                with lock:
                    accepted.extend((r["rating_id"], rec["device_id"])
                                    for r, rec in zip(got, batch, strict=True)
                                    if r["status"] == "accepted")
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=post, args=(i % 4,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(accepted) == sorted((r["rating_id"], r["device_id"]) for r in records)
    assert store.counts()["total"] == 300


def test_followups_set_refuses_an_ambiguous_rating_id_until_device_says_which(
        store: Store, store_url: str) -> None:
    genuine, other = twins(level=2, rated_at=FRIDAY_10_SHANGHAI)
    rid = genuine["rating_id"]
    store.submit([genuine, other])
    with pytest.raises(AmbiguousRating, match=f"{rid}.*{GENUINE}, {OTHER}"):
        store.move_followup(rid, "contacted", "已回访", "李主任")
    refused = cli("followups", "--store", store_url, "set", rid, "contacted",
                  "--note", "已回访", "--by", "李主任")
    assert refused.returncode == 1
    assert "2 devices" in refused.stderr and "--device" in refused.stderr
    assert {f.state for f in store.followups()} == {"open"}   # nothing moved
    ok = cli("followups", "--store", store_url, "set", rid, "contacted",
             "--note", "已回访", "--by", "李主任", "--device", OTHER)
    assert ok.returncode == 0, ok.stderr
    moved = json.loads(ok.stdout)
    assert (moved["device_id"], moved["state"]) == (OTHER, "contacted")
    states = {f.device_id: f.state for f in store.followups()}
    assert states == {GENUINE: "open", OTHER: "contacted"}
    log = store.db.execute("SELECT device_id, to_state FROM followup_log").fetchall()
    assert log == [(OTHER, "contacted")]
    missing = cli("followups", "--store", store_url, "set", rid, "closed", "--note", "x",
                  "--by", "李主任", "--device", "421100-HG09-W09")
    assert missing.returncode == 1 and "no follow-up" in missing.stderr
    listed = cli("followups", "--store", store_url, "list", "--json")
    devices = sorted(json.loads(line)["device_id"] for line in listed.stdout.splitlines())
    assert devices == [GENUINE, OTHER]


def test_http_api_asks_which_device_then_moves_that_one(store: Store) -> None:
    genuine, other = twins(level=1, rated_at=FRIDAY_10_SHANGHAI)
    store.submit([genuine, other])
    server = PlatformServer("127.0.0.1", 0, store).start()

    def post(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        answer = json.loads(response.read())
        conn.close()
        return response.status, answer

    try:
        path = f"/api/followups/{genuine['rating_id']}"
        body = {"state": "contacted", "by": "李主任", "note": "已回访"}
        status, answer = post(path, body)
        assert status == 409 and answer["devices"] == [GENUINE, OTHER]
        status, answer = post(f"{path}?device={GENUINE}", body)
        assert status == 200 and answer["device_id"] == GENUINE
        assert {f.device_id: f.state for f in store.followups()} == {
            GENUINE: "contacted", OTHER: "open"}
    finally:
        server.shutdown()
        server.close()


def test_alerts_of_two_devices_follow_ups_have_their_own_ids(store: Store) -> None:
    from city_platform.alerts import FollowupAlerts

    genuine, other = twins(level=2, rated_at=FRIDAY_10_SHANGHAI)
    store.submit([genuine, other])
    sent: list[dict[str, Any]] = []
    alerts = FollowupAlerts(store, "hcp/v1", lambda topic, payload: sent.append(
        json.loads(payload)))
    months_later = datetime(2025, 12, 31, 2, 0, tzinfo=UTC)   # both overdue
    alerts.check(now=months_later)
    ids = {a["alert_id"] for a in sent}
    assert len(ids) == len(sent) == 2 and {a["device_id"] for a in sent} == {GENUINE, OTHER}
    assert alerts.check(now=months_later) == []  # each raised once, per device


@given(st.lists(st.tuples(st.sampled_from("abc"), st.sampled_from("xyz")), max_size=30,
                unique=True))
def test_an_upstream_request_never_holds_one_id_twice_and_loses_none(
        keys: list[tuple[str, str]]) -> None:
    pending = [(rid, device, False, "{}") for rid, device in keys]
    sent: list[tuple[str, str, bool, str]] = []
    while pending:
        batch = one_per_id(pending)
        assert batch, "a request with nothing while records wait"
        assert len({item[0] for item in batch}) == len(batch)
        sent += batch
        pending = [item for item in pending if item not in batch]
    assert sorted(sent) == sorted((rid, device, False, "{}") for rid, device in keys)


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("profile", ["gov", "generic"])
def test_the_province_gets_each_pair_once(tmp_path: Path, profile: str) -> None:
    province_store = Store.open(f"sqlite:///{tmp_path / 'province.db'}")
    province = PlatformServer("127.0.0.1", 0, province_store).start()
    city_store = Store.open(f"sqlite:///{tmp_path / 'city.db'}", upstream=True)
    upstream = Upstream(city_store, {"url": province.url, "profile": profile,
                                     "timeout_s": 5, "retry_cap_s": 0.5})
    upstream.start()
    try:
        pairs = [twins(level=1 + i % 5) for i in range(20)]
        records = [r for pair in pairs for r in pair]
        city_store.submit(records)
        city_store.submit(records[:10])   # copies: not queued again
        upstream.wake()
        wait_until(lambda: city_store.upstream_counts() == {"accepted": 40}, 30,
                   "the province to accept all 40 ratings")
        # A province that de-duplicates by the pair (as docs/platform.md asks) stores
        # both devices' ratings, once each.
        counts = province_store.counts()
        assert counts["total"] == 40 and counts["duplicates"] == 0
        assert counts["by_device"] == {GENUINE: 20, OTHER: 20}
    finally:
        upstream.stop()
        province.shutdown()
        province.close()
        city_store.close()
        province_store.close()


def test_through_a_bridge_another_devices_record_cannot_make_the_genuine_a_duplicate(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'ratings.db'}")
    server = PlatformServer("127.0.0.1", 0, store).start()
    bridge = BridgeProcess(tmp_path / "bridge", mosquitto, server.url,
                           client_id="bridge-1").start()
    fleet = FleetPublisher(mosquitto.host, mosquitto.port)
    try:
        # First the other device's record, answered before the genuine one is sent.
        first, other_first = twins(level=2)
        fleet.wait_published([fleet.publish_record(other_first)])
        wait_until(lambda: len(fleet.receipts_for(OTHER)) == 1, 15, "the other's receipt")
        fleet.wait_published([fleet.publish_record(first)])
        wait_until(lambda: len(fleet.receipts_for(GENUINE)) == 1, 15, "the genuine receipt")
        # Then both at once, the other device's first (the bridge holds the second
        # until the first is answered: one id per request).
        second, other_second = twins(level=5)
        fleet.wait_published([fleet.publish_record(other_second),
                              fleet.publish_record(second)])
        wait_until(lambda: len(fleet.receipts_for(GENUINE)) == 2
                   and len(fleet.receipts_for(OTHER)) == 2, 15, "the second receipts")
        for device in (GENUINE, OTHER):
            assert [(r["rating_id"], r["status"]) for r in fleet.receipts_for(device)] == [
                (first["rating_id"], "accepted"), (second["rating_id"], "accepted")]
        assert store.counts()["by_device"] == {GENUINE: 2, OTHER: 2}
        assert store.rating_ids(GENUINE) == [first["rating_id"], second["rating_id"]]
        stored = store.db.execute("SELECT record FROM ratings WHERE device_id = ? "
                                  "ORDER BY rowid", (GENUINE,)).fetchall()
        assert [json.loads(r[0]) for r in stored] == [first, second]
    finally:
        fleet.close()
        bridge.terminate()
        server.shutdown()
        server.close()
        store.close()


KEYS = {"ratings": ["rating_id", "device_id"], "followups": ["rating_id", "device_id"],
        "upstream": ["rating_id", "device_id"], "expired_prompts": ["prompt_id", "device_id"]}


def primary_key(store: Store, table: str) -> list[str]:
    if store.db.dialect == POSTGRESQL:
        rows = store.db.execute(
            "SELECT a.attname FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) "
            "WITH ORDINALITY AS k(attnum, n) JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = k.attnum WHERE i.indrelid = ?::regclass AND i.indisprimary "
            "ORDER BY k.n", (table,)).fetchall()
    else:
        rows = [(r[1],) for r in sorted(
            store.db.execute(f"PRAGMA table_info({table})").fetchall(), key=lambda r: r[5])
            if r[5] > 0]
    return [r[0] for r in rows]


def test_every_rating_table_is_keyed_by_the_pair_rating_id_first(store: Store) -> None:
    """The pair makes a rating; rating_id first, so that `followups set RATING_ID`
    (rating_id alone) is a prefix of the key's index, not a scan of all of it."""
    keys = {table: primary_key(store, table) for table in KEYS}
    expected = dict(KEYS)
    if store.db.dialect == POSTGRESQL:
        # A partitioned table's key must hold the partition key; rating_ids is the one
        # place the pair alone is unique.
        expected["ratings"] = ["rating_id", "device_id", "rated_at"]
        keys["rating_ids"] = primary_key(store, "rating_ids")
        expected["rating_ids"] = ["rating_id", "device_id"]
    assert keys == expected


def test_postgres_uses_the_keys_for_a_rating_id_alone_and_for_the_pair(
        postgres_url: str) -> None:
    """EXPLAIN of the follow-up look-up by rating_id and of the duplicate check: index
    conditions on the primary keys (seq scans off, so the plan does not depend on the
    tables' size)."""
    store = Store.open(postgres_url)
    try:
        genuine, other = twins(level=1)
        store.submit([genuine, other])
        store.db.execute("SET enable_seqscan = off")

        def plan(sql: str, args: tuple[Any, ...]) -> str:
            return "\n".join(r[0] for r in store.db.execute("EXPLAIN " + sql, args))

        rid = genuine["rating_id"]
        by_id = plan("SELECT * FROM followups WHERE rating_id = ?", (rid,))
        assert "followups_pkey" in by_id and "Index Cond: (rating_id = " in by_id, by_id
        for table in ("rating_ids", "followups"):
            pair = plan(f"SELECT 1 FROM {table} WHERE rating_id = ? AND device_id = ?",
                        (rid, GENUINE))
            assert f"{table}_pkey" in pair and "Index Cond: ((rating_id = " in pair, pair
    finally:
        store.close()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.tuples(st.sampled_from([GENUINE, OTHER, "421100-HG02-W01"]),
                                   st.integers(0, 3)), min_size=1, max_size=8),
                min_size=1, max_size=4))
def test_any_batches_of_any_devices_and_ids_accept_each_pair_once(
        batches: list[list[tuple[str, int]]]) -> None:
    """Whatever devices send whatever ids in whatever batches: each (device, id) pair is
    answered accepted exactly once (its first copy), every other copy duplicate, each
    result in its record's place, and the store holds exactly the pairs sent."""
    ids = [uuid.UUID(int=n).hex for n in range(4)]
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(f"sqlite:///{tmp}/ratings.db")
        try:
            seen: set[tuple[str, str]] = set()
            for batch in batches:
                records = [make_rating(device, rating_id=ids[n]) for device, n in batch]
                results = store.submit(records)
                expected = []
                for record in records:
                    key = (record["device_id"], record["rating_id"])
                    expected.append((key[1], "duplicate" if key in seen else "accepted"))
                    seen.add(key)
                assert answers(results) == expected
            stored = {(d, rid) for d, by_id in store.times_seen().items() for rid in by_id}
            assert stored == seen
            copies = sum(len(b) for b in batches)
            assert sum(n for by_id in store.times_seen().values()
                       for n in by_id.values()) == copies
        finally:
            store.close()


def test_a_development_store_with_the_old_key_is_refused_with_the_reason(
        store_url: str) -> None:
    """Migration 1 was changed in place: a store it made before keeps version 1 with
    ratings unique by rating_id alone. Opening it says so instead of failing with an
    SQL error at the first batch, and changes nothing."""
    import psycopg

    table = "rating_ids" if store_url.startswith("postgresql") else "ratings"
    statements = ["CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL)",
                  "INSERT INTO meta VALUES ('schema_version', '1')",
                  f"CREATE TABLE {table} (rating_id text PRIMARY KEY, device_id text)"]
    if store_url.startswith("postgresql"):
        with psycopg.connect(store_url) as pg_conn:
            for sql in statements:
                pg_conn.execute(sql)
    else:
        import sqlite3
        lite = sqlite3.connect(store_url[len("sqlite:///"):])
        with lite:
            for sql in statements:
                lite.execute(sql)
        lite.close()
    for read_only in (False, True):
        with pytest.raises(StoreError, match=r"keyed by \(device_id, rating_id\).*new store"):
            Store.open(store_url, read_only=read_only)
