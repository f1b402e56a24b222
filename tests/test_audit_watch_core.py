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
