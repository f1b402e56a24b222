"""What goes into the watcher's core (what the devices said, and time passing) and what
comes out (alerts raised and resolved). Plain data, no behaviour."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

BAD_BURST = "bad_rating_burst"
LOW_SATISFACTION = "low_satisfaction"
DEVICE_SILENT = "device_silent"
BACKLOG = "backlog"
POSSIBLE_GAMING = "possible_gaming"
CLOCK_UNSYNCED = "clock_unsynced"
KINDS = (BAD_BURST, LOW_SATISFACTION, DEVICE_SILENT, BACKLOG, POSSIBLE_GAMING, CLOCK_UNSYNCED)

# The two conditions of possible_gaming are separate problems (separate alerts).
RATING_RATE = "rating_rate"
SPONTANEOUS_SHARE = "spontaneous_share"


@dataclass(frozen=True, slots=True)
class RatingSeen:
    """A valid rating record (SPEC §6) from the topic of `device_id`."""

    device_id: str
    record: Mapping[str, Any]
    now: float


@dataclass(frozen=True, slots=True)
class StatusSeen:
    """The retained status: online true/false, or None when it was cleared (the device
    was removed from the fleet)."""

    device_id: str
    online: bool | None
    now: float


@dataclass(frozen=True, slots=True)
class TelemetrySeen:
    device_id: str
    backlog: int | None
    oldest_pending_s: float | None
    clock_synced: bool | None
    now: float


@dataclass(frozen=True, slots=True)
class EventSeen:
    """A device event by name (clock_unsynced, clock_synced, prompt_expired, …)."""

    device_id: str
    name: str
    now: float


@dataclass(frozen=True, slots=True)
class BrokerLink:
    """The watcher's own broker connection came up or went down. While it is down the
    watcher hears nothing, and silence it did not witness is not a device's fault."""

    up: bool
    now: float


@dataclass(frozen=True, slots=True)
class Tick:
    now: float


@dataclass(frozen=True, slots=True)
class ClockStep:
    """The watcher's own clock jumped by `step_s` (NTP stepping it, an operator, a
    resume from suspend) while time went on by its monotonic clock: the times noted on
    the old clock are moved by as much, so a step forward is no silence and a step back
    no endless cooldown."""

    step_s: float
    now: float


WatchEvent = (RatingSeen | StatusSeen | TelemetrySeen | EventSeen | BrokerLink | Tick
              | ClockStep)


@dataclass(frozen=True, slots=True)
class Alert:
    """One problem at one device. Raised once; the same `alert_id` comes again with
    `resolved_at` set when the condition clears."""

    alert_id: str
    kind: str
    condition: str          # "" except for possible_gaming (rating_rate, spontaneous_share)
    severity: str
    device_id: str
    hall_id: str | None
    window_id: str | None
    region_code: str | None
    evidence: dict[str, Any] = field(default_factory=dict)
    first_seen: float = 0.0  # when the watcher first saw the condition hold
    raised_at: float = 0.0
    resolved_at: float | None = None

    @property
    def resolved(self) -> bool:
        return self.resolved_at is not None

    @classmethod
    def from_json(cls, data: Any) -> Alert | None:
        """An alert as saved in the watcher's state file, or None when any field is not
        what the watcher writes (a state file edited by hand, or damaged)."""
        if not isinstance(data, dict) or set(data) - _ALERT_FIELDS:
            return None
        text = ("alert_id", "kind", "condition", "severity", "device_id")
        place = ("hall_id", "window_id", "region_code")
        times = ("first_seen", "raised_at")
        if not all(isinstance(data.get(k), str) for k in text):
            return None
        if not all(k in data and (data[k] is None or isinstance(data[k], str))
                   for k in place):
            return None   # absent too: these have no default
        if not all(_finite(data.get(k, 0.0)) for k in times):
            return None
        resolved = data.get("resolved_at")
        if resolved is not None and not _finite(resolved):
            return None
        if not isinstance(data.get("evidence", {}), dict):
            return None
        return cls(**data)

    @property
    def key(self) -> str:
        return alert_key(self.kind, self.device_id, self.condition)


def alert_key(kind: str, device_id: str, condition: str = "") -> str:
    return f"{kind}|{device_id}|{condition}"


_ALERT_FIELDS = frozenset(f.name for f in fields(Alert))


def _finite(value: Any) -> bool:
    if isinstance(value, int) and not isinstance(value, bool):
        return abs(value) <= 2**1023   # math.isfinite raises OverflowError beyond
    return isinstance(value, float) and math.isfinite(value)
