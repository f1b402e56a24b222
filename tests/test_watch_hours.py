"""Opening hours: parsing, "open now?", open seconds between two instants, holidays,
make-up working days, and the time zone fallback."""

from __future__ import annotations

import zoneinfo
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from broker_bridge import timezones
from broker_bridge.watch.hours import HallCalendar, OpeningHours, parse_dates, parse_open

SHANGHAI = ZoneInfo("Asia/Shanghai")


def at(day: int, hh: int, mm: int = 0) -> float:
    """November 2026, Shanghai time: the 23rd is a Monday, the 28th a Saturday."""
    return datetime(2026, 11, day, hh, mm, tzinfo=SHANGHAI).timestamp()


def hall(*spec: str, holidays: tuple[str, ...] = (), workdays: tuple[str, ...] = ()
         ) -> OpeningHours:
    weekly, problems = parse_open(spec)
    assert problems == []
    return OpeningHours(weekly, SHANGHAI, parse_dates(holidays)[0], parse_dates(workdays)[0])


def test_weekday_ranges_lists_and_merging() -> None:
    weekly, problems = parse_open(["mon-fri 08:30-12:00", "mon-fri 13:30-17:30",
                                   "sat,sun 09:00-11:00", "mon 11:00-14:00"])
    assert problems == []
    assert weekly[0] == ((8 * 60 + 30, 17 * 60 + 30),)  # Monday's ranges merged into one
    assert weekly[1] == ((510, 720), (810, 1050))
    assert weekly[5] == weekly[6] == ((540, 660),)


@pytest.mark.parametrize("entry", ["mon-fri 8:30-12:00", "fri-mon 08:00-09:00",
                                   "mon-fri 12:00-08:00", "mo 08:00-09:00",
                                   "mon 08:00-24:30", "mon 08:60-09:00", "every day", 7])
def test_bad_ranges_are_reported(entry: object) -> None:
    _, problems = parse_open([entry])  # type: ignore[list-item]
    assert len(problems) == 1 and repr(entry) in problems[0]


def test_open_now_respects_days_hours_holidays_and_workdays() -> None:
    h = hall("mon-fri 08:30-12:00", "mon-fri 13:30-17:30", holidays=("2026-11-25",),
             workdays=("2026-11-28",))
    assert h.is_open(at(23, 9))
    assert not h.is_open(at(23, 12, 30))          # lunch
    assert not h.is_open(at(23, 8, 29))
    assert not h.is_open(at(23, 17, 30))          # the end is exclusive
    assert not h.is_open(at(25, 10))              # holiday
    assert h.is_open(at(28, 10))                  # Saturday, but a make-up working day
    assert not h.is_open(at(29, 10))              # Sunday
    assert not h.is_open(at(24, 3))               # night


def test_open_seconds_skip_nights_and_weekends() -> None:
    h = hall("mon-fri 08:30-17:30")
    # Friday 17:25 to Monday 08:40: five minutes on Friday, ten on Monday.
    assert h.open_seconds(at(27, 17, 25), at(30, 8, 40)) == pytest.approx(15 * 60)
    assert h.open_seconds(at(28, 0), at(29, 23)) == 0
    assert h.open_seconds(at(23, 9), at(23, 8)) == 0
    # A whole week is five nine-hour days.
    assert h.open_seconds(at(23, 0), at(30, 0)) == pytest.approx(5 * 9 * 3600)
    # With `enough`, counting stops early but still says "more than enough".
    assert h.open_seconds(at(2, 0), at(30, 12), enough=60) > 60


def test_round_the_clock_hall() -> None:
    h = hall("mon-sun 00:00-24:00")
    assert h.is_open(at(29, 23, 59))
    assert h.open_seconds(at(28, 0), at(29, 0)) == pytest.approx(86400)


def test_dates_must_be_iso() -> None:
    dates, problems = parse_dates(["2026-10-01", date(2026, 10, 2), "1 Oct"])
    assert dates == {date(2026, 10, 1), date(2026, 10, 2)}
    assert problems == ["'1 Oct' is not a date (YYYY-MM-DD)"]


def test_calendar_finds_the_hall_of_a_device() -> None:
    hg01, default = hall("mon 08:00-09:00"), hall("tue 08:00-09:00")
    calendar = HallCalendar({"HG01": hg01}, default)
    assert calendar.for_device("X", "HG01") is hg01
    assert calendar.for_device("421100-HG01-W03", None) is hg01   # id convention
    assert calendar.for_device("421100-HG01-W03", "HG02") is default  # ratings say HG02
    assert calendar.for_device("W03", None) is default


def test_shanghai_falls_back_to_a_fixed_offset_without_tzdata(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> None:
        raise zoneinfo.ZoneInfoNotFoundError(name)

    monkeypatch.setattr(zoneinfo, "ZoneInfo", missing)
    tz = timezones.load_timezone("Asia/Shanghai")
    assert tz is timezones.BEIJING
    assert datetime(2026, 7, 1, tzinfo=tz).utcoffset() == timedelta(hours=8)
    with pytest.raises(timezones.UnknownTimezone):
        timezones.load_timezone("Europe/Berlin")


def test_unknown_zone_is_a_problem() -> None:
    assert timezones.timezone_problem("Asia/Shanghai") is None
    assert "Mars/Olympus" in (timezones.timezone_problem("Mars/Olympus") or "")
