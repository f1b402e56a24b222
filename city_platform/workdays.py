"""Working days of the People's Republic of China, for the follow-up deadlines of §11.

The data is chinese-calendar's (statutory holidays and the weekend days declared working
days, 调休), plus what the config adds for a year the package does not know yet (the
State Council publishes each year's notice in the autumn before). A date outside both is
a `CalendarGap`, never a guess: a deadline computed from "Saturdays are rest days" alone
would be wrong every Spring Festival.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta

import chinese_calendar


class CalendarGap(Exception):
    """No holiday data for this date's year."""

    def __init__(self, day: date, known: str) -> None:
        super().__init__(
            f"no PRC holiday data for {day.year} (needed for {day.isoformat()}); the "
            f"calendar knows {known}: add the year's holidays and 调休 working days from the "
            "State Council's notice to [calendar] in the platform config, or upgrade "
            "chinese-calendar")
        self.day = day


def _package_years() -> tuple[int, int]:
    years = [d.year for d in chinese_calendar.holidays]
    return min(years), max(years)


class WorkCalendar:
    """Which days are working days; `extra_years` are years the config describes in full
    with `holidays` (days off that would be weekdays) and `workdays` (调休 weekend days)."""

    def __init__(self, extra_years: Iterable[int] = (), holidays: Iterable[date] = (),
                 workdays: Iterable[date] = ()) -> None:
        self._first, self._last = _package_years()
        self._extra_years = frozenset(extra_years)
        self._holidays = frozenset(holidays)
        self._workdays = frozenset(workdays)
        clash = self._holidays & self._workdays
        if clash:
            raise ValueError("[calendar] a day cannot be both a holiday and a working day: "
                             + ", ".join(sorted(d.isoformat() for d in clash)))
        for day in self._holidays | self._workdays:
            if not self.knows(day.year):
                raise ValueError(f"[calendar] {day.isoformat()}: its year is neither in "
                                 "extra_years nor known to chinese-calendar")
        # chinese-calendar scans its whole table on every call (~80 µs): a deadline of 15
        # working days asks about 21 days, so remember the answers (a few thousand days
        # at most: the years a platform sees).
        self._known: dict[date, bool] = {}
        self._after: dict[tuple[date, int], date] = {}

    def knows(self, year: int) -> bool:
        return self._first <= year <= self._last or year in self._extra_years

    def describe(self) -> str:
        extra = sorted(y for y in self._extra_years if not self._first <= y <= self._last)
        return f"{self._first}–{self._last}" + (
            "".join(f", {y}" for y in extra) + " (from the config)" if extra else "")

    def is_workday(self, day: date) -> bool:
        known = self._known.get(day)
        if known is None:
            known = self._known[day] = self._is_workday(day)
        return known

    def _is_workday(self, day: date) -> bool:
        if not self.knows(day.year):
            raise CalendarGap(day, self.describe())
        if day in self._workdays:
            return True
        if day in self._holidays:
            return False
        if self._first <= day.year <= self._last:
            return bool(chinese_calendar.is_workday(day))
        return day.weekday() < 5  # a config year: the weekdays minus its listed holidays

    def add_workdays(self, day: date, n: int) -> date:
        """The n-th working day after `day` (the day itself does not count): a deadline
        "within n working days" ends at 24:00 local time of this date."""
        if n < 1:
            raise ValueError("n must be at least 1")
        due = self._after.get((day, n))
        if due is None:
            due = self._after[(day, n)] = self._add_workdays(day, n)
        return due

    def _add_workdays(self, day: date, n: int) -> date:
        current, left = day, n
        while left:
            current += timedelta(days=1)
            if self.is_workday(current):
                left -= 1
        return current

    def previous_workday(self, day: date) -> date:
        current = day - timedelta(days=1)
        while not self.is_workday(current):
            current -= timedelta(days=1)
        return current
