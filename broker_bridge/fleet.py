"""What the devices' status, telemetry and event messages say about the fleet, turned
into gauges and counters. Metrics only: nothing here affects delivery."""

from __future__ import annotations

import json
from typing import Any

from broker_bridge.metrics import BridgeMetrics

MAX_DEVICE_MESSAGE = 64 * 1024


class FleetView:
    """Devices online (retained status) and their backlog (last telemetry).
    Not thread-safe: owned by the bridge loop."""

    def __init__(self, metrics: BridgeMetrics) -> None:
        self._metrics = metrics
        self._online: dict[str, bool] = {}
        self._backlog: dict[str, int] = {}
        self._backlog_sum = 0

    def status(self, device_id: str, payload: bytes) -> None:
        if not payload:  # retained status cleared: the device was removed
            self._online.pop(device_id, None)
            self._set_backlog(device_id, None)
        else:
            status = _json_object(payload)
            if status is None or not isinstance(status.get("online"), bool):
                return
            self._online[device_id] = status["online"]
            if not status["online"]:
                self._set_backlog(device_id, None)
        self._metrics.devices_online.set(sum(self._online.values()))

    def telemetry(self, device_id: str, payload: bytes) -> None:
        telemetry = _json_object(payload)
        backlog = telemetry.get("backlog") if telemetry else None
        if isinstance(backlog, int) and not isinstance(backlog, bool) and backlog >= 0:
            self._set_backlog(device_id, backlog)

    def event(self, payload: bytes) -> None:
        event = _json_object(payload)
        self._metrics.count_event(event.get("event") if event else None)

    def _set_backlog(self, device_id: str, backlog: int | None) -> None:
        old = self._backlog.pop(device_id, 0)
        if backlog is not None:
            self._backlog[device_id] = backlog
        self._backlog_sum += (backlog or 0) - old
        self._metrics.devices_backlog.set(self._backlog_sum)


def _json_object(payload: bytes) -> dict[str, Any] | None:
    if len(payload) > MAX_DEVICE_MESSAGE:
        return None
    try:
        obj = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None
