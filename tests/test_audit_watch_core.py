"""Audit of the watcher's core (broker_bridge/watch/rules.py): alerts that stay right
across the watcher's own reconnects and restarts, and across its clock stepping."""

from __future__ import annotations

from broker_bridge.watch.model import DEVICE_SILENT, BrokerLink, StatusSeen
from broker_bridge.watch.rules import Watcher
from broker_bridge.watch.settings import Rules
from tests.test_watch_rules import DEVICE, Hall, only


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

from typing import Any  # noqa: E402

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from broker_bridge.watch.alerts import alert_payload  # noqa: E402
from broker_bridge.watch.model import Tick  # noqa: E402

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
