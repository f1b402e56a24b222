"""Follow-ups of bad ratings (差评整改, "3、5、15", SPEC §11): states, deadlines in PRC
working days, and when a follow-up deserves an alert. Pure: the store keeps them, the
service runs the alert check, the CLI and the HTTP API move them along.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from city_platform.workdays import CalendarGap, WorkCalendar

OPEN, CONTACTED, RECTIFIED, CLOSED = "open", "contacted", "rectified", "closed"
STATES = (OPEN, CONTACTED, RECTIFIED, CLOSED)
STATE_LABELS = {OPEN: "待回访", CONTACTED: "已回访", RECTIFIED: "已整改", CLOSED: "已办结"}
DUE, OVERDUE = "followup_due", "followup_overdue"
MAX_NOTE = 500
MAX_BY = 64
# A note is for the cause and the fix, never for the citizen: a mobile number or an ID
# card number in it is refused (the case id is how the business system finds them).
_PERSONAL = re.compile(r"(?<!\d)(1[3-9]\d{9}|\d{17}[\dXx])(?!\d)")
_SURROGATE = re.compile("[\ud800-\udfff]")


class FollowupError(ValueError):
    """A move the follow-up cannot make; the message says why."""


@dataclass(frozen=True)
class Policy:
    """Working days allowed for each step (config [followups])."""

    contact_days: int = 3
    rectify_days: int = 5
    complex_days: int = 15


@dataclass(frozen=True)
class Deadlines:
    contact: date
    rectify: date
    complex: date


def deadlines(rated_day: date, calendar: WorkCalendar, policy: Policy) -> Deadlines:
    """Deadlines of a 差评 rated on local date `rated_day` (raises CalendarGap)."""
    return Deadlines(calendar.add_workdays(rated_day, policy.contact_days),
                     calendar.add_workdays(rated_day, policy.rectify_days),
                     calendar.add_workdays(rated_day, policy.complex_days))


def check_move(current: str, target: str, note: str | None, by: str,
               stay: bool = False) -> None:
    """Raise FollowupError unless `current` → `target` is allowed: forwards only (a step
    may be skipped, e.g. closed at once as a repeat), closing needs a note. `stay`: the
    move only marks the case complex (or not), so staying at `current` is allowed; the
    rest (who, the note, nothing once closed) holds all the same."""
    if target not in STATES:
        raise FollowupError(f"state must be one of {', '.join(STATES)}, got {target!r}")
    if current == CLOSED:
        raise FollowupError("the follow-up is closed already")
    if STATES.index(target) < STATES.index(current) or (target == current and not stay):
        raise FollowupError(f"cannot go from {current} back or stay at {target}")
    if target == CLOSED and not (note and note.strip()):
        raise FollowupError("closing needs --note saying how it was resolved")
    if not by.strip() or len(by) > MAX_BY or not _is_text(by):
        raise FollowupError(f"--by must name who acts (1..{MAX_BY} characters)")
    if note is not None:
        if len(note) > MAX_NOTE:
            raise FollowupError(f"the note is longer than {MAX_NOTE} characters")
        if not _is_text(note):
            raise FollowupError("the note holds a NUL character or a lone surrogate: not "
                                "text a store can keep")
        if _PERSONAL.search(note):
            raise FollowupError("the note seems to hold a phone or ID number: follow-ups keep "
                                "no personal data (the case id finds the citizen)")


def _is_text(value: str) -> bool:
    """Text every store keeps: no NUL (PostgreSQL refuses it), no lone surrogate (not
    UTF-8)."""
    return "\x00" not in value and _SURROGATE.search(value) is None


def current_deadline(state: str, complex_case: bool, contact: date | None,
                     rectify: date | None, complex_due: date | None
                     ) -> tuple[str, date] | None:
    """The deadline the follow-up is working towards now, if any."""
    if state == OPEN and contact is not None:
        return "contact", contact
    if state in (OPEN, CONTACTED):
        due = complex_due if complex_case else rectify
        if state == CONTACTED and due is not None:
            return ("complex" if complex_case else "rectify"), due
    return None


def alert_for(state: str, complex_case: bool, contact: date | None, rectify: date | None,
              complex_due: date | None, today: date, calendar: WorkCalendar
              ) -> tuple[str, str, date] | None:
    """(alert kind, which deadline, due date) when one is due today: followup_due from one
    working day before the deadline, followup_overdue once the deadline's day is over."""
    current = current_deadline(state, complex_case, contact, rectify, complex_due)
    if current is None:
        return None
    which, due = current
    if today > due:
        return OVERDUE, which, due
    try:
        eve = calendar.previous_workday(due)
    except CalendarGap:
        return None
    if today >= eve:
        return DUE, which, due
    return None


def alert_key(kind: str, which: str, due: date) -> str:
    """What the store remembers, so that each alert is raised once."""
    return f"{kind}:{which}:{due.isoformat()}"
