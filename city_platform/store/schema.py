"""The store's schema, as numbered migrations per dialect, and the code that applies them.

A store remembers its version in `meta`. Opening one applies the migrations it lacks,
each in its own transaction (PostgreSQL: under an advisory lock, so two platforms
starting together do not both migrate). A store newer than this code is refused: an
older platform would misread tables it does not know.

A rating is identified by the pair (rating_id, device_id), never by rating_id alone: a
device that sends another device's rating_id (a bug, a clone, an attacker) must not make
the genuine rating a duplicate (issue 17, SPEC proposal P1). Every table keyed by a
rating — ratings, followups, followup_log, upstream, expired_prompts — is keyed by the
pair, rating_id first, so that a look-up by rating_id alone (`followups set RATING_ID`)
is a prefix of the primary key's index.

PostgreSQL keeps ratings in a table partitioned by month of `rated_at` (UTC months).
A unique key of a partitioned table must include the partition key, so the pair alone
cannot be unique there; the small table `rating_ids` (not partitioned) is the one place
the pair is unique, and an INSERT … ON CONFLICT DO NOTHING into it decides accepted or
duplicate, whichever month the copy claims (docs/platform.md).
"""

from __future__ import annotations

from city_platform.store.db import POSTGRESQL, SQLITE, Database, StoreError

SCHEMA_VERSION = 1


class StoreTooNew(StoreError):
    """The store was migrated by a newer hcp-platform."""


_SQLITE_V1 = [
    """CREATE TABLE ratings (
        rating_id   TEXT NOT NULL,
        device_id   TEXT NOT NULL,
        region_code TEXT NOT NULL,
        hall_id     TEXT NOT NULL,
        window_id   TEXT NOT NULL,
        level       INTEGER NOT NULL,
        reason      TEXT,
        spontaneous INTEGER NOT NULL,
        case_id     TEXT,
        staff_id    TEXT,
        rated_at    TEXT NOT NULL,
        local_day   TEXT NOT NULL,
        gov         INTEGER NOT NULL,
        received_at TEXT NOT NULL,
        times_seen  INTEGER NOT NULL DEFAULT 1,
        record      TEXT NOT NULL,
        PRIMARY KEY (rating_id, device_id))""",
    "CREATE INDEX ratings_day ON ratings (local_day, hall_id, window_id)",
    "CREATE INDEX ratings_device ON ratings (device_id)",
    """CREATE TABLE expired_prompts (
        prompt_id   TEXT NOT NULL,
        device_id   TEXT NOT NULL,
        hall_id     TEXT NOT NULL,
        window_id   TEXT NOT NULL,
        case_id     TEXT NOT NULL,
        expired_at  TEXT NOT NULL,
        local_day   TEXT NOT NULL,
        received_at TEXT NOT NULL,
        times_seen  INTEGER NOT NULL DEFAULT 1,
        gov         INTEGER NOT NULL,
        record      TEXT NOT NULL,
        PRIMARY KEY (prompt_id, device_id))""",
    "CREATE INDEX expired_day ON expired_prompts (local_day, hall_id, window_id)",
    """CREATE TABLE daily_tally (
        local_day   TEXT NOT NULL,
        hall_id     TEXT NOT NULL,
        window_id   TEXT NOT NULL,
        level       INTEGER NOT NULL,
        reason      TEXT NOT NULL,
        spontaneous INTEGER NOT NULL,
        n           INTEGER NOT NULL,
        PRIMARY KEY (local_day, hall_id, window_id, level, reason, spontaneous))""",
    """CREATE TABLE followups (
        rating_id      TEXT NOT NULL,
        device_id      TEXT NOT NULL,
        hall_id        TEXT NOT NULL,
        window_id      TEXT NOT NULL,
        case_id        TEXT,
        spontaneous    INTEGER NOT NULL,
        level          INTEGER NOT NULL,
        reason         TEXT,
        rated_at       TEXT NOT NULL,
        local_day      TEXT NOT NULL,
        complex        INTEGER NOT NULL DEFAULT 0,
        state          TEXT NOT NULL,
        contact_due    TEXT,
        rectify_due    TEXT,
        complex_due    TEXT,
        deadline_error TEXT,
        contacted_day  TEXT,
        rectified_day  TEXT,
        closed_day     TEXT,
        note           TEXT,
        updated_by     TEXT,
        updated_at     TEXT,
        alerted        TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (rating_id, device_id))""",
    "CREATE INDEX followups_state ON followups (state, hall_id)",
    "CREATE INDEX followups_day ON followups (local_day, hall_id, window_id)",
    """CREATE TABLE followup_log (
        id         INTEGER PRIMARY KEY,
        rating_id  TEXT NOT NULL,
        device_id  TEXT NOT NULL,
        at         TEXT NOT NULL,
        from_state TEXT NOT NULL,
        to_state   TEXT NOT NULL,
        note       TEXT,
        by_whom    TEXT NOT NULL)""",
    """CREATE TABLE upstream (
        rating_id   TEXT NOT NULL,
        device_id   TEXT NOT NULL,
        queued_at   TEXT NOT NULL,
        attempts    INTEGER NOT NULL DEFAULT 0,
        status      TEXT,
        error       TEXT,
        answered_at TEXT,
        PRIMARY KEY (rating_id, device_id))""",
    "CREATE INDEX upstream_pending ON upstream (queued_at) WHERE status IS NULL",
    """CREATE TABLE devices (
        device_id   TEXT PRIMARY KEY,
        region_code TEXT NOT NULL,
        hall_id     TEXT NOT NULL,
        window_id   TEXT NOT NULL,
        updated_at  TEXT NOT NULL)""",
    """CREATE TABLE windows (
        hall_id     TEXT NOT NULL,
        window_id   TEXT NOT NULL,
        device_id   TEXT NOT NULL,
        window_name TEXT NOT NULL,
        updated_at  TEXT NOT NULL,
        PRIMARY KEY (hall_id, window_id))""",
]

