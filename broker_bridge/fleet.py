"""What the devices' status, telemetry and event messages say about the fleet, turned
into gauges and counters. Metrics only: nothing here affects delivery.

Every field a device sends is checked before it reaches a metric (bounds in
broker_bridge/device_numbers.py); a refused field is a rate-limited warning naming the
device and the field, never an exception: these messages are retained, and one that
raised would stop the bridge again at every start.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from broker_bridge import device_numbers
from broker_bridge.device_numbers import QuietWarnings, Refused
from broker_bridge.metrics import BridgeMetrics
from common.rating import InvalidRecord, decode_json_object

MAX_DEVICE_MESSAGE = 64 * 1024

log = logging.getLogger("hcp.bridge.fleet")


class FleetView:
    """Devices online (retained status) and their backlog (last telemetry).
    Not thread-safe: owned by the bridge loop."""

    def __init__(self, metrics: BridgeMetrics,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._metrics = metrics
        self._online: dict[str, bool] = {}
        self._backlog: dict[str, int] = {}
        self._backlog_sum = 0
        self._warnings = QuietWarnings(log, clock)

    def status(self, device_id: str, payload: bytes) -> None:
        if not payload:  # retained status cleared: the device was removed
            self._online.pop(device_id, None)
            self._set_backlog(device_id, None)
        else:
            status = self._json_object(device_id, "status", payload)
            if status is None:
                return
            online = status.get("online")
            if not isinstance(online, bool):
                self._warnings.warn(f"status from {device_id} refused: online must be "
                                    f"true or false, got {device_numbers.describe(online)}")
                return
            self._online[device_id] = online
            if not online:
                self._set_backlog(device_id, None)
        self._metrics.devices_online.set(sum(self._online.values()))

    def telemetry(self, device_id: str, payload: bytes) -> None:
        telemetry = self._json_object(device_id, "telemetry", payload)
        if telemetry is None or "backlog" not in telemetry:
            return
        try:
            backlog = device_numbers.count(telemetry["backlog"], device_id, "backlog")
        except Refused as e:
            # The device's backlog is unknown now: leave it out of the sum rather than
            # keep a figure the device itself no longer stands behind.
            self._warnings.warn(f"telemetry refused: {e}")
            self._set_backlog(device_id, None)
            return
        self._set_backlog(device_id, backlog)

    def event(self, device_id: str, payload: bytes) -> None:
        event = self._json_object(device_id, "event", payload)
        self._metrics.count_event(event.get("event") if event else None)

    def _set_backlog(self, device_id: str, backlog: int | None) -> None:
        old = self._backlog.pop(device_id, 0)
        if backlog is not None:
            self._backlog[device_id] = backlog
        self._backlog_sum += (backlog or 0) - old
        self._metrics.devices_backlog.set(self._backlog_sum)

    def _json_object(self, device_id: str, kind: str, payload: bytes) -> dict[str, Any] | None:
        if len(payload) > MAX_DEVICE_MESSAGE:
            self._warnings.warn(f"{kind} from {device_id} refused: {len(payload)} bytes, "
                                f"at most {MAX_DEVICE_MESSAGE}")
            return None
        try:
            return decode_json_object(payload)
        except InvalidRecord as e:
            self._warnings.warn(f"{kind} from {device_id} refused: {e.reason}: {e.detail}")
            return None
