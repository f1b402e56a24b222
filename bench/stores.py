"""The three ways of storing a rating that benchmark 1 compares, behind one small
interface: our outbox, TinyDB with its default JSON storage, and SQLite (WAL,
synchronous=FULL). Each `store()` returns once the rating is durable on disk."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from tinydb import TinyDB

from device.outbox import Outbox


class RatingStore(Protocol):
    name: str

    def fill(self, ratings: Iterable[dict[str, Any]]) -> None:
        """Bring the store to a backlog (not timed)."""

    def store(self, rating: dict[str, Any]) -> None:
        """Store one rating durably (timed)."""

    def close(self) -> None: ...


class OurOutbox:
    """device/outbox.py as the daemon calls it: the rating, its case memory and the next
    seq in one appended, fsync'ed journal record."""

    name = "ours (device/outbox.py)"

    def __init__(self, directory: Path) -> None:
        self.box = Outbox(directory)
        self.box.open()

    def fill(self, ratings: Iterable[dict[str, Any]]) -> None:
        # One real store each, so the file is what the daemon would have written.
        for rating in ratings:
            self.store(rating)

    def store(self, rating: dict[str, Any]) -> None:
        self.box.store(rating, case_id=rating["case"]["case_id"])

    def close(self) -> None:
        self.box.close()


class TinyDBDefault:
    """TinyDB 4 with its default JSONStorage: every insert reads the whole file, then
    rewrites it in place and fsyncs it."""

    name = "TinyDB, default JSON storage"

    def __init__(self, directory: Path) -> None:
        self.db = TinyDB(directory / "ratings.json")
        self.table = self.db.table("ratings")

    def fill(self, ratings: Iterable[dict[str, Any]]) -> None:
        self.table.insert_multiple(ratings)   # one write of the whole file

    def store(self, rating: dict[str, Any]) -> None:
        self.table.insert(rating)

    def close(self) -> None:
        self.db.close()


class SqliteWal:
    """sqlite3 in WAL mode with synchronous=FULL: one autocommitted INSERT per rating."""

    name = "sqlite3, WAL, synchronous=FULL"

    def __init__(self, directory: Path) -> None:
        self.db = sqlite3.connect(str(directory / "ratings.db"), isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE ratings (rating_id TEXT PRIMARY KEY, record TEXT NOT NULL)")

    def fill(self, ratings: Iterable[dict[str, Any]]) -> None:
        self.db.execute("BEGIN")
        self.db.executemany("INSERT INTO ratings VALUES (?, ?)",
                            ((r["rating_id"], _json(r)) for r in ratings))
        self.db.execute("COMMIT")
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def store(self, rating: dict[str, Any]) -> None:
        self.db.execute("INSERT INTO ratings VALUES (?, ?)", (rating["rating_id"], _json(rating)))

    def close(self) -> None:
        self.db.close()


def _json(rating: dict[str, Any]) -> str:
    return json.dumps(rating, ensure_ascii=False, separators=(",", ":"))
