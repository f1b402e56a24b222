"""The watcher's rules in virtual time: each alert kind fires once, respects its
cooldown, resolves with the same alert_id, ignores re-sent duplicates, and the device
silent rule stays quiet outside opening hours. No sleeps, no broker."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from broker_bridge.watch.hours import HallCalendar, OpeningHours, parse_dates, parse_open
from broker_bridge.watch.model import (
    BACKLOG,
    BAD_BURST,
    CLOCK_UNSYNCED,
    DEVICE_SILENT,
    LOW_SATISFACTION,
    POSSIBLE_GAMING,
    RATING_RATE,
    SPONTANEOUS_SHARE,
    Alert,
    BrokerLink,
    EventSeen,
    RatingSeen,
    StatusSeen,
    TelemetrySeen,
    Tick,
    WatchEvent,
)
from broker_bridge.watch.rules import Watcher
from broker_bridge.watch.settings import (
    Backlog,
    BadBurst,
    Clock,
    Gaming,
    LowSatisfaction,
    Rules,
    Silent,
)
from tests.support.ratings import make_rating

SHANGHAI = ZoneInfo("Asia/Shanghai")
DEVICE = "421100-HG01-W03"
OTHER = "421100-HG01-W04"


def local(day: int, hh: int, mm: int = 0) -> float:
    """November 2026 in Shanghai: the 23rd is a Monday, the 27th a Friday."""
    return datetime(2026, 11, day, hh, mm, tzinfo=SHANGHAI).timestamp()


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def only(rules: Rules, *keep: str) -> Rules:
    """The given rules enabled, every other one off (a test looks at one rule)."""
    return Rules(**{name: replace(getattr(rules, name), enabled=name in keep)
                    for name in ("bad_burst", "low_satisfaction", "silent", "backlog",
                                 "gaming", "clock")})


class Hall:
    """A watcher in virtual time, starting Monday 23 Nov 2026 10:00 in Shanghai."""

    def __init__(self, rules: Rules, holidays: tuple[str, ...] = (),
                 snapshot: dict[str, Any] | None = None, now: float | None = None) -> None:
        weekly, problems = parse_open(["mon-fri 08:30-17:30"])
        assert not problems
        hours = OpeningHours(weekly, SHANGHAI, parse_dates(holidays)[0])
        self.calendar = HallCalendar({"HG01": hours}, hours)
        self.watcher = Watcher(rules, self.calendar, snapshot=snapshot)
        self.now = local(23, 10) if now is None else now
        self.alerts: list[Alert] = []
        self.feed(BrokerLink(True, self.now))

    def feed(self, event: WatchEvent) -> list[Alert]:
        out = self.watcher.handle(event)
        self.alerts.extend(out)
        return out

    def advance(self, seconds: float, step: float = 30.0) -> list[Alert]:
        """Let time pass, ticking every `step` seconds like the service does."""
        out: list[Alert] = []
        end = self.now + seconds
        while self.now < end:
            self.now = min(end, self.now + step)
            out += self.feed(Tick(self.now))
        return out

    def rate(self, level: int, device: str = DEVICE, rated_at: float | None = None,
             **fields: Any) -> dict[str, Any]:
        record = make_rating(device, level, rated_at=iso(self.now if rated_at is None
                                                         else rated_at), **fields)
        self.feed(RatingSeen(device, record, self.now))
        return record

    def resend(self, record: dict[str, Any]) -> list[Alert]:
        return self.feed(RatingSeen(record["device_id"], record, self.now))

    def telemetry(self, device: str = DEVICE, backlog: int = 0, oldest: float | None = None,
                  clock_synced: bool | None = True) -> list[Alert]:
        return self.feed(TelemetrySeen(device, backlog, oldest, clock_synced, self.now))

    def raised(self, kind: str) -> list[Alert]:
        return [a for a in self.alerts if a.kind == kind and not a.resolved]

    def resolved(self, kind: str) -> list[Alert]:
        return [a for a in self.alerts if a.kind == kind and a.resolved]


# Bad-rating burst -------------------------------------------------------------------

def test_bad_burst_fires_once_and_resolves_when_the_window_slides() -> None:
    hall = Hall(only(Rules(), "bad_burst"))
    hall.rate(1)
    hall.advance(120)
    hall.rate(2)
    hall.advance(120)
    assert hall.raised(BAD_BURST) == []
    third = hall.rate(2, reason="R01")
    [alert] = hall.raised(BAD_BURST)
    assert alert.device_id == DEVICE and alert.hall_id == "HG01" and alert.window_id == "W03"
    assert alert.evidence["bad_ratings"] == 3 and alert.evidence["levels"] == {"1": 1, "2": 2}
    assert alert.evidence["reasons"] == {"R02": 2, "R01": 1}
    assert third["rating_id"] in alert.evidence["rating_ids"]
    assert alert.first_seen == alert.raised_at == hall.now
    hall.rate(1)  # the problem goes on: still one alert
    hall.advance(5 * 60)
    assert len(hall.raised(BAD_BURST)) == 1 and hall.resolved(BAD_BURST) == []
    # Ten minutes after the last bad rating the window holds fewer than three.
    hall.advance(10 * 60)
    [resolved] = hall.resolved(BAD_BURST)
    assert resolved.alert_id == alert.alert_id and resolved.resolved_at is not None


def test_bad_burst_cooldown_then_raised_again_if_still_true() -> None:
    rules = only(Rules(bad_burst=BadBurst(count=3, within_min=10, cooldown_min=60)),
                 "bad_burst")
    hall = Hall(rules)
    for _ in range(3):
        hall.rate(1)
    assert len(hall.raised(BAD_BURST)) == 1
    hall.advance(11 * 60)
    assert len(hall.resolved(BAD_BURST)) == 1
    # A second burst 20 minutes after the first alert: within the cooldown, held back.
    hall.advance(9 * 60)
    for _ in range(3):
        hall.rate(2)
    hall.advance(60)
    assert len(hall.raised(BAD_BURST)) == 1
    # Bad ratings keep coming until the cooldown has passed: then one new alert, whose
    # first_seen says when the watcher first saw it.
    first_seen = hall.now - 60
    while hall.now < local(23, 11, 2):
        hall.rate(1)
        hall.advance(120)
    raised = hall.raised(BAD_BURST)
    assert len(raised) == 2
    assert raised[1].raised_at >= local(23, 11) and raised[1].first_seen == first_seen
    assert raised[1].alert_id != raised[0].alert_id


def test_bad_burst_ignores_resent_duplicates() -> None:
    hall = Hall(only(Rules(), "bad_burst"))
    first = hall.rate(1)
    second = hall.rate(2)
    for _ in range(5):
        hall.resend(first)
        hall.resend(second)
    assert hall.raised(BAD_BURST) == [] and hall.watcher.duplicates == 10


def test_resent_copies_after_the_window_are_not_counted_again() -> None:
    hall = Hall(only(Rules(), "bad_burst", "low_satisfaction"))
    # A device with an untrusted clock: its ratings are dated by arrival, so a copy
    # re-sent after the burst window would look fresh if its id were forgotten.
    unsynced = [hall.rate(1, clock_synced=False, rated_at=local(1, 3) + i) for i in (0, 60)]
    synced = [hall.rate(5, device=OTHER) for _ in range(2)]
    hall.advance(15 * 60)
    for record in unsynced + synced:
        hall.resend(record)
    hall.rate(2, clock_synced=False, rated_at=local(1, 3) + 120)
    assert hall.alerts == [] and hall.watcher.duplicates == 4
    assert len(hall.watcher.devices[OTHER].ratings) == 2


def test_bad_burst_ignores_old_ratings_from_a_backlog() -> None:
    hall = Hall(only(Rules(), "bad_burst"))
    for minutes in (120, 119, 118, 117):  # rated two hours ago, delivered now
        hall.rate(1, rated_at=hall.now - minutes * 60)
    assert hall.raised(BAD_BURST) == []


def test_unsynced_backlog_is_judged_by_its_own_spacing() -> None:
    hall = Hall(only(Rules(), "bad_burst", "gaming"))
    # A device with a wrong clock delivers a morning's backlog at once: bad ratings 20
    # minutes apart, and a dozen ratings a few minutes apart: neither burst nor gaming.
    wrong = local(1, 3)
    for i in range(12):
        hall.rate(1 if i % 4 == 0 else 5, rated_at=wrong + i * 300, clock_synced=False,
                  reason="R01" if i % 4 == 0 else None)
    assert hall.alerts == []
    # Three bad ratings one minute apart on that same clock are a burst.
    for i in range(3):
        hall.rate(2, rated_at=wrong + 4000 + i * 60, clock_synced=False)
    assert len(hall.raised(BAD_BURST)) == 1


def test_good_ratings_and_other_windows_do_not_count() -> None:
    hall = Hall(only(Rules(), "bad_burst"))
    hall.rate(1)
    hall.rate(2, device=OTHER)
    hall.rate(3)
    hall.rate(1, device=OTHER)
    assert hall.raised(BAD_BURST) == []


# Low satisfaction -------------------------------------------------------------------

def test_low_satisfaction_over_the_last_n() -> None:
    rules = only(Rules(low_satisfaction=LowSatisfaction(below_pct=80, last_n=10,
                                                        min_ratings=10)), "low_satisfaction")
    hall = Hall(rules)
    for level in (5, 4, 1, 3, 5, 2, 5, 4, 1):  # 9 ratings, 6 good: too few to judge
        hall.rate(level)
        hall.advance(60)
    assert hall.raised(LOW_SATISFACTION) == []
    hall.rate(5)  # 10 ratings, 7 good = 70.0 %
    [alert] = hall.raised(LOW_SATISFACTION)
    assert alert.evidence["satisfaction_pct"] == "70.0"
    assert (alert.evidence["good"], alert.evidence["bad"]) == (7, 3)
    hall.advance(60)
    hall.rate(5)  # the oldest (5) leaves, a 5 comes: still 70 %
    assert hall.resolved(LOW_SATISFACTION) == []
    hall.advance(60)
    hall.rate(5)  # a 4 leaves: 70 %
    hall.advance(60)
    hall.rate(5)  # the 1 leaves: 80.0 % is not below 80
    [resolved] = hall.resolved(LOW_SATISFACTION)
    assert resolved.alert_id == alert.alert_id
    assert resolved.evidence["satisfaction_pct"] == "80.0"


def test_low_satisfaction_counts_a_resent_bad_rating_once() -> None:
    rules = only(Rules(low_satisfaction=LowSatisfaction(below_pct=80, last_n=10,
                                                        min_ratings=5)), "low_satisfaction")
    hall = Hall(rules)
    bad = hall.rate(1)
    for _ in range(4):
        hall.rate(5)
    assert hall.raised(LOW_SATISFACTION) == []  # 4 of 5 = 80.0 %
    for _ in range(3):
        hall.resend(bad)
    assert hall.raised(LOW_SATISFACTION) == []


# Device silent ------------------------------------------------------------------------

def test_silent_after_the_limit_during_opening_hours_then_resolved() -> None:
    hall = Hall(only(Rules(silent=Silent(after_min=15)), "silent"))
    hall.feed(StatusSeen(DEVICE, True, hall.now))
    hall.telemetry()
    hall.advance(15 * 60)
    assert hall.raised(DEVICE_SILENT) == []
    hall.advance(60)
    [alert] = hall.raised(DEVICE_SILENT)
    assert alert.severity == "critical" and alert.evidence["online"] is True
    hall.advance(3600)
    assert len(hall.raised(DEVICE_SILENT)) == 1
    hall.telemetry()
    [resolved] = hall.resolved(DEVICE_SILENT)
    assert resolved.alert_id == alert.alert_id


def test_offline_status_counts_from_when_it_went_offline() -> None:
    hall = Hall(only(Rules(), "silent"))
    hall.telemetry()
    hall.advance(5 * 60)
    hall.feed(StatusSeen(DEVICE, False, hall.now))
    hall.advance(10 * 60)
    assert hall.raised(DEVICE_SILENT) == []   # no telemetry for 15 min, not more
    hall.advance(60)
    [alert] = hall.raised(DEVICE_SILENT)
    assert alert.evidence["online"] is False and alert.evidence["offline_since"]
    hall.feed(StatusSeen(DEVICE, True, hall.now))
    hall.telemetry()
    assert len(hall.resolved(DEVICE_SILENT)) == 1


def test_silent_is_not_an_alarm_at_night_or_at_the_weekend() -> None:
    hall = Hall(only(Rules(), "silent"), now=local(27, 17, 25))  # Friday 17:25
    hall.telemetry()
    hall.feed(StatusSeen(DEVICE, False, hall.now))
    hall.advance(local(30, 8, 40) - hall.now, step=600)  # until Monday 08:40
    assert hall.raised(DEVICE_SILENT) == []   # 5 min on Friday + 10 on Monday = 15
    hall.advance(120)
    [alert] = hall.raised(DEVICE_SILENT)
    assert alert.raised_at > local(30, 8, 40)


def test_silent_is_not_an_alarm_on_a_holiday() -> None:
    hall = Hall(only(Rules(), "silent"), holidays=("2026-11-24",), now=local(24, 9))
    hall.telemetry()
    hall.advance(8 * 3600, step=300)
    assert hall.alerts == []


def test_silence_while_the_watcher_was_not_listening_is_not_counted() -> None:
    hall = Hall(only(Rules(), "silent"))
    hall.telemetry()
    hall.feed(BrokerLink(False, hall.now))
    hall.advance(3600)
    assert hall.alerts == []  # we heard nothing; that says nothing about the device
    hall.feed(BrokerLink(True, hall.now))
    hall.advance(10 * 60)
    assert hall.alerts == []
    hall.advance(6 * 60)
    assert len(hall.raised(DEVICE_SILENT)) == 1


def test_a_removed_device_resolves_its_alerts_and_is_forgotten() -> None:
    hall = Hall(only(Rules(), "silent"))
    hall.telemetry()
    hall.advance(16 * 60)
    assert len(hall.raised(DEVICE_SILENT)) == 1
    hall.feed(StatusSeen(DEVICE, None, hall.now))
    assert len(hall.resolved(DEVICE_SILENT)) == 1
    hall.advance(3600)
    assert len(hall.raised(DEVICE_SILENT)) == 1 and DEVICE not in hall.watcher.devices


# Backlog ------------------------------------------------------------------------------

def test_backlog_by_count_and_by_age() -> None:
    rules = only(Rules(backlog=Backlog(max_backlog=50, max_oldest_min=30, cooldown_min=60)),
                 "backlog")
    hall = Hall(rules)
    hall.telemetry(backlog=50, oldest=29 * 60)
    assert hall.alerts == []
    hall.telemetry(backlog=51, oldest=60)
    [alert] = hall.raised(BACKLOG)
    assert alert.evidence["backlog"] == 51
    hall.telemetry(backlog=80)
    hall.telemetry(backlog=0)
    assert len(hall.resolved(BACKLOG)) == 1
    hall.advance(600)
    hall.telemetry(backlog=3, oldest=31 * 60)  # old rating stuck: within the cooldown
    assert len(hall.raised(BACKLOG)) == 1
    hall.advance(51 * 60)   # still stuck when the cooldown ends: raised then
    first, second = hall.raised(BACKLOG)
    assert second.raised_at == first.raised_at + 3600
    assert second.evidence["oldest_pending_min"] == 31.0
    assert second.first_seen == first.raised_at + 600


# Possible gaming ----------------------------------------------------------------------

def test_too_many_ratings_from_one_device_in_a_short_time() -> None:
    rules = only(Rules(gaming=Gaming(max_ratings=5, within_s=60)), "gaming")
    hall = Hall(rules)
    for _ in range(5):
        hall.rate(5)
        hall.advance(10, step=10)
    assert hall.alerts == []                      # five in a minute: allowed
    record = hall.rate(5)
    [alert] = hall.raised(POSSIBLE_GAMING)
    assert alert.condition == RATING_RATE and alert.evidence["ratings"] == 6
    hall.resend(record)
    hall.advance(61, step=1)
    [resolved] = hall.resolved(POSSIBLE_GAMING)
    assert resolved.alert_id == alert.alert_id


def test_high_share_of_spontaneous_ratings() -> None:
    rules = only(Rules(gaming=Gaming(spontaneous_pct=60, last_n=10, min_ratings=10)), "gaming")
    hall = Hall(rules)
    for i in range(10):
        if i % 2:
            hall.rate(5, trigger="spontaneous", case=None)
        else:
            hall.rate(5)
        hall.advance(120)
    assert hall.alerts == []                       # 50 %
    hall.rate(5, trigger="spontaneous", case=None)  # 6 of the last 10 = 60 %
    [alert] = hall.raised(POSSIBLE_GAMING)
    assert alert.condition == SPONTANEOUS_SHARE and alert.evidence["spontaneous_pct"] == "60.0"
    for _ in range(2):
        hall.advance(120)
        hall.rate(4)
    assert [a.condition for a in hall.resolved(POSSIBLE_GAMING)] == [SPONTANEOUS_SHARE]


# Clock ------------------------------------------------------------------------------

def test_unsynced_clock_for_too_long() -> None:
    hall = Hall(only(Rules(clock=Clock(after_min=30)), "clock"))
    hall.telemetry(clock_synced=False)
    hall.advance(30 * 60)
    hall.telemetry(clock_synced=False)
    assert hall.alerts == []
    hall.advance(60)
    [alert] = hall.raised(CLOCK_UNSYNCED)
    assert alert.evidence["unsynced_since"] is not None
    hall.feed(EventSeen(DEVICE, "clock_synced", hall.now))
    assert len(hall.resolved(CLOCK_UNSYNCED)) == 1


def test_old_unsynced_ratings_do_not_make_a_clock_alert() -> None:
    hall = Hall(only(Rules(), "clock"))
    hall.telemetry(clock_synced=True)
    hall.rate(5, clock_synced=False)  # rated before the sync, delivered after it
    hall.advance(3600)
    assert hall.alerts == []


# Restart ------------------------------------------------------------------------------

def restarted(hall: Hall) -> Hall:
    snapshot = json.loads(json.dumps(hall.watcher.snapshot()))
    again = Hall(hall.watcher.rules, snapshot=snapshot, now=hall.now)
    again.alerts = []
    return again


def test_restart_keeps_open_alerts_dedupe_and_cooldowns() -> None:
    hall = Hall(only(Rules(), "bad_burst", "backlog"))
    burst = [hall.rate(1) for _ in range(3)]
    hall.telemetry(backlog=99)
    assert {a.kind for a in hall.alerts} == {BAD_BURST, BACKLOG}

    hall = restarted(hall)
    hall.rate(1)
    hall.telemetry(backlog=120)
    assert hall.alerts == []                     # still open: not raised again
    for record in burst:
        hall.resend(record)
    assert hall.watcher.duplicates == 3          # the re-sent ratings are known
    hall.telemetry(backlog=0)
    [resolved] = hall.alerts
    assert resolved.kind == BACKLOG and resolved.resolved

    hall = restarted(hall)
    hall.advance(60)
    hall.telemetry(backlog=70)                   # back within the cooldown
    assert hall.alerts == []
    hall.advance(3600)
    hall.telemetry(backlog=70)
    assert [a.kind for a in hall.raised(BACKLOG)] == [BACKLOG]


def test_state_stays_bounded() -> None:
    hall = Hall(Rules())
    for i in range(2000):
        hall.rate(5 if i % 3 else 2)
        hall.advance(30)
    track = hall.watcher.devices[DEVICE]
    assert len(track.ratings) <= 40 and track.seen == {}  # all from a trusted clock
    assert len(json.dumps(hall.watcher.snapshot())) < 64 * 1024


def test_a_device_unknown_to_every_rule_raises_nothing() -> None:
    hall = Hall(Rules())
    hall.feed(EventSeen(DEVICE, "prompt_expired", hall.now))
    hall.telemetry()
    hall.advance(60)
    assert hall.alerts == []


@pytest.mark.parametrize("kind", [BAD_BURST, LOW_SATISFACTION])
def test_disabled_rule_is_silent(kind: str) -> None:
    hall = Hall(only(Rules(), *()))
    for _ in range(20):
        hall.rate(1)
    assert [a for a in hall.alerts if a.kind == kind] == []
