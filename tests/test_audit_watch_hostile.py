"""Audit: any JSON in any field of a device's status, telemetry, event or rating, on any
topic, is handled without an unexpected failure, and every alert it leads to can be
sent (hypothesis, through the service's decoding and the core)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker_bridge.mqtt_link import Incoming, LinkUp
from broker_bridge.watch.service import WatchService
from tests.support.ratings import make_rating
from tests.test_audit_watch_service import MONDAY_10, Clock, FakeLink, config
from tests.test_watch_rules import DEVICE, iso

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-10**40, max_value=10**40)
    | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3),
    max_leaves=8)
FIELDS = {
    "status": ("online", "version", "since", "staff"),
    "telemetry": ("backlog", "oldest_pending_s", "clock_synced", "at", "uptime_s",
                  "faults"),
    "event": ("event", "at", "case_id"),
    "rating": ("rated_at", "level", "clock_synced", "trigger", "reason", "hall_id",
               "rating_id", "seq"),
}
GOOD: dict[str, dict[str, Any]] = {
    "status": {"online": True},
    "telemetry": {"backlog": 3, "oldest_pending_s": 40, "clock_synced": True},
    "event": {"event": "clock_unsynced"},
}


def message(kind: str, field: str, value: Any, now: float) -> bytes:
    body: dict[str, Any] = (make_rating(DEVICE, 1, rated_at=iso(now)) if kind == "rating"
                            else dict(GOOD[kind]))
    body[field] = value
    return json.dumps(body).encode()


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.tuples(st.sampled_from(sorted(FIELDS)), st.data()), min_size=1,
                      max_size=6))
def test_any_value_in_any_field_is_handled(tmp_path: Path, steps: Any) -> None:
    clock = Clock(MONDAY_10)
    service = WatchService(config(tmp_path), clock=clock, link_factory=FakeLink)
    link: FakeLink = service.link  # type: ignore[assignment]
    service._contained(LinkUp(1, False))
    for kind, data in steps:
        field = data.draw(st.sampled_from(FIELDS[kind]))
        value = data.draw(JSON)
        payload = message(kind, field, value, clock.now)
        service._contained(Incoming(1, f"hcp/v1/{DEVICE}/{kind}", payload, 0, 1, False))
        clock.now += data.draw(st.sampled_from([1, 60, 20 * 60, 3 * 3600]))
        service._tick()
    assert service.failures == 0
    for alert in link.published:
        assert isinstance(alert["summary"], str) and alert["summary"]
