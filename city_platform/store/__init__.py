"""The platform's store: every rating once, follow-ups, the upstream queue and the window
names, in SQLite (embedded default) or PostgreSQL. `Store.open(url)` migrates; the
methods are the only SQL the rest of the platform runs, besides the report's queries.

A rating is the pair (rating_id, device_id): two devices' records with the same rating_id
are two ratings, each stored and answered "accepted"; only a device's own copy again is
a duplicate (issue 17, SPEC proposal P1, docs/platform.md "De-duplication").
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from broker_bridge.profile import expired_prompt_id
from city_platform.followups import (
    CLOSED,
    CONTACTED,
    OPEN,
    RECTIFIED,
    FollowupError,
    Policy,
    check_move,
    deadlines,
)
from city_platform.records import EXPIRED_PROMPT, Incoming, Rejected, read_record
from city_platform.store.db import (
    POSTGRESQL,
    SQLITE,
    Database,
    PostgresDatabase,
    StoreError,
    as_day,
    as_time,
    open_database,
)
from city_platform.store.schema import (
    SCHEMA_VERSION,
    check_rating_key,
    check_version,
    migrate,
    store_version,
)
from city_platform.workdays import CalendarGap, WorkCalendar

__all__ = ["Store", "StoreError", "TimezoneMismatch", "Followup", "AmbiguousRating",
           "SCHEMA_VERSION"]

DEFAULT_TIMEZONE = "Asia/Shanghai"
# PostgreSQL: partitions exist this many months ahead of today, so that the common case
# never creates one inside the ingest path.
MONTHS_AHEAD = 3


class AmbiguousRating(FollowupError):
    """A rating_id that names ratings of more than one device: say which device."""

    def __init__(self, rating_id: str, devices: Sequence[str]) -> None:
        self.rating_id = rating_id
        self.devices = list(devices)
        super().__init__(f"rating {rating_id} names ratings of {len(self.devices)} devices "
                         f"({', '.join(self.devices)}): say which one (followups set "
                         "--device DEVICE_ID; in the API ?device=DEVICE_ID)")


@dataclass(frozen=True)
class Followup:
    rating_id: str
    device_id: str
    hall_id: str
    window_id: str
    case_id: str | None
    spontaneous: bool
    level: int
    reason: str | None
    rated_at: datetime
    local_day: date
    complex: bool
    state: str
    contact_due: date | None
    rectify_due: date | None
    complex_due: date | None
    deadline_error: str | None
    note: str | None
    updated_by: str | None
    alerted: str

    def as_json(self) -> dict[str, Any]:
        """The line of `followups list --json` (SPEC §11 names; more fields may follow)."""
        return {
            "rating_id": self.rating_id, "device_id": self.device_id,
            "case_id": self.case_id, "level": self.level, "state": self.state,
            "rated_at": self.rated_at.astimezone(UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "contact_due": _iso(self.contact_due), "rectify_due": _iso(self.rectify_due),
            "complex_due": _iso(self.complex_due),
            "hall_id": self.hall_id, "window_id": self.window_id,
            "spontaneous": self.spontaneous, "complex": self.complex, "reason": self.reason,
            "deadline_error": self.deadline_error, "note": self.note,
            "updated_by": self.updated_by,
        }


def _iso(day: date | None) -> str | None:
    return None if day is None else day.isoformat()


RATING_COLUMNS = ("rating_id", "device_id", "region_code", "hall_id", "window_id", "level",
                  "reason", "spontaneous", "case_id", "staff_id", "rated_at", "local_day",
                  "gov", "received_at", "record")
FOLLOWUP_COLUMNS = ("rating_id, device_id, hall_id, window_id, case_id, spontaneous, level, "
                    "reason, rated_at, local_day, complex, state, contact_due, rectify_due, "
                    "complex_due, deadline_error, note, updated_by, alerted")


def _followup(row: Sequence[Any]) -> Followup:
    def day(v: Any) -> date | None:
        return None if v is None else as_day(v)
    return Followup(row[0], row[1], row[2], row[3], row[4], bool(row[5]), int(row[6]), row[7],
                    as_time(row[8]), as_day(row[9]), bool(row[10]), row[11], day(row[12]),
                    day(row[13]), day(row[14]), row[15], row[16], row[17], row[18])


class Store:
    """One store, shared by the threads of a process."""

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
        db = open_database(url, read_only)
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
        year, month = now.year, now.month
        months = []
        for _ in range(MONTHS_AHEAD + 2):  # last month too: late arrivals are common
            months.append((year, month))
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        prev = (now.year - 1, 12) if now.month == 1 else (now.year, now.month - 1)
        self._ensure_months([prev, *months])

    def _ensure_months(self, months: Sequence[tuple[int, int]]) -> None:
        with self._partition_lock:
            for year, month in sorted(set(months) - self._months):
                name = partition_name(year, month)
                upper = (year + 1, 1) if month == 12 else (year, month + 1)
                with self.db.transaction():
                    self.db.execute(
                        f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF ratings FOR VALUES "
                        f"FROM ('{year:04d}-{month:02d}-01 00:00:00+00') "
                        f"TO ('{upper[0]:04d}-{upper[1]:02d}-01 00:00:00+00')")
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
            self._ensure_months([(r.rated_at.year, r.rated_at.month) for r in valid
                                 if r.kind != EXPIRED_PROMPT])
        with self.db.transaction():
            valid, places = self._place(valid, now)
            new = (self._insert_postgres(valid, now) if self.db.dialect == POSTGRESQL
                   else self._insert_sqlite(valid, now))
            # Each new record once, though a batch may carry it twice.
            fresh = list({_key(r): r for r in reversed(valid) if _key(r) in new}
                         .values())[::-1]
            self._tally(fresh)
            self._open_followups(fresh, now)
            if self.upstream:
                self.db.executemany(
                    "INSERT INTO upstream (rating_id, device_id, queued_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (rating_id, device_id) DO NOTHING",
                    [(r.rating_id, r.device_id, self.db.ts(now)) for r in fresh])
        self._places.update(places)  # committed: known from now on
        results: list[dict[str, Any]] = []
        answered: set[tuple[str, str]] = set()
        for r in read:
            if isinstance(r, Rejected):
                self.rejected += 1
                results.append({"rating_id": r.rating_id, "status": "rejected",
                                "error": r.error})
            elif _key(r) in new and _key(r) not in answered:
                answered.add(_key(r))
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

    def _insert_sqlite(self, valid: list[Incoming], now: datetime) -> set[tuple[str, str]]:
        new: set[tuple[str, str]] = set()
        received = self.db.ts(now)
        for r in valid:
            if r.kind == EXPIRED_PROMPT:
                inserted = self.db.execute(
                    "INSERT OR IGNORE INTO expired_prompts (prompt_id, device_id, hall_id, "
                    "window_id, case_id, expired_at, local_day, received_at, gov, record) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (r.rating_id, r.device_id, r.hall_id, r.window_id, r.case_id or "",
                     r.raw_time, r.local_day.isoformat(), received, int(r.gov), r.record)
                ).rowcount
                table, key = "expired_prompts", "prompt_id"
            else:
                inserted = self.db.execute(
                    "INSERT OR IGNORE INTO ratings (rating_id, device_id, region_code, hall_id, "
                    "window_id, level, reason, spontaneous, case_id, staff_id, rated_at, "
                    "local_day, gov, received_at, record) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (r.rating_id, r.device_id, r.region_code, r.hall_id, r.window_id, r.level,
                     r.reason, int(r.spontaneous), r.case_id, r.staff_id, self.db.ts(r.rated_at),
                     r.local_day.isoformat(), int(r.gov), received, r.record)).rowcount
                table, key = "ratings", "rating_id"
            if inserted and _key(r) not in new:
                new.add(_key(r))
            else:
                self.db.execute(f"UPDATE {table} SET times_seen = times_seen + 1 "
                                f"WHERE {key} = ? AND device_id = ?",
                                (r.rating_id, r.device_id))
        return new

    def _insert_postgres(self, valid: list[Incoming], now: datetime) -> set[tuple[str, str]]:
        ratings = [r for r in valid if r.kind != EXPIRED_PROMPT]
        expired = [r for r in valid if r.kind == EXPIRED_PROMPT]
        new: set[tuple[str, str]] = set()
        if ratings:
            first: dict[tuple[str, str], Incoming] = {}
            # In key order: two batches holding the same ratings in another order (two
            # bridges) would otherwise wait for each other's unique-key locks.
            for r in sorted(ratings, key=_key):
                first.setdefault(_key(r), r)
            rows = self.db.execute(
                "INSERT INTO rating_ids (rating_id, device_id, rated_at) "
                "SELECT * FROM unnest(?::text[], ?::text[], ?::timestamptz[]) "
                "ON CONFLICT (rating_id, device_id) DO NOTHING RETURNING rating_id, device_id",
                ([r.rating_id for r in first.values()], [r.device_id for r in first.values()],
                 [r.rated_at for r in first.values()]), binary=True).fetchall()
            new.update((row[0], row[1]) for row in rows)
            fresh = [r for k, r in first.items() if k in new]
            if fresh:
                # COPY, not INSERT: a batch of 100 is one round trip, written in C.
                assert isinstance(self.db, PostgresDatabase)
                self.db.copy("ratings", RATING_COLUMNS,
                             [(r.rating_id, r.device_id, r.region_code, r.hall_id, r.window_id,
                               r.level, r.reason, r.spontaneous, r.case_id, r.staff_id,
                               r.rated_at, r.local_day, r.gov, now, r.record) for r in fresh])
            again = Counter(_key(r) for r in ratings)
            for key in new:
                again[key] -= 1
            copies = {k: n for k, n in sorted(again.items()) if n > 0}
            if copies:
                ids, devices = [k[0] for k in copies], [k[1] for k in copies]
                # Lock the rows in key order first: an UPDATE … FROM joins in the
                # planner's order, and two batches updating the same ids in different
                # orders deadlock (found by the concurrent-batches test).
                self.db.execute(
                    "SELECT 1 FROM rating_ids WHERE (rating_id, device_id) IN "
                    "(SELECT * FROM unnest(?::text[], ?::text[])) "
                    "ORDER BY rating_id, device_id FOR UPDATE", (ids, devices))
                self.db.execute(
                    "UPDATE rating_ids AS i SET times_seen = i.times_seen + d.n FROM "
                    "(SELECT * FROM unnest(?::text[], ?::text[], ?::int[]) "
                    "AS t(id, device, n)) AS d "
                    "WHERE i.rating_id = d.id AND i.device_id = d.device",
                    (ids, devices, list(copies.values())))
        for r in sorted(expired, key=_key):
            inserted = self.db.execute(
                "INSERT INTO expired_prompts (prompt_id, device_id, hall_id, window_id, "
                "case_id, expired_at, local_day, received_at, gov, record) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (prompt_id, device_id) DO NOTHING",
                (r.rating_id, r.device_id, r.hall_id, r.window_id, r.case_id or "",
                 r.raw_time, r.local_day, now, r.gov, r.record)).rowcount
            if inserted and _key(r) not in new:
                new.add(_key(r))
            else:
                self.db.execute("UPDATE expired_prompts SET times_seen = times_seen + 1 "
                                "WHERE prompt_id = ? AND device_id = ?",
                                (r.rating_id, r.device_id))
        return new

    def _tally(self, fresh: list[Incoming]) -> None:
        """The daily roll-up the report reads (one row per day, window, level, reason and
        spontaneous), kept in the same transaction as the ratings."""
        counts = Counter((r.local_day, r.hall_id, r.window_id, r.level,
                          (r.reason or "") if r.level <= 2 else "", r.spontaneous)
                         for r in fresh if r.kind != EXPIRED_PROMPT)
        if not counts:
            return
        rows = sorted(counts.items())  # a fixed order: concurrent batches cannot deadlock
        if self.db.dialect == POSTGRESQL:
            self.db.execute(
                "INSERT INTO daily_tally (local_day, hall_id, window_id, level, reason, "
                "spontaneous, n) SELECT * FROM unnest(?::date[], ?::text[], ?::text[], "
                "?::smallint[], ?::text[], ?::boolean[], ?::bigint[]) ON CONFLICT (local_day, "
                "hall_id, window_id, level, reason, spontaneous) DO UPDATE SET n = "
                "daily_tally.n + excluded.n",
                tuple([k[i] for k, _ in rows] for i in range(6)) + ([n for _, n in rows],),
                binary=True)
            return
        self.db.executemany(
            "INSERT INTO daily_tally (local_day, hall_id, window_id, level, reason, "
            "spontaneous, n) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (local_day, hall_id, "
            "window_id, level, reason, spontaneous) DO UPDATE SET n = daily_tally.n + "
            "excluded.n",
            [(self.db.day(k[0]), k[1], k[2], k[3], k[4],
              int(k[5]) if self.db.dialect == SQLITE else k[5], n) for k, n in rows])

    def _open_followups(self, fresh: list[Incoming], now: datetime) -> None:
        rows = []
        for r in fresh:
            if r.kind == EXPIRED_PROMPT or r.level > 2:
                continue
            try:
                due = deadlines(r.local_day, self.calendar, self.policy)
                dates: tuple[Any, Any, Any] = (self.db.day(due.contact),
                                               self.db.day(due.rectify),
                                               self.db.day(due.complex))
                error = None
            except CalendarGap as e:
                dates, error = (None, None, None), str(e)
            rows.append((r.rating_id, r.device_id, r.hall_id, r.window_id, r.case_id,
                         self._bool(r.spontaneous), r.level, r.reason, self.db.ts(r.rated_at),
                         self.db.day(r.local_day), OPEN, *dates, error, self.db.ts(now)))
        if isinstance(self.db, PostgresDatabase):
            # Only ratings this transaction inserted get here: no conflict is possible.
            self.db.copy("followups", ("rating_id", "device_id", "hall_id", "window_id",
                                       "case_id", "spontaneous", "level", "reason",
                                       "rated_at", "local_day", "state", "contact_due",
                                       "rectify_due", "complex_due", "deadline_error",
                                       "updated_at"), rows)
            return
        self.db.executemany(
            "INSERT INTO followups (rating_id, device_id, hall_id, window_id, case_id, "
            "spontaneous, level, reason, rated_at, local_day, state, contact_due, "
            "rectify_due, complex_due, deadline_error, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (rating_id, device_id) DO NOTHING", rows)

    def _bool(self, value: bool) -> Any:
        return int(value) if self.db.dialect == SQLITE else value

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
        try:
            moment = datetime.fromisoformat(at.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"prompt_expired at is not ISO-8601: {at[:40]!r}") from None
        if moment.tzinfo is None:
            raise ValueError("prompt_expired at has no UTC offset")
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
                 self.db.ts(now), self._bool(False), record)).rowcount
        return bool(inserted)

    # What is stored ---------------------------------------------------------------------

    def counts(self) -> dict[str, Any]:
        db = self.db
        total = db.execute("SELECT COUNT(*) FROM ratings").fetchone()[0]
        copies_table = "rating_ids" if db.dialect == POSTGRESQL else "ratings"
        copies = db.execute(f"SELECT COALESCE(SUM(times_seen), 0) FROM {copies_table}"
                            ).fetchone()[0]
        by_device = {d: n for d, n in db.execute(
            "SELECT device_id, COUNT(*) FROM ratings GROUP BY device_id ORDER BY device_id")}
        by_level = {str(level): n for level, n in db.execute(
            "SELECT level, COUNT(*) FROM ratings GROUP BY level ORDER BY level DESC")}
        expired = db.execute("SELECT COUNT(*) FROM expired_prompts").fetchone()[0]
        return {
            "total": total,
            "good": sum(by_level.get(str(v), 0) for v in (3, 4, 5)),
            "bad": sum(by_level.get(str(v), 0) for v in (1, 2)),
            "by_level": by_level,
            "by_device": by_device,
            "duplicates": int(copies) - total,  # copies received again (stored once)
            "rejected": self.rejected,
            "requests": self.requests,
            "expired_prompts": expired,
        }

    def rating_ids(self, device_id: str | None = None) -> list[str]:
        """The stored ratings' ids in the order received, of one device or of all (where
        two devices' ratings with the same rating_id are both listed)."""
        order = "received_at, rating_id" if self.db.dialect == POSTGRESQL else "rowid"
        if device_id is None:
            rows = self.db.execute(f"SELECT rating_id FROM ratings ORDER BY {order}")
        else:
            rows = self.db.execute(f"SELECT rating_id FROM ratings WHERE device_id = ? "
                                   f"ORDER BY {order}", (device_id,))
        return [r[0] for r in rows.fetchall()]

    def times_seen(self) -> dict[str, dict[str, int]]:
        """device_id → rating_id → copies received (stored once): a rating is the pair."""
        table = "rating_ids" if self.db.dialect == POSTGRESQL else "ratings"
        seen: dict[str, dict[str, int]] = {}
        for rating_id, device_id, n in self.db.execute(
                f"SELECT rating_id, device_id, times_seen FROM {table} "
                "ORDER BY device_id, rating_id").fetchall():
            seen.setdefault(device_id, {})[rating_id] = int(n)
        return seen

    # Follow-ups -------------------------------------------------------------------------

    def followups(self, state: str | None = None, hall_id: str | None = None,
                  rating_id: str | None = None, active: bool = False,
                  limit: int = 100_000, device_id: str | None = None) -> list[Followup]:
        clauses, args = [], []
        if state is not None:
            clauses.append("state = ?")
            args.append(state)
        if active:
            clauses.append("state <> 'closed'")
        if hall_id is not None:
            clauses.append("hall_id = ?")
            args.append(hall_id)
        if rating_id is not None:
            clauses.append("rating_id = ?")
            args.append(rating_id)
        if device_id is not None:
            clauses.append("device_id = ?")
            args.append(device_id)
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        rows = self.db.execute(f"SELECT {FOLLOWUP_COLUMNS} FROM followups{where} "
                               f"ORDER BY rated_at, rating_id, device_id LIMIT {int(limit)}",
                               args)
        return [_followup(r) for r in rows.fetchall()]

    def followups_to_settle(self) -> list[Followup]:
        """Closed follow-ups whose alerts may still need a resolve (see alerts.Raised)."""
        rows = self.db.execute(f"SELECT {FOLLOWUP_COLUMNS} FROM followups WHERE state = "
                               "'closed' AND alerted <> '' AND substr(alerted, 1, 1) <> '#'")
        return [_followup(r) for r in rows.fetchall()]

    def followup(self, rating_id: str, device_id: str | None = None) -> Followup | None:
        """The follow-up of rating `rating_id` (of `device_id`). Without a device, a
        rating_id that names two devices' follow-ups raises AmbiguousRating: a guess
        could move another hall's case."""
        found = self.followups(rating_id=rating_id, device_id=device_id)
        if len(found) > 1:
            raise AmbiguousRating(rating_id, sorted(f.device_id for f in found))
        return found[0] if found else None

    def move_followup(self, rating_id: str, target: str, note: str | None, by: str,
                      complex_case: bool | None = None,
                      now: datetime | None = None, device_id: str | None = None) -> Followup:
        """Move one follow-up along (raises FollowupError with the reason; its subclass
        AmbiguousRating when rating_id names two devices' follow-ups and device_id is
        None)."""
        now = now or datetime.now(UTC)
        today = now.astimezone(self.tz).date()
        with self.db.transaction():
            current = self.followup(rating_id, device_id)
            if current is None:
                on = "" if device_id is None else f" of device {device_id}"
                raise FollowupError(f"no follow-up for rating {rating_id}{on}")
            if target != current.state or complex_case is None:
                check_move(current.state, target, note, by)
            sets = ["state = ?", "updated_by = ?", "updated_at = ?"]
            args: list[Any] = [target, by, self.db.ts(now)]
            if note is not None:
                sets.append("note = ?")
                args.append(note)
            if complex_case is not None:
                sets.append("complex = ?")
                args.append(self._bool(complex_case))
            day = self.db.day(today)
            for state, column in ((CONTACTED, "contacted_day"), (RECTIFIED, "rectified_day"),
                                  (CLOSED, "closed_day")):
                # Skipping a step records it as done now: closed at once = contacted and
                # rectified now, for the rates.
                if _index(target) >= _index(state) > _index(current.state):
                    sets.append(f"{column} = ?")
                    args.append(day)
            self.db.execute(f"UPDATE followups SET {', '.join(sets)} "
                            "WHERE rating_id = ? AND device_id = ?",
                            (*args, rating_id, current.device_id))
            self.db.execute(
                "INSERT INTO followup_log (rating_id, device_id, at, from_state, to_state, "
                "note, by_whom) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (rating_id, current.device_id, self.db.ts(now), current.state, target, note,
                 by))
        moved = self.followup(rating_id, current.device_id)
        assert moved is not None
        return moved

    def mark_alerted(self, rating_id: str, device_id: str, key: str) -> None:
        with self.db.transaction():
            self.db.execute("UPDATE followups SET alerted = ? WHERE rating_id = ? AND "
                            "device_id = ?", (key, rating_id, device_id))

    def refresh_deadlines(self) -> int:
        """Compute the deadlines the calendar could not before (a year added to the
        config since); return how many are now known."""
        rows = self.db.execute("SELECT rating_id, device_id, local_day FROM followups "
                               "WHERE deadline_error IS NOT NULL").fetchall()
        fixed = 0
        for rating_id, device_id, day in rows:
            try:
                due = deadlines(as_day(day), self.calendar, self.policy)
            except CalendarGap:
                continue
            with self.db.transaction():
                self.db.execute(
                    "UPDATE followups SET contact_due = ?, rectify_due = ?, complex_due = ?, "
                    "deadline_error = NULL WHERE rating_id = ? AND device_id = ?",
                    (self.db.day(due.contact), self.db.day(due.rectify),
                     self.db.day(due.complex), rating_id, device_id))
            fixed += 1
        return fixed

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

    def window_names(self) -> dict[tuple[str, str], str]:
        return {(r[0], r[1]): r[2] for r in self.db.execute(
            "SELECT hall_id, window_id, window_name FROM windows").fetchall()}

    def today_by_device(self, today: date) -> dict[str, tuple[int, int]]:
        """device_id → (ratings today, good ones), for the dashboard."""
        rows = self.db.execute(
            "SELECT device_id, COUNT(*), SUM(CASE WHEN level >= 3 THEN 1 ELSE 0 END) "
            "FROM ratings WHERE local_day = ? GROUP BY device_id",
            (self.db.day(today),)).fetchall()
        return {r[0]: (int(r[1]), int(r[2] or 0)) for r in rows}

    def latest_staff(self, today: date) -> dict[str, str]:
        """device_id → the clerk named by its latest rating today (name, or 工号)."""
        if self.db.dialect == SQLITE:
            sql = ("SELECT device_id, json_extract(record, '$.staff.staff_name'), staff_id, "
                   "MAX(rated_at) FROM ratings WHERE local_day = ? GROUP BY device_id")
        else:
            sql = ("SELECT DISTINCT ON (device_id) device_id, "
                   "(record::json)->'staff'->>'staff_name', staff_id FROM ratings "
                   "WHERE local_day = ? ORDER BY device_id, rated_at DESC")
        out = {}
        for row in self.db.execute(sql, (self.db.day(today),)).fetchall():
            name = row[1] or row[2]
            if name:
                out[row[0]] = str(name)
        return out

    def device_place(self, device_id: str) -> tuple[str, str] | None:
        row = self.db.execute("SELECT hall_id, window_id FROM devices WHERE device_id = ?",
                              (device_id,)).fetchone()
        return None if row is None else (row[0], row[1])

    def devices(self) -> dict[str, tuple[str, str]]:
        """Every device that sent a rating: device_id → (hall, window) of its latest."""
        rows = self.db.execute("SELECT device_id, hall_id, window_id FROM devices").fetchall()
        return {r[0]: (r[1], r[2]) for r in rows}


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


def _key(r: Incoming) -> tuple[str, str]:
    """What makes a record one rating: its id and its device (issue 17)."""
    return (r.rating_id, r.device_id)


def _index(state: str) -> int:
    return (OPEN, CONTACTED, RECTIFIED, CLOSED).index(state)


def partition_name(year: int, month: int) -> str:
    return f"ratings_{year:04d}{month:02d}"


