"""The platform's store: every rating once, follow-ups, the upstream queue and the window
names, in SQLite (embedded default) or PostgreSQL. `Store.open(url)` migrates; the
methods are the only SQL the rest of the platform runs, besides the report's queries.

A rating is the pair (rating_id, device_id): two devices' records with the same rating_id
are two ratings, each stored and answered "accepted"; only a device's own copy again is
a duplicate (issue 17, SPEC proposal P1, docs/platform.md "De-duplication").
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from broker_bridge.profile import expired_prompt_id
from city_platform.followups import Policy
from city_platform.records import EXPIRED_PROMPT, Incoming, Rejected, read_record
from city_platform.store.db import (
    POSTGRESQL,
    Database,
    StoreError,
    open_database,
)
from city_platform.store.followup_book import AmbiguousRating, Followup, FollowupBook
from city_platform.store.ingest import STAGING_SQL, rating_key, sql_bool, write_batch
from city_platform.store.reads import StoredReads
from city_platform.store.schema import (
    SCHEMA_VERSION,
    check_rating_key,
    check_version,
    migrate,
    store_version,
)
from city_platform.workdays import WorkCalendar
from common.rating import CASE_FIELDS, TIME_RANGE_TEXT, aware_time

__all__ = ["Store", "StoreError", "TimezoneMismatch", "Followup", "AmbiguousRating",
           "SCHEMA_VERSION", "NEW_PARTITIONS_PER_BATCH", "PARTITION_MONTHS_AHEAD",
           "months_to_make"]

DEFAULT_TIMEZONE = "Asia/Shanghai"
# PostgreSQL: partitions exist this many months ahead of today, so that the common case
# never creates one inside the ingest path.
MONTHS_AHEAD = 3
# One batch makes at most this many partitions (the months with the most of its records
# first), and none for a month starting more than PARTITION_MONTHS_AHEAD months after
# the platform's clock: a batch whose times spread over the century (a clock gone wrong,
# a hostile client) would otherwise make a partition per month it names, each under a
# lock on `ratings`. The rest of its records go to the default partition OTHER_PARTITION
# and move to their month's own partition when one is made (docs/platform.md).
NEW_PARTITIONS_PER_BATCH = 12
PARTITION_MONTHS_AHEAD = 12
OTHER_PARTITION = "ratings_other"
_PARTITION_NAME = re.compile(r"ratings_(\d{4})(\d{2})")


class Store(FollowupBook, StoredReads):
    """One store, shared by the threads of a process: opening, ingest, expired prompts,
    the upstream queue and window names here; follow-ups (FollowupBook) and the read
    side (StoredReads) in their own modules."""

    def __init__(self, db: Database, timezone: str = DEFAULT_TIMEZONE,
                 calendar: WorkCalendar | None = None, policy: Policy | None = None,
                 upstream: bool = False) -> None:
        self.db = db
        self.timezone = timezone
        self.tz: tzinfo = ZoneInfo(timezone)
        self.calendar = calendar or WorkCalendar()
        self.policy = policy or Policy()
        self.upstream = upstream   # queue every new record for the province
        self._months: set[tuple[int, int]] = set()
        self._places: dict[str, tuple[str, str, str]] = {}   # device -> stored place
        self._partition_lock = threading.Lock()
        self.requests = 0          # answered POSTs since this process started
        self.rejected = 0          # rejected records since this process started

    @classmethod
    def open(cls, url: str, timezone: str | None = None,
             calendar: WorkCalendar | None = None, policy: Policy | None = None,
             upstream: bool = False, read_only: bool = False) -> Store:
        """Open (creating and migrating unless read_only) the store at `url`.

        The store remembers the time zone it was created with (its local dates depend
        on it): `timezone` None takes that one; another one than it is an error."""
        db = open_database(url, read_only, session=[STAGING_SQL])
        try:
            if read_only:
                version = store_version(db)
                check_version(version, db)
                if version < SCHEMA_VERSION:
                    raise StoreError(f"{db.describe()}: schema version {version}, this "
                                     f"hcp-platform needs {SCHEMA_VERSION}: start "
                                     "hcp-platform run once to upgrade it")
            else:
                migrate(db)
            check_rating_key(db)
            timezone = _store_timezone(db, timezone, read_only)
            store = cls(db, timezone, calendar, policy, upstream)
            if db.dialect == POSTGRESQL and not read_only:
                store.ensure_partitions_ahead(datetime.now(UTC))
            return store
        except BaseException:
            db.close()
            raise

    def close(self) -> None:
        self.db.close()

    # Partitions (PostgreSQL) -----------------------------------------------------------

    def ensure_partitions_ahead(self, now: datetime) -> None:
        if not self._months:   # at open: the default partition, and the months made before
            with self.db.transaction():
                self.db.execute(f"CREATE TABLE IF NOT EXISTS {OTHER_PARTITION} "
                                "PARTITION OF ratings DEFAULT")
            for (name,) in self.db.execute(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c "
                    "ON c.oid = i.inhrelid WHERE i.inhparent = 'ratings'::regclass"):
                found = _PARTITION_NAME.fullmatch(name)
                if found:
                    self._months.add((int(found[1]), int(found[2])))
        year, month = now.year, now.month
        months = []
        for _ in range(MONTHS_AHEAD + 2):  # last month too: late arrivals are common
            months.append((year, month))
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        prev = (now.year - 1, 12) if now.month == 1 else (now.year, now.month - 1)
        self._ensure_months([prev, *months])

    def _ensure_months(self, months: Iterable[tuple[int, int]]) -> None:
        """Make the months' partitions; rows of such a month kept in the default
        partition move into it, in the same transaction (PostgreSQL refuses a partition
        while the default one holds rows of its range)."""
        with self._partition_lock:
            for year, month in sorted(set(months) - self._months):
                name = partition_name(year, month)
                upper = (year + 1, 1) if month == 12 else (year, month + 1)
                lower = f"'{year:04d}-{month:02d}-01 00:00:00+00'"
                higher = f"'{upper[0]:04d}-{upper[1]:02d}-01 00:00:00+00'"
                with self.db.transaction():
                    # No batch writes meanwhile (reads go on): a row of this month written
                    # to the default partition after the move would fail the CREATE.
                    self.db.execute("LOCK TABLE ratings IN SHARE ROW EXCLUSIVE MODE")
                    self.db.execute("CREATE TEMPORARY TABLE moving_ratings (LIKE ratings) "
                                    "ON COMMIT DROP")
                    moved = self.db.execute(
                        f"WITH moved AS (DELETE FROM {OTHER_PARTITION} WHERE rated_at >= "
                        f"{lower} AND rated_at < {higher} RETURNING *) "
                        "INSERT INTO moving_ratings SELECT * FROM moved").rowcount
                    self.db.execute(
                        f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF ratings FOR VALUES "
                        f"FROM ({lower}) TO ({higher})")
                    if moved:
                        self.db.execute("INSERT INTO ratings SELECT * FROM moving_ratings")
                self._months.add((year, month))

    # Ingest ----------------------------------------------------------------------------

    def submit(self, records: Sequence[Any]) -> list[dict[str, Any]]:
        """One result per record, in order: accepted (new, committed), duplicate (the
        same device's rating_id stored before, or earlier in this batch) or rejected.
        Results name records by rating_id (SPEC §9); two records of one batch with the
        same rating_id from two devices are two ratings, both "accepted", each in its
        place. One transaction: when it fails, nothing of the batch is stored and
        StoreError is raised (the client retries the batch)."""
        now = datetime.now(UTC)
        read = [read_record(r, self.tz) for r in records]
        self.requests += 1
        valid = [r for r in read if isinstance(r, Incoming)]
        if self.db.dialect == POSTGRESQL and valid:
            months = [(r.rated_at.year, r.rated_at.month) for r in valid
                      if r.kind != EXPIRED_PROMPT]
            if not self._months.issuperset(months):
                self._ensure_months(months_to_make(Counter(months), self._months, now))
        with self.db.transaction():
            valid, places = self._place(valid, now)
            # The records, the roll-up, the follow-ups and the upstream queue: all or
            # nothing, with this transaction.
            new = write_batch(self.db, valid, now, self.calendar, self.policy,
                              self.upstream)
        self._places.update(places)  # committed: known from now on
        results: list[dict[str, Any]] = []
        answered: set[tuple[str, str]] = set()
        for r in read:
            if isinstance(r, Rejected):
                self.rejected += 1
                results.append({"rating_id": r.rating_id, "status": "rejected",
                                "error": r.error})
            elif rating_key(r) in new and rating_key(r) not in answered:
                answered.add(rating_key(r))
                results.append({"rating_id": r.rating_id, "status": "accepted", "error": None})
            else:
                results.append({"rating_id": r.rating_id, "status": "duplicate",
                                "error": None})
        return results

    def _place(self, valid: list[Incoming], now: datetime
               ) -> tuple[list[Incoming], dict[str, tuple[str, str, str]]]:
        """Remember each rating device's hall and window; give an expired prompt that
        does not name them (the gov profile's default expired record) its device's."""
        latest: dict[str, Incoming] = {}
        for r in valid:
            if r.kind != EXPIRED_PROMPT:
                place = (r.region_code, r.hall_id, r.window_id)
                # A device's place rarely changes: write it when it is new to this
                # process or different (a redundant write is harmless, a missed one not).
                if self._places.get(r.device_id) != place:
                    latest[r.device_id] = r
        self.db.executemany(
            "INSERT INTO devices (device_id, region_code, hall_id, window_id, updated_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (device_id) DO UPDATE SET "
            "region_code = excluded.region_code, hall_id = excluded.hall_id, "
            "window_id = excluded.window_id, updated_at = excluded.updated_at",
            [(r.device_id, r.region_code, r.hall_id, r.window_id, self.db.ts(now))
             for _, r in sorted(latest.items())])
        placed = []
        for r in valid:
            if r.kind == EXPIRED_PROMPT and r.hall_id == "?":
                row = self.db.execute("SELECT hall_id, window_id FROM devices "
                                      "WHERE device_id = ?", (r.device_id,)).fetchone()
                if row is not None:
                    r = r._replace(hall_id=row[0], window_id=row[1])
            placed.append(r)
        return placed, {d: (r.region_code, r.hall_id, r.window_id) for d, r in latest.items()}

    def add_expired_event(self, device_id: str, event: dict[str, Any],
                          now: datetime | None = None) -> bool:
        """A device's `prompt_expired` event, seen on the broker: kept as an expired
        prompt whatever the bridges' profile, under the same id the gov profile gives it
        (so one that also arrives as a gov record is stored once). Not forwarded
        upstream: the province gets expired prompts from `hcp-bridge expired`. Returns
        whether it was new; raises ValueError for an event without a time or case."""
        at, case_id = event.get("at"), event.get("case_id")
        if not isinstance(at, str) or not isinstance(case_id, str) or not case_id:
            raise ValueError("prompt_expired needs at and case_id")
        if len(case_id) > CASE_FIELDS["case_id"] or "\x00" in case_id:
            raise ValueError(f"prompt_expired case_id must be at most "
                             f"{CASE_FIELDS['case_id']} characters, without NUL")
        # aware_time: an ISO-8601 time with an offset, within the range a rating's may
        # be (year 1 or 9999 would overflow converting to the local zone).
        moment = aware_time(at.replace("Z", "+00:00"))
        if moment is None:
            raise ValueError(f"prompt_expired at is not an ISO-8601 time with a UTC offset "
                             f"within {TIME_RANGE_TEXT}: {at[:40]!r}")
        local = moment.astimezone(self.tz)
        prompt_id = expired_prompt_id(device_id, event)
        record = json.dumps({"device_id": device_id, "event": "prompt_expired", "at": at,
                             "case_id": case_id}, ensure_ascii=False, separators=(",", ":"))
        now = now or datetime.now(UTC)
        with self.db.transaction():
            row = self.db.execute("SELECT hall_id, window_id FROM devices WHERE device_id = ?",
                                  (device_id,)).fetchone()
            hall_id, window_id = (row[0], row[1]) if row else ("?", device_id)
            inserted = self.db.execute(
                "INSERT INTO expired_prompts (prompt_id, device_id, hall_id, window_id, "
                "case_id, expired_at, local_day, received_at, gov, record) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (prompt_id, device_id) DO NOTHING",
                (prompt_id, device_id, hall_id, window_id, case_id,
                 local.strftime("%Y-%m-%d %H:%M:%S"), self.db.day(local.date()),
                 self.db.ts(now), sql_bool(self.db, False), record)).rowcount
        return bool(inserted)

    # Upstream ---------------------------------------------------------------------------

    def pending_upstream(self, limit: int) -> list[tuple[str, str, bool, str]]:
        """(id, device_id, posted in the gov names, record JSON) of the oldest records
        the province has not answered yet."""
        rows = self.db.execute(
            "SELECT u.rating_id, u.device_id, COALESCE(r.gov, e.gov), "
            "COALESCE(r.record, e.record) FROM upstream u "
            "LEFT JOIN ratings r ON r.rating_id = u.rating_id AND r.device_id = u.device_id "
            "LEFT JOIN expired_prompts e ON e.prompt_id = u.rating_id "
            "AND e.device_id = u.device_id "
            "WHERE u.status IS NULL ORDER BY u.queued_at, u.rating_id, u.device_id "
            f"LIMIT {int(limit)}").fetchall()
        return [(r[0], r[1], bool(r[2]), r[3]) for r in rows if r[3] is not None]

    def record_upstream(self, answers: Sequence[tuple[str, str, str, str | None]],
                        now: datetime | None = None) -> None:
        """Keep the province's answer per record: (id, device_id, status, error)."""
        at = self.db.ts(now or datetime.now(UTC))
        with self.db.transaction():
            self.db.executemany(
                "UPDATE upstream SET status = ?, error = ?, answered_at = ?, "
                "attempts = attempts + 1 WHERE rating_id = ? AND device_id = ?",
                [(status, error, at, rid, device)
                 for rid, device, status, error in answers])

    def upstream_counts(self) -> dict[str, int]:
        rows = self.db.execute("SELECT COALESCE(status, 'pending'), COUNT(*) FROM upstream "
                               "GROUP BY 1").fetchall()
        return {r[0]: int(r[1]) for r in rows}

    # Windows ----------------------------------------------------------------------------

    def note_window(self, hall_id: str, window_id: str, device_id: str, name: str,
                    now: datetime | None = None) -> None:
        """The window's display name (from the device's retained config topic)."""
        at = self.db.ts(now or datetime.now(UTC))
        with self.db.transaction():
            self.db.execute(
                "INSERT INTO windows (hall_id, window_id, device_id, window_name, updated_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (hall_id, window_id) DO UPDATE SET "
                "device_id = excluded.device_id, window_name = excluded.window_name, "
                "updated_at = excluded.updated_at", (hall_id, window_id, device_id, name, at))


class TimezoneMismatch(StoreError):
    """The config names another time zone than the store was created with."""


def _store_timezone(db: Database, asked: str | None, read_only: bool) -> str:
    row = db.execute("SELECT value FROM meta WHERE key = 'timezone'").fetchone()
    if row is None:
        zone = asked or DEFAULT_TIMEZONE
        if not read_only:
            with db.transaction():
                db.execute("INSERT INTO meta (key, value) VALUES ('timezone', ?) "
                           "ON CONFLICT (key) DO NOTHING", (zone,))
        return zone
    stored = str(row[0])
    if asked is not None and asked != stored:
        raise TimezoneMismatch(f"{db.describe()}: the store's local dates are in {stored}; "
                         f"[store] timezone says {asked}: a store keeps the time zone it "
                         "was created with")
    return stored



def months_to_make(months: Counter[tuple[int, int]], known: set[tuple[int, int]],
                   now: datetime) -> list[tuple[int, int]]:
    """The months of a batch (with their counts of records) to make a partition for:
    not made yet, starting at most PARTITION_MONTHS_AHEAD months after `now`, the ones
    with the most records first, at most NEW_PARTITIONS_PER_BATCH."""
    index = now.year * 12 + now.month - 1 + PARTITION_MONTHS_AHEAD
    limit = (index // 12, index % 12 + 1)
    wanted = [m for m in months if m not in known and m <= limit]
    wanted.sort(key=lambda m: (-months[m], m))
    return wanted[:NEW_PARTITIONS_PER_BATCH]


def partition_name(year: int, month: int) -> str:
    return f"ratings_{year:04d}{month:02d}"


