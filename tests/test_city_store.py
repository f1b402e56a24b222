"""The city platform's store, on SQLite and on a real private PostgreSQL: accepted only
after commit, duplicates by rating_id (in a batch, across batches, across monthly
partitions), one transaction per batch, versioned migrations, and the same rating
through two bridges stored once in the right monthly partition."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from city_platform.server import PlatformServer
from city_platform.store import Store, StoreError
from city_platform.store.db import POSTGRESQL
from city_platform.store.ingest import write_batch
from city_platform.store.schema import SCHEMA_VERSION, StoreTooNew
from tests.support import postgres as pg
from tests.support.bridge import BridgeProcess
from tests.support.mosquitto import Mosquitto
from tests.support.ratings import FleetPublisher, make_rating

# fixtures
postgres_server, postgres_url, store_url, store = (
    pg.postgres_server, pg.postgres_url, pg.store_url, pg.store)

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def statuses(results: list[dict[str, Any]]) -> list[str]:
    return [r["status"] for r in results]


def test_accepted_then_duplicate_in_a_batch_and_across_batches(store: Store) -> None:
    a, b = make_rating(level=5), make_rating(level=1)
    assert statuses(store.submit([a, b, a])) == ["accepted", "accepted", "duplicate"]
    assert statuses(store.submit([b, a])) == ["duplicate", "duplicate"]
    counts = store.counts()
    assert (counts["total"], counts["duplicates"], counts["good"], counts["bad"]) == (2, 3, 1, 1)
    assert store.times_seen() == {a["device_id"]: {a["rating_id"]: 3, b["rating_id"]: 2}}
    # The report's roll-up and the follow-ups count each rating once too.
    assert int(store.db.execute("SELECT SUM(n) FROM daily_tally").fetchone()[0]) == 2
    assert [f.rating_id for f in store.followups()] == [b["rating_id"]]


def test_a_copy_claiming_another_month_is_still_a_duplicate(store: Store) -> None:
    original = make_rating(rated_at="2026-11-30T23:59:59.000Z")
    moved = {**original, "rated_at": "2026-12-01T00:00:01.000Z"}  # a re-set device clock
    assert statuses(store.submit([original])) == ["accepted"]
    assert statuses(store.submit([moved])) == ["duplicate"]
    assert store.counts()["total"] == 1
    if store.db.dialect == POSTGRESQL:
        rows = store.db.execute("SELECT tableoid::regclass::text FROM ratings").fetchall()
        assert rows == [("ratings_202611",)]


def test_rejected_records_are_answered_and_not_stored(store: Store) -> None:
    good, bad = make_rating(), make_rating(level=9)
    results = store.submit([bad, good, "not a record"])
    assert statuses(results) == ["rejected", "accepted", "rejected"]
    assert results[0]["rating_id"] == bad["rating_id"] and "level" in results[0]["error"]
    assert store.rating_ids() == [good["rating_id"]]


def test_a_failed_batch_stores_nothing_and_can_be_sent_again(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    batch = [make_rating(level=1), make_rating(level=5)]

    def broken(*args: Any) -> set[tuple[str, str]]:
        write_batch(*args)  # everything of the batch written, then the commit never comes
        raise StoreError("disk full (simulated)")

    monkeypatch.setattr("city_platform.store.write_batch", broken)
    with pytest.raises(StoreError):
        store.submit(batch)
    assert store.counts()["total"] == 0
    assert store.followups() == []
    monkeypatch.undo()
    assert statuses(store.submit(batch)) == ["accepted", "accepted"]
    assert len(store.followups()) == 1


def test_gov_records_are_stored_like_ratings(store: Store) -> None:
    from broker_bridge.profile import GovProfile

    gov = GovProfile().rating(make_rating(level=2))
    assert statuses(store.submit([gov, gov])) == ["accepted", "duplicate"]
    assert store.counts()["by_level"] == {"2": 1}
    assert [f.level for f in store.followups()] == [2]


def test_migrations_are_versioned_and_a_newer_store_is_refused(store_url: str) -> None:
    Store.open(store_url).close()
    store = Store.open(store_url)  # a second open migrates nothing
    version = store.db.execute("SELECT value FROM meta WHERE key = 'schema_version'"
                               ).fetchone()[0]
    assert int(version) == SCHEMA_VERSION
    with store.db.transaction():
        store.db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                         (str(SCHEMA_VERSION + 1),))
    store.close()
    with pytest.raises(StoreTooNew, match=f"schema version {SCHEMA_VERSION + 1}.*upgrade"):
        Store.open(store_url)


def test_the_reference_platforms_old_file_is_refused_not_misread(tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as conn:
        conn.execute("CREATE TABLE ratings (rating_id TEXT PRIMARY KEY, record TEXT)")
    with pytest.raises(StoreError, match="without a schema version"):
        Store.open(f"sqlite:///{old}")


def test_bad_store_urls_say_what_is_expected() -> None:
    with pytest.raises(StoreError, match="sqlite:////path"):
        Store.open("mysql://x/y")


def test_postgres_partitions_exist_ahead_and_per_month(postgres_url: str) -> None:
    store = Store.open(postgres_url)
    try:
        store.submit([make_rating(rated_at="2019-03-04T05:06:07.000Z")])  # long ago
        names = {r[0] for r in store.db.execute(
            "SELECT inhrelid::regclass::text FROM pg_inherits "
            "WHERE inhparent = 'ratings'::regclass").fetchall()}
        assert "ratings_201903" in names
        assert len(names) >= 6  # last month, this month and three ahead, plus 2019-03
    finally:
        store.close()


def test_the_same_rating_twice_and_through_two_bridges_is_stored_once_in_its_month(
        tmp_path: Path, mosquitto: Mosquitto, postgres_url: str) -> None:
    store = Store.open(postgres_url)
    server = PlatformServer("127.0.0.1", 0, store).start()
    # Plain subscriptions: each bridge receives every message, so both forward it.
    bridges = [BridgeProcess(tmp_path / f"b{i}", mosquitto, server.url, client_id=f"b{i}",
                             overrides={"mqtt": {"shared_group": ""}}).start()
               for i in (1, 2)]
    publisher = FleetPublisher(mosquitto.host, mosquitto.port)
    try:
        november = make_rating(level=2, rated_at="2026-11-30T15:59:59.500Z")
        december = make_rating(level=5, rated_at="2026-12-01T00:00:00.000Z")
        mids = [publisher.publish_record(r) for r in (november, november, december)]
        publisher.wait_published(mids)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            seen = store.times_seen().get(november["device_id"], {})
            if seen.get(december["rating_id"], 0) >= 2 and seen.get(november["rating_id"], 0) >= 2:
                break
            time.sleep(0.05)
        seen = store.times_seen()[november["device_id"]]
        # Each bridge posted each rating (the second copy of november may be answered
        # from a bridge's cache of recent results instead): stored once all the same.
        assert seen[november["rating_id"]] >= 2 and seen[december["rating_id"]] >= 2
        assert store.counts()["total"] == 2
        rows = store.db.execute("SELECT rating_id, tableoid::regclass::text FROM ratings "
                                "ORDER BY rated_at").fetchall()
        assert rows == [(november["rating_id"], "ratings_202611"),
                        (december["rating_id"], "ratings_202612")]
        assert [f.rating_id for f in store.followups()] == [november["rating_id"]]
    finally:
        publisher.close()
        for bridge in bridges:
            bridge.terminate()
        server.shutdown()
        server.close()
        store.close()


def test_concurrent_batches_with_the_same_ratings_store_each_once(store: Store) -> None:
    """Eight threads post overlapping batches at once (bridges redelivering): every
    rating is answered accepted exactly once, stored once, and counted once in the
    report's roll-up."""
    import threading

    ratings = [make_rating(f"421100-HG01-W{i % 7:02d}", level=1 + i % 5) for i in range(400)]
    answers: list[dict[str, Any]] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def post(offset: int) -> None:
        try:
            for start in range(offset * 20, 400, 100):
                batch = ratings[start:start + 100]
                if offset % 2:
                    batch = batch[::-1]  # another bridge, another order
                got = store.submit(batch)
                with lock:
                    answers.extend(got)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=post, args=(i % 4,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    accepted = [a["rating_id"] for a in answers if a["status"] == "accepted"]
    assert sorted(accepted) == sorted(r["rating_id"] for r in ratings)
    assert store.counts()["total"] == 400
    tallied = store.db.execute("SELECT SUM(n) FROM daily_tally").fetchone()[0]
    assert int(tallied) == 400
    assert len(store.followups()) == sum(1 for r in ratings if r["level"] <= 2)


def test_a_store_keeps_the_time_zone_it_was_created_with(store_url: str) -> None:
    Store.open(store_url, "Asia/Urumqi").close()
    again = Store.open(store_url)   # tools that do not know the config
    assert again.timezone == "Asia/Urumqi"
    again.close()
    with pytest.raises(StoreError, match="local dates are in Asia/Urumqi"):
        Store.open(store_url, "Asia/Shanghai")


def test_every_new_record_is_queued_for_the_province_once(store_url: str) -> None:
    """With an upstream, each new record of a batch (ratings and gov expired prompts) is
    queued once, in the batch's transaction; copies and rejected records are not."""
    store = Store.open(store_url, upstream=True)
    try:
        a, b, c = make_rating(level=5), make_rating(level=1), make_rating(level=3)
        expired = {"assessId": "e" * 32, "deviceCode": a["device_id"],
                   "assessType": "expired", "assessTime": "2026-11-25 10:31:07",
                   "projectNo": "C-1"}
        assert statuses(store.submit([a, b, a, expired, make_rating(level=0)])) == [
            "accepted", "accepted", "duplicate", "accepted", "rejected"]
        assert statuses(store.submit([b, c, expired])) == [
            "duplicate", "accepted", "duplicate"]
        queued = sorted((rid, device) for rid, device, _, _ in store.pending_upstream(100))
        assert queued == sorted((r["rating_id"], a["device_id"])
                                for r in (a, b, c, {"rating_id": "e" * 32}))
    finally:
        store.close()


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(picks=st.lists(st.lists(st.integers(0, 11), min_size=1, max_size=12), min_size=1,
                      max_size=4))
def test_batches_with_repeats_store_and_count_each_rating_once(
        store: Store, picks: list[list[int]]) -> None:
    """Batches drawn with repeats from twelve ratings (two devices, every level): each
    rating answered accepted once and duplicate after, stored once, counted once in the
    roll-up, one follow-up per bad one, and every copy counted in times_seen."""
    before = store.counts()["total"]
    tally_before = int(store.db.execute(
        "SELECT COALESCE(SUM(n), 0) FROM daily_tally").fetchone()[0])
    followups_before = len(store.followups())
    pool = [make_rating(f"421100-HG01-W0{i % 2}", level=1 + i % 5) for i in range(12)]
    seen: set[int] = set()
    for batch in picks:
        got = statuses(store.submit([pool[i] for i in batch]))
        expected = []
        for i in batch:
            expected.append("duplicate" if i in seen else "accepted")
            seen.add(i)
        assert got == expected
    assert store.counts()["total"] - before == len(seen)
    tally = int(store.db.execute("SELECT COALESCE(SUM(n), 0) FROM daily_tally").fetchone()[0])
    assert tally - tally_before == len(seen)
    assert len(store.followups()) - followups_before == sum(
        1 for i in seen if pool[i]["level"] <= 2)
    copies = store.times_seen()
    for i in seen:
        r = pool[i]
        assert copies[r["device_id"]][r["rating_id"]] == sum(b.count(i) for b in picks)
    if store.db.dialect != POSTGRESQL:   # SQLite lists them in the order received
        ours = {pool[i]["rating_id"] for i in seen}
        first_seen = list(dict.fromkeys(pool[i]["rating_id"] for b in picks for i in b))
        assert [rid for rid in store.rating_ids() if rid in ours] == first_seen


def test_a_role_that_may_not_make_temporary_tables_is_told_what_to_grant(
        postgres_url: str) -> None:
    """REVOKE TEMPORARY … FROM PUBLIC (a common hardening) leaves the platform's role
    unable to make its staging table: the store is refused at open, saying which grant
    it needs, not at the first batch; a reader (report) needs no such table."""
    import psycopg

    database = postgres_url.rsplit("/", 1)[1]
    role = f"city_{database}"

    def as_admin(*statements: str) -> None:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement)

    as_admin(f"CREATE ROLE {role} LOGIN", f"GRANT ALL ON SCHEMA public TO {role}")
    role_url = postgres_url.replace("://postgres@", f"://{role}@", 1)
    assert role_url != postgres_url
    try:
        Store.open(role_url).close()   # the role's own store
        as_admin(f"REVOKE TEMPORARY ON DATABASE {database} FROM PUBLIC")
        with pytest.raises(StoreError, match="GRANT TEMPORARY ON DATABASE"):
            Store.open(role_url)
        Store.open(role_url, read_only=True).close()
        as_admin(f"GRANT TEMPORARY ON DATABASE {database} TO {role}")
        store = Store.open(role_url)
        assert statuses(store.submit([make_rating(level=1)])) == ["accepted"]
        store.close()
    finally:
        as_admin(f"DROP OWNED BY {role}", f"DROP ROLE {role}")