_PG_V1 = [
    """CREATE TABLE rating_ids (
        rating_id  text NOT NULL,
        device_id  text NOT NULL,
        rated_at   timestamptz NOT NULL,
        times_seen integer NOT NULL DEFAULT 1,
        PRIMARY KEY (rating_id, device_id))""",
    """CREATE TABLE ratings (
        rating_id   text NOT NULL,
        device_id   text NOT NULL,
        region_code text NOT NULL,
        hall_id     text NOT NULL,
        window_id   text NOT NULL,
        level       smallint NOT NULL,
        reason      text,
        spontaneous boolean NOT NULL,
        case_id     text,
        staff_id    text,
        rated_at    timestamptz NOT NULL,
        local_day   date NOT NULL,
        gov         boolean NOT NULL,
        received_at timestamptz NOT NULL,
        record      text NOT NULL,
        PRIMARY KEY (rating_id, device_id, rated_at)) PARTITION BY RANGE (rated_at)""",
    "CREATE INDEX ratings_day ON ratings (local_day, hall_id, window_id)",
    "CREATE INDEX ratings_device ON ratings (device_id)",
    """CREATE TABLE expired_prompts (
        prompt_id   text NOT NULL,
        device_id   text NOT NULL,
        hall_id     text NOT NULL,
        window_id   text NOT NULL,
        case_id     text NOT NULL,
        expired_at  text NOT NULL,
        local_day   date NOT NULL,
        received_at timestamptz NOT NULL,
        times_seen  integer NOT NULL DEFAULT 1,
        gov         boolean NOT NULL,
        record      text NOT NULL,
        PRIMARY KEY (prompt_id, device_id))""",
    "CREATE INDEX expired_day ON expired_prompts (local_day, hall_id, window_id)",
    """CREATE TABLE daily_tally (
        local_day   date NOT NULL,
        hall_id     text NOT NULL,
        window_id   text NOT NULL,
        level       smallint NOT NULL,
        reason      text NOT NULL,
        spontaneous boolean NOT NULL,
        n           bigint NOT NULL,
        PRIMARY KEY (local_day, hall_id, window_id, level, reason, spontaneous))""",
    """CREATE TABLE followups (
        rating_id      text NOT NULL,
        device_id      text NOT NULL,
        hall_id        text NOT NULL,
        window_id      text NOT NULL,
        case_id        text,
        spontaneous    boolean NOT NULL,
        level          smallint NOT NULL,
        reason         text,
        rated_at       timestamptz NOT NULL,
        local_day      date NOT NULL,
        complex        boolean NOT NULL DEFAULT false,
        state          text NOT NULL,
        contact_due    date,
        rectify_due    date,
        complex_due    date,
        deadline_error text,
        contacted_day  date,
        rectified_day  date,
        closed_day     date,
        note           text,
        updated_by     text,
        updated_at     timestamptz,
        alerted        text NOT NULL DEFAULT '',
        PRIMARY KEY (rating_id, device_id))""",
    "CREATE INDEX followups_state ON followups (state, hall_id)",
    "CREATE INDEX followups_day ON followups (local_day, hall_id, window_id)",
    """CREATE TABLE followup_log (
        id         bigserial PRIMARY KEY,
        rating_id  text NOT NULL,
        device_id  text NOT NULL,
        at         timestamptz NOT NULL,
        from_state text NOT NULL,
        to_state   text NOT NULL,
        note       text,
        by_whom    text NOT NULL)""",
    """CREATE TABLE upstream (
        rating_id   text NOT NULL,
        device_id   text NOT NULL,
        queued_at   timestamptz NOT NULL,
        attempts    integer NOT NULL DEFAULT 0,
        status      text,
        error       text,
        answered_at timestamptz,
        PRIMARY KEY (rating_id, device_id))""",
    "CREATE INDEX upstream_pending ON upstream (queued_at) WHERE status IS NULL",
    """CREATE TABLE devices (
        device_id   text PRIMARY KEY,
        region_code text NOT NULL,
        hall_id     text NOT NULL,
        window_id   text NOT NULL,
        updated_at  timestamptz NOT NULL)""",
    """CREATE TABLE windows (
        hall_id     text NOT NULL,
        window_id   text NOT NULL,
        device_id   text NOT NULL,
        window_name text NOT NULL,
        updated_at  timestamptz NOT NULL,
        PRIMARY KEY (hall_id, window_id))""",
]

