"""Device events (SPEC §7 `event` topic): stamped with the clock seam's wall time, logged,
published while the broker is connected and kept in memory while it is not (the last
EVENT_BUFFER), to be published after the next connect."""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

from device.clock import Clock, iso_utc
from device.uplink import Uplink

log = logging.getLogger("hcp.device")

EVENT_BUFFER = 256


class EventBuffer:
    def __init__(self, clock: Clock, uplink: Uplink) -> None:
        self.clock = clock
        self.uplink = uplink
        self._waiting: deque[dict[str, Any]] = deque(maxlen=EVENT_BUFFER)

    def emit(self, name: str, details: dict[str, Any]) -> None:
        # %s of a dict shows its strings as repr: a newline in a case id stays "\n".
        log.info("event %s %s", name, details)
        payload = {"event": name, "at": iso_utc(self.clock.wall()), **details}
        if self.uplink.connected():
            self.uplink.publish("event", payload)
        elif self.uplink.enabled:
            self._waiting.append(payload)

    def flush(self) -> None:
        """Connected again: what happened meanwhile, oldest first."""
        while self._waiting:
            self.uplink.publish("event", self._waiting.popleft())

    def __len__(self) -> int:
        return len(self._waiting)
