"""What the store holds, read for the status page, the dashboard and the tests: counts,
the stored rating ids and copies, window names, today's figures per device and the
devices' places. `Store` inherits these; none of them writes."""

from __future__ import annotations

from datetime import date
from typing import Any

from city_platform.store.db import POSTGRESQL, SQLITE, Database

__all__ = ["StoredReads"]


class StoredReads:
    """The store's read-only queries (mixed into Store, which sets these attributes)."""

    db: Database
    rejected: int
    requests: int

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