MIGRATIONS: dict[str, list[tuple[int, list[str]]]] = {
    SQLITE: [(1, _SQLITE_V1)],
    POSTGRESQL: [(1, _PG_V1)],
}
# Any constant: the advisory lock that serialises migrations between processes.
_MIGRATION_LOCK = 7_411_100


def store_version(db: Database) -> int:
    """The store's schema version; 0 for an empty store."""
    if db.dialect == SQLITE:
        tables = {r[0] for r in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()}
    else:
        tables = {r[0] for r in db.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()").fetchall()}
    if "meta" not in tables:
        if "ratings" in tables:
            raise StoreError(f"{db.describe()}: a store without a schema version (the "
                             "reference platform's file from before hcp-platform?): start "
                             "a new store")
        return 0
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def check_version(version: int, db: Database) -> None:
    if version > SCHEMA_VERSION:
        raise StoreTooNew(
            f"{db.describe()}: the store is at schema version {version}, this hcp-platform "
            f"knows versions up to {SCHEMA_VERSION}: upgrade hcp-platform (the store is "
            "left as it is)")


def check_rating_key(db: Database) -> None:
    """Refuse a development store made by migration 1 before it keyed ratings by the pair
    (same version number, old keys): its inserts would fail at the first batch with an
    SQL error; better a clear word at start-up. Nothing is changed."""
    table = "rating_ids" if db.dialect == POSTGRESQL else "ratings"
    if db.dialect == POSTGRESQL:
        rows = db.execute(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = to_regclass(?) "
            "AND i.indisprimary", (table,)).fetchall()
        key = {r[0] for r in rows}
    else:
        key = {r[1] for r in db.execute(f"PRAGMA table_info({table})").fetchall() if r[5]}
    if key and "device_id" not in key:
        raise StoreError(f"{db.describe()}: a development store from before ratings were "
                         "keyed by (device_id, rating_id) (its ratings are unique by "
                         "rating_id alone, docs/platform.md \"Migrations\"): start a new "
                         "store (the store is left as it is)")


def migrate(db: Database) -> int:
    """Bring the store to SCHEMA_VERSION; return the version it had."""
    before = store_version(db)
    check_version(before, db)
    for version, statements in MIGRATIONS[db.dialect]:
        if version <= before:
            continue
        with db.transaction():
            if db.dialect == POSTGRESQL:
                db.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
                db.execute("CREATE TABLE IF NOT EXISTS meta (key text PRIMARY KEY, "
                           "value text NOT NULL)")
            else:
                db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, "
                           "value TEXT NOT NULL)")
            row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            now = int(row[0]) if row else 0
            check_version(now, db)
            if now >= version:
                continue  # another process migrated while we waited for the lock
            for statement in statements:
                db.execute(statement)
            if row:
                db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                           (str(version),))
            else:
                db.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?)",
                           (str(version),))
    return before
