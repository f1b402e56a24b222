"""PostgreSQL's monthly partitions of `ratings`: one batch whose records' times spread
over the century (a device clock gone wrong, or a hostile client) must not create a
partition per month it names. Every record is still stored and answered as before (a
rating with a valid time is never refused: SPEC §6 allows a clock that is off); the
months beyond the bound go to the default partition `ratings_other`, and move to their
own partition when one is made for them."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from city_platform.store import Store
from tests.support import postgres as pg
from tests.support.ratings import make_rating

postgres_server, postgres_url = pg.postgres_server, pg.postgres_url

CAP = 12     # new partitions one batch may make
AHEAD = 12   # months after this one that ingest makes a partition for


def _partitions(store: Store) -> set[str]:
    return {r[0] for r in store.db.execute(
        "SELECT inhrelid::regclass::text FROM pg_inherits "
        "WHERE inhparent = 'ratings'::regclass").fetchall()}


def _where(store: Store, rating_id: str) -> str:
    (table,) = store.db.execute("SELECT tableoid::regclass::text FROM ratings "
                                "WHERE rating_id = ?", (rating_id,)).fetchone()
    return str(table)


def _at(year: int, month: int) -> str:
    return f"{year:04d}-{month:02d}-15T03:00:00.000Z"


def _month_after(now: datetime, months: int) -> tuple[int, int]:
    index = now.year * 12 + now.month - 1 + months
    return index // 12, index % 12 + 1


def test_one_batch_over_the_century_makes_a_bounded_number_of_partitions(
        postgres_url: str) -> None:
    store = Store.open(postgres_url)
    try:
        before = _partitions(store)
        records = [make_rating(f"421100-HG01-W{i % 20:02d}", rated_at=_at(2000 + i // 12,
                                                                          i % 12 + 1))
                   for i in range(0, 1200, 2)]   # 600 months of 2000..2099
        results = store.submit(records)
        assert [r["status"] for r in results] == ["accepted"] * len(records)
        made = _partitions(store) - before
        assert len(made - {"ratings_other"}) <= CAP, sorted(made)
        assert store.counts()["total"] == len(records)
        (stored,) = store.db.execute("SELECT COUNT(*) FROM ratings").fetchone()
        assert stored == len(records)
        # Sent again: every one a duplicate, wherever it was kept.
        again = store.submit(records)
        assert Counter(r["status"] for r in again) == {"duplicate": len(records)}
    finally:
        store.close()


def test_a_month_far_ahead_is_kept_in_ratings_other_until_its_partition_is_made(
        postgres_url: str) -> None:
    store = Store.open(postgres_url)
    try:
        now = datetime.now(UTC)
        year, month = _month_after(now, AHEAD + 24)   # a clock two years ahead
        ahead = make_rating(level=2, rated_at=_at(year, month))
        assert store.submit([ahead])[0]["status"] == "accepted"
        assert _where(store, ahead["rating_id"]) == "ratings_other"
        # Time passes: the partitions ahead are made, and the row moves into its own.
        store.ensure_partitions_ahead(now + timedelta(days=31 * (AHEAD + 23)))
        assert _where(store, ahead["rating_id"]) == f"ratings_{year:04d}{month:02d}"
        assert store.submit([ahead])[0]["status"] == "duplicate"
        assert store.counts()["total"] == 1
        assert [f.rating_id for f in store.followups()] == [ahead["rating_id"]]
    finally:
        store.close()


def test_a_later_batch_makes_the_months_an_earlier_one_left_in_ratings_other(
        postgres_url: str) -> None:
    store = Store.open(postgres_url)
    try:
        records = [make_rating(rated_at=_at(2001 + i // 12, i % 12 + 1))
                   for i in range(CAP + 8)]
        store.submit(records)
        left = [r for r in records if _where(store, r["rating_id"]) == "ratings_other"]
        assert len(left) == 8
        late = make_rating(rated_at=left[0]["rated_at"])
        assert store.submit([late])[0]["status"] == "accepted"
        own = "ratings_" + left[0]["rated_at"][:7].replace("-", "")
        assert _where(store, late["rating_id"]) == own
        assert _where(store, left[0]["rating_id"]) == own   # moved with it
        assert store.counts()["total"] == CAP + 9
    finally:
        store.close()


def test_a_reopened_store_knows_its_partitions(postgres_url: str) -> None:
    store = Store.open(postgres_url)
    store.submit([make_rating(rated_at=_at(2010, 5))])
    store.close()
    store = Store.open(postgres_url)
    try:
        assert (2010, 5) in store._months
    finally:
        store.close()


@given(st.lists(st.tuples(st.integers(2000, 2099), st.integers(1, 12)), max_size=200),
       st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2090, 1, 1)),
       st.sets(st.tuples(st.integers(2000, 2099), st.integers(1, 12)), max_size=50))
def test_the_months_a_batch_makes_are_few_near_and_the_busiest(
        months: list[tuple[int, int]], now: datetime, known: set[tuple[int, int]]) -> None:
    from city_platform.store import months_to_make

    counts = Counter(months)
    made = months_to_make(counts, known, now.replace(tzinfo=UTC))
    limit = _month_after(now, AHEAD)
    wanted = [m for m in counts if m not in known and m <= limit]
    assert len(made) == min(CAP, len(wanted)) == len(set(made))
    assert set(made) <= set(wanted)
    left = set(wanted) - set(made)
    if left:   # the months with the most records first
        assert min(counts[m] for m in made) >= max(counts[m] for m in left)


def test_the_bounds_are_what_the_docs_say() -> None:
    from city_platform.store import NEW_PARTITIONS_PER_BATCH, PARTITION_MONTHS_AHEAD

    assert (NEW_PARTITIONS_PER_BATCH, PARTITION_MONTHS_AHEAD) == (CAP, AHEAD)


@pytest.mark.parametrize("months_ahead", [AHEAD, AHEAD + 1])
def test_the_edge_of_the_window_ahead(postgres_url: str, months_ahead: int) -> None:
    store = Store.open(postgres_url)
    try:
        year, month = _month_after(datetime.now(UTC), months_ahead)
        record = make_rating(rated_at=f"{year:04d}-{month:02d}-01T00:00:00.000Z")
        store.submit([record])
        expected = (f"ratings_{year:04d}{month:02d}" if months_ahead <= AHEAD
                    else "ratings_other")
        assert _where(store, record["rating_id"]) == expected
    finally:
        store.close()


def test_concurrent_batches_over_the_century_all_store(postgres_url: str) -> None:
    """Batches at once whose months overlap: partitions are made (rows moved out of
    ratings_other) while other batches write; none fails, each record is stored once."""
    import threading

    stores = [Store.open(postgres_url) for _ in range(4)]
    try:
        batches = [[make_rating(f"421100-HG0{b}-W01", rated_at=_at(2000 + (i * 7 + b) % 100,
                                                                  1 + (i + b) % 12))
                    for i in range(60)] for b in range(8)]
        errors: list[BaseException] = []

        def run(k: int) -> None:
            try:
                for batch in batches[k::4]:
                    results = stores[k].submit(batch)
                    assert {r["status"] for r in results} == {"accepted"}
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == []
        assert stores[0].counts()["total"] == 8 * 60
    finally:
        for store in stores:
            store.close()
