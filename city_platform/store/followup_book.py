"""The follow-ups of bad ratings as the store keeps them: the `Followup` row, listing,
finding (by rating and device), moving one along its states with the log, alert marks
and deadlines computed late. `Store` inherits these; what a move may do is
city_platform.followups' rule, how it is stored is this module's."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, tzinfo
from typing import Any

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
from city_platform.store.db import Database, as_day, as_time
from city_platform.store.ingest import sql_bool
from city_platform.workdays import CalendarGap, WorkCalendar

__all__ = ["AmbiguousRating", "FOLLOWUP_COLUMNS", "Followup", "FollowupBook"]


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


FOLLOWUP_COLUMNS = ("rating_id, device_id, hall_id, window_id, case_id, spontaneous, level, "
                    "reason, rated_at, local_day, complex, state, contact_due, rectify_due, "
                    "complex_due, deadline_error, note, updated_by, alerted")


def _followup(row: Sequence[Any]) -> Followup:
    def day(v: Any) -> date | None:
        return None if v is None else as_day(v)
    return Followup(row[0], row[1], row[2], row[3], row[4], bool(row[5]), int(row[6]), row[7],
                    as_time(row[8]), as_day(row[9]), bool(row[10]), row[11], day(row[12]),
                    day(row[13]), day(row[14]), row[15], row[16], row[17], row[18])


class FollowupBook:
    """The store's follow-up methods (mixed into Store, which sets these attributes)."""

    db: Database
    tz: tzinfo
    calendar: WorkCalendar
    policy: Policy

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
            # Marking a case complex may keep its state; every other rule still holds.
            check_move(current.state, target, note, by, stay=complex_case is not None)
            sets = ["state = ?", "updated_by = ?", "updated_at = ?"]
            args: list[Any] = [target, by, self.db.ts(now)]
            if note is not None:
                sets.append("note = ?")
                args.append(note)
            if complex_case is not None:
                sets.append("complex = ?")
                args.append(sql_bool(self.db, complex_case))
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


def _index(state: str) -> int:
    return (OPEN, CONTACTED, RECTIFIED, CLOSED).index(state)
