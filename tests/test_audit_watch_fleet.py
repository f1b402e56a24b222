"""Audit of the bridge's fleet view (broker_bridge/fleet.py): whatever the devices send,
in any order, the online and backlog gauges equal what the last accepted status and
telemetry of each device say, and nothing raises (hypothesis, model-based)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from broker_bridge.device_numbers import MAX_BACKLOG
from broker_bridge.fleet import FleetView
from broker_bridge.metrics import BridgeMetrics

DEVICES = ("D1", "D2", "D3")
VALUE = st.one_of(st.none(), st.booleans(), st.integers(min_value=-10**30, max_value=10**30),
                  st.floats(), st.text(max_size=5), st.just([]), st.just({}))
MESSAGE = st.one_of(
    st.tuples(st.just("status"), st.sampled_from(DEVICES),
              st.one_of(st.just(b""), st.just(b"not json"),
                        st.builds(lambda v: json.dumps({"online": v}).encode(), VALUE))),
    st.tuples(st.just("telemetry"), st.sampled_from(DEVICES),
              st.one_of(st.just(b"{}"), st.just(b"[1]"),
                        st.builds(lambda v: json.dumps({"backlog": v}).encode(), VALUE))),
    st.tuples(st.just("event"), st.sampled_from(DEVICES),
              st.builds(lambda v: json.dumps({"event": v}).encode(), VALUE)),
)


def gauge(metrics: BridgeMetrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name)
    assert value is not None
    return value


@settings(max_examples=400, deadline=None)
@given(st.lists(MESSAGE, max_size=30))
def test_the_gauges_follow_the_last_accepted_messages(messages: list[Any]) -> None:
    metrics = BridgeMetrics()
    fleet = FleetView(metrics, clock=lambda: 0.0)
    online: dict[str, bool] = {}
    backlog: dict[str, int] = {}
    for kind, device, payload in messages:
        getattr(fleet, kind)(device, payload)
        body = None
        try:
            body = json.loads(payload) if payload else None
        except ValueError:
            pass
        if kind == "status":
            if not payload:
                online.pop(device, None)
                backlog.pop(device, None)
            elif isinstance(body, dict) and isinstance(body.get("online"), bool):
                online[device] = body["online"]
                if not body["online"]:
                    backlog.pop(device, None)
        elif kind == "telemetry" and isinstance(body, dict) and "backlog" in body:
            value = body["backlog"]
            if type(value) is int and 0 <= value <= MAX_BACKLOG:
                backlog[device] = value
            else:  # null or refused: unknown now
                backlog.pop(device, None)
        assert gauge(metrics, "hcp_bridge_devices_online") == sum(online.values())
        assert gauge(metrics, "hcp_bridge_devices_backlog") == sum(backlog.values())
