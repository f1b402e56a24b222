"""The write side of one batch: inserting ratings and expired prompts (SQLite row by row,
PostgreSQL by unnest and COPY in key order), the daily tally and the follow-ups the new
bad ratings open. `Store.submit` runs these inside its one transaction; a change of how
rows are written lands here, not in what the store answers."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from city_platform.followups import OPEN, Policy, deadlines
from city_platform.records import EXPIRED_PROMPT, Incoming
from city_platform.store.db import POSTGRESQL, SQLITE, Database, PostgresDatabase
from city_platform.workdays import CalendarGap, WorkCalendar

__all__ = ["RATING_COLUMNS", "insert_postgres", "insert_sqlite", "open_followups",
           "rating_key", "sql_bool", "tally"]

RATING_COLUMNS = ("rating_id", "device_id", "region_code", "hall_id", "window_id", "level",
                  "reason", "spontaneous", "case_id", "staff_id", "rated_at", "local_day",
                  "gov", "received_at", "record")


def insert_sqlite(db: Database, valid: list[Incoming], now: datetime) -> set[tuple[str, str]]:
    new: set[tuple[str, str]] = set()
    received = db.ts(now)
    for r in valid:
        if r.kind == EXPIRED_PROMPT:
            inserted = db.execute(
                "INSERT OR IGNORE INTO expired_prompts (prompt_id, device_id, hall_id, "
                "window_id, case_id, expired_at, local_day, received_at, gov, record) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (r.rating_id, r.device_id, r.hall_id, r.window_id, r.case_id or "",
                 r.raw_time, r.local_day.isoformat(), received, int(r.gov), r.record)
            ).rowcount
            table, key = "expired_prompts", "prompt_id"
        else:
            inserted = db.execute(
                "INSERT OR IGNORE INTO ratings (rating_id, device_id, region_code, hall_id, "
                "window_id, level, reason, spontaneous, case_id, staff_id, rated_at, "
                "local_day, gov, received_at, record) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (r.rating_id, r.device_id, r.region_code, r.hall_id, r.window_id, r.level,
                 r.reason, int(r.spontaneous), r.case_id, r.staff_id, db.ts(r.rated_at),
                 r.local_day.isoformat(), int(r.gov), received, r.record)).rowcount
            table, key = "ratings", "rating_id"
        if inserted and rating_key(r) not in new:
            new.add(rating_key(r))
        else:
            db.execute(f"UPDATE {table} SET times_seen = times_seen + 1 "
                            f"WHERE {key} = ? AND device_id = ?",
                            (r.rating_id, r.device_id))
    return new

def insert_postgres(db: Database, valid: list[Incoming], now: datetime) -> set[tuple[str, str]]:
    ratings = [r for r in valid if r.kind != EXPIRED_PROMPT]
    expired = [r for r in valid if r.kind == EXPIRED_PROMPT]
    new: set[tuple[str, str]] = set()
    if ratings:
        first: dict[tuple[str, str], Incoming] = {}
        # In key order: two batches holding the same ratings in another order (two
        # bridges) would otherwise wait for each other's unique-key locks.
        for r in sorted(ratings, key=rating_key):
            first.setdefault(rating_key(r), r)
        rows = db.execute(
            "INSERT INTO rating_ids (rating_id, device_id, rated_at) "
            "SELECT * FROM unnest(?::text[], ?::text[], ?::timestamptz[]) "
            "ON CONFLICT (rating_id, device_id) DO NOTHING RETURNING rating_id, device_id",
            ([r.rating_id for r in first.values()], [r.device_id for r in first.values()],
             [r.rated_at for r in first.values()]), binary=True).fetchall()
        new.update((row[0], row[1]) for row in rows)
        fresh = [r for k, r in first.items() if k in new]
        if fresh:
            # COPY, not INSERT: a batch of 100 is one round trip, written in C.
            assert isinstance(db, PostgresDatabase)
            db.copy("ratings", RATING_COLUMNS,
                         [(r.rating_id, r.device_id, r.region_code, r.hall_id, r.window_id,
                           r.level, r.reason, r.spontaneous, r.case_id, r.staff_id,
                           r.rated_at, r.local_day, r.gov, now, r.record) for r in fresh])
        again = Counter(rating_key(r) for r in ratings)
        for key in new:
            again[key] -= 1
        copies = {k: n for k, n in sorted(again.items()) if n > 0}
        if copies:
            ids, devices = [k[0] for k in copies], [k[1] for k in copies]
            # Lock the rows in key order first: an UPDATE … FROM joins in the
            # planner's order, and two batches updating the same ids in different
            # orders deadlock (found by the concurrent-batches test).
            db.execute(
                "SELECT 1 FROM rating_ids WHERE (rating_id, device_id) IN "
                "(SELECT * FROM unnest(?::text[], ?::text[])) "
                "ORDER BY rating_id, device_id FOR UPDATE", (ids, devices))
            db.execute(
                "UPDATE rating_ids AS i SET times_seen = i.times_seen + d.n FROM "
                "(SELECT * FROM unnest(?::text[], ?::text[], ?::int[]) "
                "AS t(id, device, n)) AS d "
                "WHERE i.rating_id = d.id AND i.device_id = d.device",
                (ids, devices, list(copies.values())))
    for r in sorted(expired, key=rating_key):
        inserted = db.execute(
            "INSERT INTO expired_prompts (prompt_id, device_id, hall_id, window_id, "
            "case_id, expired_at, local_day, received_at, gov, record) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (prompt_id, device_id) DO NOTHING",
            (r.rating_id, r.device_id, r.hall_id, r.window_id, r.case_id or "",
             r.raw_time, r.local_day, now, r.gov, r.record)).rowcount
        if inserted and rating_key(r) not in new:
            new.add(rating_key(r))
        else:
            db.execute("UPDATE expired_prompts SET times_seen = times_seen + 1 "
                            "WHERE prompt_id = ? AND device_id = ?",
                            (r.rating_id, r.device_id))
    return new

def tally(db: Database, fresh: list[Incoming]) -> None:
    """The daily roll-up the report reads (one row per day, window, level, reason and
    spontaneous), kept in the same transaction as the ratings."""
    counts = Counter((r.local_day, r.hall_id, r.window_id, r.level,
                      (r.reason or "") if r.level <= 2 else "", r.spontaneous)
                     for r in fresh if r.kind != EXPIRED_PROMPT)
    if not counts:
        return
    rows = sorted(counts.items())  # a fixed order: concurrent batches cannot deadlock
    if db.dialect == POSTGRESQL:
        db.execute(
            "INSERT INTO daily_tally (local_day, hall_id, window_id, level, reason, "
            "spontaneous, n) SELECT * FROM unnest(?::date[], ?::text[], ?::text[], "
            "?::smallint[], ?::text[], ?::boolean[], ?::bigint[]) ON CONFLICT (local_day, "
            "hall_id, window_id, level, reason, spontaneous) DO UPDATE SET n = "
            "daily_tally.n + excluded.n",
            tuple([k[i] for k, _ in rows] for i in range(6)) + ([n for _, n in rows],),
            binary=True)
        return
    db.executemany(
        "INSERT INTO daily_tally (local_day, hall_id, window_id, level, reason, "
        "spontaneous, n) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (local_day, hall_id, "
        "window_id, level, reason, spontaneous) DO UPDATE SET n = daily_tally.n + "
        "excluded.n",
        [(db.day(k[0]), k[1], k[2], k[3], k[4],
          int(k[5]) if db.dialect == SQLITE else k[5], n) for k, n in rows])

def open_followups(db: Database, fresh: list[Incoming], now: datetime,
                   calendar: WorkCalendar, policy: Policy) -> None:
    rows = []
    for r in fresh:
        if r.kind == EXPIRED_PROMPT or r.level > 2:
            continue
        try:
            due = deadlines(r.local_day, calendar, policy)
            dates: tuple[Any, Any, Any] = (db.day(due.contact),
                                           db.day(due.rectify),
                                           db.day(due.complex))
            error = None
        except CalendarGap as e:
            dates, error = (None, None, None), str(e)
        rows.append((r.rating_id, r.device_id, r.hall_id, r.window_id, r.case_id,
                     sql_bool(db, r.spontaneous), r.level, r.reason, db.ts(r.rated_at),
                     db.day(r.local_day), OPEN, *dates, error, db.ts(now)))
    if isinstance(db, PostgresDatabase):
        # Only ratings this transaction inserted get here: no conflict is possible.
        db.copy("followups", ("rating_id", "device_id", "hall_id", "window_id",
                                   "case_id", "spontaneous", "level", "reason",
                                   "rated_at", "local_day", "state", "contact_due",
                                   "rectify_due", "complex_due", "deadline_error",
                                   "updated_at"), rows)
        return
    db.executemany(
        "INSERT INTO followups (rating_id, device_id, hall_id, window_id, case_id, "
        "spontaneous, level, reason, rated_at, local_day, state, contact_due, "
        "rectify_due, complex_due, deadline_error, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (rating_id, device_id) DO NOTHING", rows)


def sql_bool(db: Database, value: bool) -> Any:
    """A boolean as the dialect stores it (SQLite has none: 0/1)."""
    return int(value) if db.dialect == SQLITE else value


def rating_key(r: Incoming) -> tuple[str, str]:
    """What makes a record one rating: its id and its device (issue 17)."""
    return (r.rating_id, r.device_id)
