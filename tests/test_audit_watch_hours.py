"""Audit of opening hours (broker_bridge/watch/hours.py) across day boundaries in
Asia/Shanghai: open seconds add up over any split, and agree with a minute-by-minute
count (hypothesis)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from broker_bridge.watch.hours import OpeningHours, parse_open

SHANGHAI = ZoneInfo("Asia/Shanghai")
WEEKLY, _ = parse_open(["mon-fri 08:30-12:00", "mon-fri 13:30-17:30", "sat 09:00-12:00",
                        "fri 22:00-24:00", "sat 00:00-02:00"])
HOURS = OpeningHours(WEEKLY, SHANGHAI, frozenset({date(2026, 10, 1)}),
                     frozenset({date(2026, 9, 27)}))
BASE = datetime(2026, 9, 20, tzinfo=SHANGHAI).timestamp()
INSTANT = st.integers(min_value=0, max_value=20 * 86400).map(lambda s: BASE + s)


@settings(max_examples=300, deadline=None)
@given(INSTANT, INSTANT, INSTANT)
def test_open_seconds_add_up_over_any_split(a: float, b: float, c: float) -> None:
    a, b, c = sorted((a, b, c))
    assert HOURS.open_seconds(a, c) == HOURS.open_seconds(a, b) + HOURS.open_seconds(b, c)


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=14 * 24 * 60),
       st.integers(min_value=1, max_value=3 * 24 * 60))
def test_open_seconds_agree_with_counting_minutes(start_min: int, length_min: int) -> None:
    start = BASE + start_min * 60
    counted = sum(60 for m in range(length_min) if HOURS.is_open(start + m * 60))
    assert HOURS.open_seconds(start, start + length_min * 60) == counted


def test_the_enough_shortcut_never_says_less_than_enough_when_there_is_more() -> None:
    start = datetime(2026, 9, 25, 17, 0, tzinfo=SHANGHAI).timestamp()  # Friday
    for hours_later in range(1, 24 * 5):
        end = start + hours_later * 3600
        full = HOURS.open_seconds(start, end)
        quick = HOURS.open_seconds(start, end, enough=900)
        assert (quick > 900) == (full > 900), (hours_later, full, quick)
        assert timedelta(seconds=quick) <= timedelta(seconds=full)
