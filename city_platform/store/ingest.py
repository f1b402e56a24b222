"""The write side of one batch: the ratings and expired prompts that are new, the daily
tally and the follow-ups the new bad ratings open, and (with an upstream) the queue to
the province. `Store.submit` runs `write_batch` inside its one transaction and answers
from the keys it returns; a change of how rows are written lands here, not in what the
store answers.

PostgreSQL: the batch's distinct ratings go by binary COPY into a session's temporary
staging table, then one statement decides and writes everything (docs/platform.md
"Ingest: where the time goes"). SQLite: one look-up of the batch's ids, then
`executemany` for each table, all under the write lock the transaction holds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from city_platform.followups import OPEN, Policy, deadlines
from city_platform.records import EXPIRED_PROMPT, Incoming
from city_platform.store.db import SQLITE, Database, PostgresDatabase
from city_platform.workdays import CalendarGap, WorkCalendar

__all__ = ["RATING_COLUMNS", "STAGING_SQL", "rating_key", "sql_bool", "write_batch"]

Key = tuple[str, str]

RATING_COLUMNS = ("rating_id", "device_id", "region_code", "hall_id", "window_id", "level",
                  "reason", "spontaneous", "case_id", "staff_id", "rated_at", "local_day",
                  "gov", "received_at", "record")
FOLLOWUP_COLUMNS = ("rating_id", "device_id", "hall_id", "window_id", "case_id",
                    "spontaneous", "level", "reason", "rated_at", "local_day", "state",
                    "contact_due", "rectify_due", "complex_due", "deadline_error",
                    "updated_at")
TALLY_KEY = "local_day, hall_id, window_id, level, reason, spontaneous"

# PostgreSQL: one batch's distinct ratings, with the deadlines a bad one's follow-up gets
# (computed here: the working-day calendar is Python's). Made once per connection;
# emptied by every commit and every rollback.
_STAGED = (("rating_id", "text"), ("device_id", "text"), ("region_code", "text"),
           ("hall_id", "text"), ("window_id", "text"), ("level", "int2"),
           ("reason", "text"), ("spontaneous", "bool"), ("case_id", "text"),
           ("staff_id", "text"), ("rated_at", "timestamptz"), ("local_day", "date"),
           ("gov", "bool"), ("record", "text"), ("contact_due", "date"),
           ("rectify_due", "date"), ("complex_due", "date"), ("deadline_error", "text"))
STAGING_SQL = ("CREATE TEMPORARY TABLE IF NOT EXISTS incoming_ratings ("
               + ", ".join(f"{name} {kind}" for name, kind in _STAGED)
               + ") ON COMMIT DELETE ROWS")


def _postgres_write(upstream: bool) -> str:
    """The statement that writes a staged batch; it returns the keys it inserted.

    `rating_ids` decides: a pair already there (any month, any earlier batch), or an
    expired prompt's, inserts nothing, and a pair another transaction is inserting makes
    this one wait for it and then find it. Only the pairs it returned go on to
    `ratings`, the roll-up and the follow-ups, so each new rating is written once
    everywhere, in this transaction.
    Rows of rating_ids and daily_tally are taken in key order, so concurrent batches
    cannot deadlock."""
    columns = ", ".join(RATING_COLUMNS)
    staged = ", ".join("%(now)s" if c == "received_at" else c for c in RATING_COLUMNS)
    queue = (", queued AS (INSERT INTO upstream (rating_id, device_id, queued_at) "
             "SELECT rating_id, device_id, %(now)s FROM fresh "
             "ON CONFLICT (rating_id, device_id) DO NOTHING)") if upstream else ""
    return (
        "WITH new AS (INSERT INTO rating_ids (rating_id, device_id, rated_at) "
        "SELECT rating_id, device_id, rated_at FROM incoming_ratings i "
        "WHERE NOT EXISTS (SELECT 1 FROM expired_prompts e "
        "WHERE e.prompt_id = i.rating_id AND e.device_id = i.device_id) "
        "ORDER BY rating_id, device_id "
        "ON CONFLICT (rating_id, device_id) DO NOTHING RETURNING rating_id, device_id), "
        "fresh AS MATERIALIZED (SELECT i.* FROM incoming_ratings i "
        "JOIN new USING (rating_id, device_id)), "
        f"stored AS (INSERT INTO ratings ({columns}) SELECT {staged} FROM fresh), "
        f"tallied AS (INSERT INTO daily_tally ({TALLY_KEY}, n) "
        "SELECT local_day, hall_id, window_id, level, "
        "CASE WHEN level <= 2 THEN COALESCE(reason, '') ELSE '' END, spontaneous, count(*) "
        f"FROM fresh GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 2, 3, 4, 5, 6 "
        f"ON CONFLICT ({TALLY_KEY}) DO UPDATE SET n = daily_tally.n + excluded.n), "
        f"opened AS (INSERT INTO followups ({', '.join(FOLLOWUP_COLUMNS)}) "
        "SELECT rating_id, device_id, hall_id, window_id, case_id, spontaneous, level, "
        "reason, rated_at, local_day, %(open)s, contact_due, rectify_due, complex_due, "
        "deadline_error, %(now)s FROM fresh WHERE level <= 2)"
        f"{queue} SELECT rating_id, device_id FROM new")


_POSTGRES_WRITE = {False: _postgres_write(False), True: _postgres_write(True)}


def write_batch(db: Database, valid: Sequence[Incoming], now: datetime,
                calendar: WorkCalendar, policy: Policy, upstream: bool) -> set[Key]:
    """Write what is new of a batch of valid records (inside the caller's transaction);
    return the keys (rating_key) it stored. A record whose key is stored already, or
    comes again later in the batch, adds one to its copy's times_seen.

    A key is one record whatever its kind: a rating and an expired prompt with the same
    id from the same device are one id stored twice otherwise, of which the upstream
    queue (keyed by the pair) would forward one. The first of the batch, or the one
    stored before, is kept; the other is a duplicate and stores nothing (it adds to no
    times_seen: the copies counted are of one kind)."""
    ratings = [r for r in valid if r.kind != EXPIRED_PROMPT]
    expired = [r for r in valid if r.kind == EXPIRED_PROMPT]
    if expired:   # rare: one per unanswered prompt
        first_kind: dict[Key, str] = {}
        for r in valid:
            first_kind.setdefault(rating_key(r), r.kind)
        ratings = [r for r in ratings if first_kind[rating_key(r)] != EXPIRED_PROMPT]
    if isinstance(db, PostgresDatabase):
        new = _ratings_postgres(db, ratings, now, calendar, policy, upstream)
    else:
        new = _ratings_sqlite(db, ratings, now, calendar, policy, upstream)
    new |= _expired_prompts(db, expired, new, now, upstream)
    return new


def _distinct(records: Sequence[Incoming]) -> dict[Key, Incoming]:
    """The first record of each key, in key order."""
    first: dict[Key, Incoming] = {}
    for r in sorted(records, key=rating_key):
        first.setdefault(rating_key(r), r)
    return first


def _copies(records: Sequence[Incoming], new: set[Key]) -> list[tuple[str, str, int]]:
    """(rating_id, device_id, copies) of every key seen more often than stored now, in
    key order."""
    again = Counter(rating_key(r) for r in records)
    for key in new:
        again[key] -= 1
    return [(k[0], k[1], n) for k, n in sorted(again.items()) if n > 0]


def _due(r: Incoming, calendar: WorkCalendar, policy: Policy
         ) -> tuple[date | None, date | None, date | None, str | None]:
    """A bad rating's follow-up deadlines, or why there are none (a year the calendar
    does not know); nothing for a good rating."""
    if r.level > 2:
        return None, None, None, None
    try:
        due = deadlines(r.local_day, calendar, policy)
    except CalendarGap as e:
        return None, None, None, str(e)
    return due.contact, due.rectify, due.complex, None


def _ratings_postgres(db: PostgresDatabase, ratings: list[Incoming], now: datetime,
                      calendar: WorkCalendar, policy: Policy, upstream: bool) -> set[Key]:
    if not ratings:
        return set()
    first = _distinct(ratings)
    # Binary COPY: psycopg formats the rows in C, about half the client CPU of text COPY
    # and a fifth of array parameters (docs/platform.md).
    db.copy("incoming_ratings", [name for name, _ in _STAGED],
            [(r.rating_id, r.device_id, r.region_code, r.hall_id, r.window_id, r.level,
              r.reason, r.spontaneous, r.case_id, r.staff_id, r.rated_at, r.local_day,
              r.gov, r.record, *_due(r, calendar, policy)) for r in first.values()],
            types=[kind for _, kind in _STAGED])
    rows = db.execute(_POSTGRES_WRITE[upstream], {"now": now, "open": OPEN}).fetchall()
    new = {(row[0], row[1]) for row in rows}
    copies = _copies(ratings, new)
    if copies:
        ids, devices, counts = (list(c) for c in zip(*copies, strict=True))
        # Lock the rows in key order first: an UPDATE … FROM joins in the planner's
        # order, and two batches updating the same ids in different orders deadlock
        # (found by the concurrent-batches test).
        db.execute(
            "SELECT 1 FROM rating_ids WHERE (rating_id, device_id) IN "
            "(SELECT * FROM unnest(?::text[], ?::text[])) "
            "ORDER BY rating_id, device_id FOR UPDATE", (ids, devices))
        db.execute(
            "UPDATE rating_ids AS i SET times_seen = i.times_seen + d.n FROM "
            "(SELECT * FROM unnest(?::text[], ?::text[], ?::int[]) "
            "AS t(id, device, n)) AS d "
            "WHERE i.rating_id = d.id AND i.device_id = d.device",
            (ids, devices, counts))
    return new


def _ratings_sqlite(db: Database, ratings: list[Incoming], now: datetime,
                    calendar: WorkCalendar, policy: Policy, upstream: bool) -> set[Key]:
    if not ratings:
        return set()
    # The transaction holds SQLite's write lock: what this finds stored cannot change
    # before the inserts below.
    stored: set[Key] = set()
    ids = sorted({r.rating_id for r in ratings})
    for start in range(0, len(ids), 400):   # twice 400: within any SQLite's 999 parameters
        chunk = ids[start:start + 400]
        marks = ", ".join("?" * len(chunk))
        stored.update(db.execute(
            f"SELECT rating_id, device_id FROM ratings WHERE rating_id IN ({marks}) "
            "UNION ALL SELECT prompt_id, device_id FROM expired_prompts "
            f"WHERE prompt_id IN ({marks})", chunk + chunk).fetchall())
    # In the order received (rowid is what rating_ids() lists by), each key once.
    first: dict[Key, Incoming] = {}
    for r in ratings:
        if rating_key(r) not in stored:
            first.setdefault(rating_key(r), r)
    fresh = list(first.values())
    received = db.ts(now)
    db.executemany(
        f"INSERT INTO ratings ({', '.join(RATING_COLUMNS)}) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(r.rating_id, r.device_id, r.region_code, r.hall_id, r.window_id, r.level,
          r.reason, int(r.spontaneous), r.case_id, r.staff_id, db.ts(r.rated_at),
          r.local_day.isoformat(), int(r.gov), received, r.record) for r in fresh])
    new = {rating_key(r) for r in fresh}
    db.executemany("UPDATE ratings SET times_seen = times_seen + ? "
                   "WHERE rating_id = ? AND device_id = ?",
                   [(n, rid, device) for rid, device, n in _copies(ratings, new)])
    counts = Counter((r.local_day.isoformat(), r.hall_id, r.window_id, r.level,
                      (r.reason or "") if r.level <= 2 else "", int(r.spontaneous))
                     for r in fresh)
    db.executemany(
        f"INSERT INTO daily_tally ({TALLY_KEY}, n) VALUES (?, ?, ?, ?, ?, ?, ?) "
        f"ON CONFLICT ({TALLY_KEY}) DO UPDATE SET n = daily_tally.n + excluded.n",
        [(*k, n) for k, n in sorted(counts.items())])
    followups = []
    for r in fresh:
        if r.level <= 2:
            contact, rectify, complex_, error = _due(r, calendar, policy)
            followups.append((r.rating_id, r.device_id, r.hall_id, r.window_id, r.case_id,
                              int(r.spontaneous), r.level, r.reason, db.ts(r.rated_at),
                              r.local_day.isoformat(), OPEN, _iso(contact), _iso(rectify),
                              _iso(complex_), error, received))
    db.executemany(
        f"INSERT INTO followups ({', '.join(FOLLOWUP_COLUMNS)}) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (rating_id, device_id) DO NOTHING", followups)
    if upstream:
        _queue(db, new, now)
    return new


def _iso(day: date | None) -> str | None:
    return None if day is None else day.isoformat()


def _expired_prompts(db: Database, expired: list[Incoming], taken: set[Key],
                     now: datetime, upstream: bool) -> set[Key]:
    """Gov-profile expired prompts (rare: one per unanswered prompt), row by row; one
    whose key is a rating's (of this batch, in `taken`, or stored) is a duplicate."""
    new: set[Key] = set()
    ratings_table = "ratings" if db.dialect == SQLITE else "rating_ids"
    for r in sorted(expired, key=rating_key):
        if rating_key(r) in taken or db.execute(
                f"SELECT 1 FROM {ratings_table} WHERE rating_id = ? AND device_id = ?",
                rating_key(r)).fetchone() is not None:
            continue
        inserted = db.execute(
            "INSERT INTO expired_prompts (prompt_id, device_id, hall_id, window_id, "
            "case_id, expired_at, local_day, received_at, gov, record) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (prompt_id, device_id) DO NOTHING",
            (r.rating_id, r.device_id, r.hall_id, r.window_id, r.case_id or "",
             r.raw_time, db.day(r.local_day), db.ts(now), sql_bool(db, r.gov), r.record)
        ).rowcount
        if inserted and rating_key(r) not in new:
            new.add(rating_key(r))
        else:
            db.execute("UPDATE expired_prompts SET times_seen = times_seen + 1 "
                       "WHERE prompt_id = ? AND device_id = ?", (r.rating_id, r.device_id))
    if upstream:
        _queue(db, new, now)
    return new


def _queue(db: Database, new: set[Key], now: datetime) -> None:
    """Queue new records for the province."""
    db.executemany(
        "INSERT INTO upstream (rating_id, device_id, queued_at) VALUES (?, ?, ?) "
        "ON CONFLICT (rating_id, device_id) DO NOTHING",
        [(rid, device, db.ts(now)) for rid, device in sorted(new)])


def sql_bool(db: Database, value: bool) -> Any:
    """A boolean as the dialect stores it (SQLite has none: 0/1)."""
    return int(value) if db.dialect == SQLITE else value


def rating_key(r: Incoming) -> Key:
    """What makes a record one rating: its id and its device (issue 17)."""
    return (r.rating_id, r.device_id)
