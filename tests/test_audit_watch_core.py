"""Audit of the watcher's core (broker_bridge/watch/rules.py): alerts that stay right
across the watcher's own reconnects and restarts, and across its clock stepping."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from broker_bridge.watch.alerts import alert_payload
from broker_bridge.watch.model import DEVICE_SILENT, BrokerLink, StatusSeen, Tick
from broker_bridge.watch.rules import Watcher
from broker_bridge.watch.settings import Rules
from tests.test_watch_rules import DEVICE, Hall, local, only


def test_a_silent_device_stays_alerted_across_the_watchers_reconnect() -> None:
    hall = Hall(only(Rules(), "silent"))
    hall.telemetry()
    hall.feed(StatusSeen(DEVICE, False, hall.now))
    hall.advance(20 * 60)
    [alert] = hall.raised(DEVICE_SILENT)
    # The watcher's own link drops and comes back; the device is still dead (its
    # retained offline status comes again).
    hall.feed(BrokerLink(False, hall.now))
    hall.advance(60)
    hall.feed(BrokerLink(True, hall.now))
    hall.feed(StatusSeen(DEVICE, False, hall.now))
    hall.advance(5 * 60)
    assert hall.resolved(DEVICE_SILENT) == []  # nothing came back to life


def test_a_silent_device_stays_alerted_across_the_watchers_restart() -> None:
    hall = Hall(only(Rules(), "silent"))
    hall.telemetry()
    hall.advance(20 * 60)
    [alert] = hall.raised(DEVICE_SILENT)
    snapshot = hall.watcher.snapshot()
    again = Hall(only(Rules(), "silent"), snapshot=snapshot, now=hall.now + 30)
    again.advance(5 * 60)
    assert again.resolved(DEVICE_SILENT) == []
    assert alert.key in again.watcher.open


# A restored state file: whatever number is in a time, every alert can be sent -------

ANY_TIME = st.one_of(st.integers(min_value=-10**30, max_value=10**30),
                     st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8))


@settings(max_examples=200, deadline=None)
@given(first_seen=ANY_TIME, raised_at=ANY_TIME, last_raised=ANY_TIME,
       pending=ANY_TIME)
def test_any_time_in_a_restored_state_gives_alerts_that_can_be_sent(
        first_seen: Any, raised_at: Any, last_raised: Any, pending: Any) -> None:
    hall = Hall(only(Rules(), "silent", "backlog"))
    snapshot = {
        "version": 1, "devices": {DEVICE: {"first_heard": hall.now - 3600}},
        "open": {f"backlog|{DEVICE}|": {
            "alert_id": "a" * 32, "kind": "backlog", "condition": "", "severity": "warning",
            "device_id": DEVICE, "hall_id": "HG01", "window_id": "W03",
            "region_code": "421100", "evidence": {}, "first_seen": first_seen,
            "raised_at": raised_at, "resolved_at": None}},
        "last_raised": {f"backlog|{DEVICE}|": last_raised},
        "pending_since": {f"device_silent|{DEVICE}|": pending},
    }
    try:
        watcher = Watcher(hall.watcher.rules, hall.calendar, snapshot=snapshot)
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError):
        return  # the service logs it and starts afresh
    watcher.handle(BrokerLink(True, hall.now))
    for minutes in (1, 20, 40):
        for alert in watcher.handle(Tick(hall.now + minutes * 60)):
            alert_payload(alert, "w", hall.now + minutes * 60)


def test_a_cooldown_saved_by_a_clock_that_was_ahead_lasts_no_longer_than_a_cooldown(
        ) -> None:
    """The state was saved while the clock was a day ahead; corrected while the watcher
    was stopped. The raise 'tomorrow' held the alert back for a day and an hour."""
    first = Hall(only(Rules(), "silent"), now=local(24, 10))  # Tuesday, a day ahead
    first.telemetry()
    first.advance(16 * 60)
    assert len(first.raised(DEVICE_SILENT)) == 1
    first.telemetry()
    assert len(first.resolved(DEVICE_SILENT)) == 1
    again = Hall(only(Rules(), "silent"), snapshot=first.watcher.snapshot(),
                 now=local(23, 10))  # Monday, the right day
    again.telemetry()
    again.advance(16 * 60)
    assert again.raised(DEVICE_SILENT) == []   # the cooldown, from now
    again.advance(60 * 60)
    assert len(again.raised(DEVICE_SILENT)) == 1


def test_silence_noted_by_a_clock_that_was_ahead_counts_from_now() -> None:
    """Last telemetry saved while the clock was a day ahead: a device dead since then
    was reported only once our clock had caught up with 'tomorrow'."""
    first = Hall(only(Rules(), "silent", "clock"), now=local(24, 10))  # a day ahead
    first.telemetry(clock_synced=False)
    again = Hall(only(Rules(), "silent", "clock"), snapshot=first.watcher.snapshot(),
                 now=local(23, 10))
    again.advance(31 * 60)
    assert len(again.raised(DEVICE_SILENT)) == 1
    assert len(again.raised("clock_unsynced")) == 1


def test_bad_ratings_noted_by_a_clock_that_was_ahead_do_not_keep_a_burst_open() -> None:
    """Ratings from an unsynchronised device are dated by arrival; saved while our
    clock was a day ahead, they counted as fresh for a day and the burst stayed open."""
    from broker_bridge.watch.model import BAD_BURST

    first = Hall(only(Rules(), "bad_burst"), now=local(24, 10))
    for _ in range(3):
        first.rate(1, clock_synced=False)
    assert len(first.raised(BAD_BURST)) == 1
    again = Hall(only(Rules(), "bad_burst"), snapshot=first.watcher.snapshot(),
                 now=local(23, 10))
    again.advance(11 * 60)
    assert len(again.resolved(BAD_BURST)) == 1


def test_a_flood_of_ratings_from_one_device_keeps_its_work_bounded() -> None:
    """Every rating within the longest time window was kept, and each message made the
    rules walk (and sort) all of them: 10,000 distinct ratings within ten minutes cost
    6 ms a message and 30 s in all, 20,000 cost 90 s, while every other device's
    messages and the ticks waited behind them."""
    from broker_bridge.watch.model import POSSIBLE_GAMING, RatingSeen
    from broker_bridge.watch.rules import RATINGS_KEPT_MAX
    from tests.support.ratings import make_rating
    from tests.test_watch_rules import iso

    hall = Hall(Rules())
    start = hall.now
    for i in range(RATINGS_KEPT_MAX + 500):
        hall.now = start + i * 0.05
        hall.feed(RatingSeen(DEVICE, make_rating(DEVICE, 1 + i % 2, rated_at=iso(hall.now)),
                             hall.now))
    track = hall.watcher.devices[DEVICE]
    assert len(track.ratings) == RATINGS_KEPT_MAX
    assert len(hall.raised(POSSIBLE_GAMING)) == 1 and len(hall.raised("bad_rating_burst")) == 1
