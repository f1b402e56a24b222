"""A hall's opening hours: weekday ranges in local time, holidays, and make-up working
days (调休). Answers "is the hall open now?" and "how many open seconds lie between two
instants?", which is what the device-silent rule counts: nights, weekends and holidays
are not alarms."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DEFAULT_OPEN = ("mon-fri 08:30-17:30",)
MAX_DAYS_BACK = 400  # far enough for any holiday season; bounds the work per question

_RANGE_RE = re.compile(
    r"^(?P<days>[a-z]{3}(?:-[a-z]{3})?(?:,[a-z]{3}(?:-[a-z]{3})?)*)\s+"
    r"(?P<start>\d{2}:\d{2})-(?P<end>\d{2}:\d{2})$")

Interval = tuple[int, int]  # minutes since local midnight, start < end <= 1440


def parse_open(spec: Sequence[str]) -> tuple[tuple[tuple[Interval, ...], ...], list[str]]:
    """Parse ["mon-fri 08:30-12:00", "sat 09:00-12:00", …] into one sorted, merged list
    of intervals per weekday (Monday first); also return the problems found."""
    problems: list[str] = []
    per_day: list[list[Interval]] = [[] for _ in DAYS]
    for entry in spec:
        if not isinstance(entry, str):
            problems.append(f"{entry!r} is not a string like \"mon-fri 08:30-17:30\"")
            continue
        m = _RANGE_RE.match(entry.strip().lower())
        if m is None:
            problems.append(f"{entry!r} is not like \"mon-fri 08:30-17:30\"")
            continue
        start, end = _minutes(m["start"]), _minutes(m["end"])
        if start is None or end is None or start >= end:
            problems.append(f"{entry!r}: times must be HH:MM (00:00–24:00) with start before "
                            "end (split a range over midnight in two)")
            continue
        days = _days(m["days"])
        if days is None:
            problems.append(f"{entry!r}: days must be mon..sun, as a day, a range "
                            "(mon-fri) or a list (mon,wed)")
            continue
        for day in days:
            per_day[day].append((start, end))
    return tuple(_merge(day) for day in per_day), problems


def parse_dates(values: Iterable[object]) -> tuple[frozenset[date], list[str]]:
    dates: set[date] = set()
    problems: list[str] = []
    for value in values:
        try:
            if not isinstance(value, str | date) or isinstance(value, datetime):
                raise ValueError
            dates.add(value if isinstance(value, date) else date.fromisoformat(value))
        except ValueError:
            problems.append(f"{value!r} is not a date (YYYY-MM-DD)")
    return frozenset(dates), problems


def _minutes(text: str) -> int | None:
    hours, minutes = int(text[:2]), int(text[3:])
    if minutes > 59 or hours > 24 or (hours == 24 and minutes):
        return None
    return hours * 60 + minutes


def _days(text: str) -> list[int] | None:
    out: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            return None
        a, b = DAYS.index(first), DAYS.index(last or first)
        if b < a:
            return None
        out.extend(range(a, b + 1))
    return out


def _merge(intervals: list[Interval]) -> tuple[Interval, ...]:
    merged: list[Interval] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return tuple(merged)


@dataclass(frozen=True)
class OpeningHours:
    """When one hall is open. `workdays` (调休) are open with Monday's hours;
    `holidays` are closed all day; a date in both is a holiday."""

    weekly: tuple[tuple[Interval, ...], ...]
    tz: tzinfo
    holidays: frozenset[date] = frozenset()
    workdays: frozenset[date] = frozenset()

    def intervals_on(self, day: date) -> tuple[Interval, ...]:
        if day in self.holidays:
            return ()
        if day in self.workdays:
            return self.weekly[0]
        return self.weekly[day.weekday()]

    def is_open(self, t: float) -> bool:
        local = datetime.fromtimestamp(t, self.tz)
        minute = local.hour * 60 + local.minute + local.second / 60
        return any(start <= minute < end for start, end in self.intervals_on(local.date()))

    def open_seconds(self, start: float, end: float, enough: float | None = None) -> float:
        """Seconds between `start` and `end` during which the hall is open. Stops counting
        once the total exceeds `enough` (the caller only needs to know that)."""
        if end <= start or not (any(self.weekly) or self.workdays):
            return 0.0  # never open (a hall closed for good): nothing to walk through
        total = 0.0
        day = datetime.fromtimestamp(end, self.tz).date()
        first = datetime.fromtimestamp(start, self.tz).date()
        for _ in range(MAX_DAYS_BACK):
            for a, b in self.intervals_on(day):
                lo = max(start, self._instant(day, a))
                hi = min(end, self._instant(day, b))
                if hi > lo:
                    total += hi - lo
            if day <= first or (enough is not None and total > enough):
                break
            day -= timedelta(days=1)
        return total

    def _instant(self, day: date, minute: int) -> float:
        if minute == 1440:
            return datetime.combine(day + timedelta(days=1), time(0), self.tz).timestamp()
        return datetime.combine(day, time(minute // 60, minute % 60), self.tz).timestamp()


@dataclass(frozen=True)
class HallCalendar:
    """Opening hours per hall, and the hours for a device whose hall is not configured."""

    halls: dict[str, OpeningHours]
    default: OpeningHours

    def for_device(self, device_id: str, hall_id: str | None) -> OpeningHours:
        """The hall named by the device's ratings; before its first rating, the hall
        part of an id shaped like region-hall-window (421100-HG01-W03) when that hall is
        configured; otherwise the default hours."""
        if hall_id is not None and hall_id in self.halls:
            return self.halls[hall_id]
        parts = device_id.split("-")
        if hall_id is None and len(parts) == 3 and parts[1] in self.halls:
            return self.halls[parts[1]]
        return self.default
