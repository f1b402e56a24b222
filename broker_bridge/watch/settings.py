"""The rules' thresholds. The defaults here are the documented defaults (docs/alerts.md);
the config schema is built from these dataclasses, so there is one place for them."""

from __future__ import annotations

from dataclasses import dataclass, field

SEVERITIES = ("info", "warning", "critical")


@dataclass(frozen=True)
class BadBurst:
    """≥ `count` ratings of level ≤ 2 at one window within `within_min` minutes."""

    enabled: bool = True
    count: int = 3
    within_min: float = 10.0
    cooldown_min: float = 60.0
    severity: str = "warning"


@dataclass(frozen=True)
class LowSatisfaction:
    """The satisfaction rate of a window's last `last_n` ratings below `below_pct`
    (judged once it has at least `min_ratings`)."""

    enabled: bool = True
    below_pct: float = 80.0
    last_n: int = 20
    min_ratings: int = 10
    cooldown_min: float = 240.0
    severity: str = "warning"


@dataclass(frozen=True)
class Silent:
    """Offline, or no telemetry, for more than `after_min` minutes of opening hours."""

    enabled: bool = True
    after_min: float = 15.0
    cooldown_min: float = 60.0
    severity: str = "critical"


@dataclass(frozen=True)
class Backlog:
    """More than `max_backlog` ratings waiting on a device, or the oldest waiting longer
    than `max_oldest_min` minutes."""

    enabled: bool = True
    max_backlog: int = 50
    max_oldest_min: float = 30.0
    cooldown_min: float = 60.0
    severity: str = "warning"


@dataclass(frozen=True)
class Gaming:
    """More than `max_ratings` ratings from one device within `within_s` seconds, or a
    share of spontaneous ratings of at least `spontaneous_pct` among the last `last_n`
    (judged once there are `min_ratings`)."""

    enabled: bool = True
    max_ratings: int = 5
    within_s: float = 60.0
    spontaneous_pct: float = 60.0
    last_n: int = 20
    min_ratings: int = 10
    cooldown_min: float = 240.0
    severity: str = "warning"


@dataclass(frozen=True)
class Clock:
    """A device reporting an unsynchronised clock for more than `after_min` minutes."""

    enabled: bool = True
    after_min: float = 30.0
    cooldown_min: float = 240.0
    severity: str = "warning"


@dataclass(frozen=True)
class Rules:
    bad_burst: BadBurst = field(default_factory=BadBurst)
    low_satisfaction: LowSatisfaction = field(default_factory=LowSatisfaction)
    silent: Silent = field(default_factory=Silent)
    backlog: Backlog = field(default_factory=Backlog)
    gaming: Gaming = field(default_factory=Gaming)
    clock: Clock = field(default_factory=Clock)

    def keep_last(self) -> int:
        """How many of a device's latest ratings the last-N rules need."""
        needs = [0]
        if self.low_satisfaction.enabled:
            needs.append(self.low_satisfaction.last_n)
        if self.gaming.enabled:
            needs.append(self.gaming.last_n)
        return max(needs)

    def keep_fresh_s(self) -> float:
        """How long the time-window rules need a rating after it was seen."""
        needs = [0.0]
        if self.bad_burst.enabled:
            needs.append(self.bad_burst.within_min * 60)
        if self.gaming.enabled:
            needs.append(self.gaming.within_s)
        return max(needs)
