"""What `hcp-sim fleet` counts: ratings stored, receipted and pending, and the latency from
each key press to the receipt that removed its rating from the outbox. Thread-safe: the
devices' loop threads report, the fleet's main thread reads."""

from __future__ import annotations

import math
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

STATUSES = ("accepted", "duplicate", "rejected")


class LatencyHistogram:
    """Latencies in buckets 1 % wide (log scale), so that a day-long soak test keeps a
    few thousand counters instead of every sample; percentiles are the upper edge of
    their bucket (at most 1 % high), capped at the exact maximum."""

    RATIO = 1.01
    _LOG_RATIO = math.log(RATIO)
    FLOOR_MS = 0.01

    def __init__(self) -> None:
        self.buckets: Counter[int] = Counter()
        self.count = 0
        self.total_ms = 0.0
        self.max_ms = 0.0

    def add(self, seconds: float) -> None:
        ms = max(seconds * 1000.0, self.FLOOR_MS)
        self.buckets[math.ceil(math.log(ms / self.FLOOR_MS) / self._LOG_RATIO)] += 1
        self.count += 1
        self.total_ms += ms
        self.max_ms = max(self.max_ms, ms)

    def percentile(self, p: float) -> float | None:
        """The p-th percentile (nearest rank, p in 0..100) in ms; None when empty."""
        if not self.count:
            return None
        rank = max(1, math.ceil(p / 100.0 * self.count))
        seen = 0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= rank:
                return min(self.FLOOR_MS * self.RATIO ** index, self.max_ms)
        return self.max_ms  # pragma: no cover - the counts add up to self.count

    def summary(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for name, p in (("p50", 50.0), ("p90", 90.0), ("p99", 99.0)):
            value = self.percentile(p)
            out[name] = None if value is None else round(value, 1)
        out["max"] = round(self.max_ms, 1) if self.count else None
        out["mean"] = round(self.total_ms / self.count, 1) if self.count else None
        return out

    def to_json(self) -> dict[str, Any]:
        return {"buckets": {str(k): v for k, v in self.buckets.items()}, "count": self.count,
                "total_ms": self.total_ms, "max_ms": self.max_ms}

    def merge_json(self, data: dict[str, Any]) -> None:
        """Add another histogram's `to_json()` (a worker process's) to this one."""
        for key, n in data["buckets"].items():
            self.buckets[int(key)] += int(n)
        self.count += int(data["count"])
        self.total_ms += float(data["total_ms"])
        self.max_ms = max(self.max_ms, float(data["max_ms"]))


@dataclass(frozen=True)
class Progress:
    sent: int            # ratings stored in the devices' outboxes (thanks shown)
    receipted: int       # … of which a receipt removed them
    pending: int         # … still waiting for a receipt
    carried_over: int    # receipts for ratings an earlier run left in the outboxes


class FleetStats:
    """`keep_ids` also remembers every rating_id stored (tests compare them with the
    platform's); off by default so that a soak test's memory stays flat."""

    def __init__(self, keep_ids: bool = False) -> None:
        self._lock = threading.Lock()
        self.rating_ids: list[str] | None = [] if keep_ids else None
        self._pressed: dict[str, float | None] = {}  # pending rating_id -> press time
        self.latency = LatencyHistogram()
        self._statuses: Counter[str] = Counter()
        self.sent = 0
        self.receipted = 0
        self.carried_over = 0

    def stored(self, rating_id: str, pressed_at: float | None) -> None:
        with self._lock:
            self.sent += 1
            self._pressed[rating_id] = pressed_at
            if self.rating_ids is not None:
                self.rating_ids.append(rating_id)

    def receipted_now(self, receipts: dict[str, str], now: float) -> None:
        with self._lock:
            for rating_id, status in receipts.items():
                if rating_id not in self._pressed:
                    self.carried_over += 1
                    continue
                pressed_at = self._pressed.pop(rating_id)
                self.receipted += 1
                self._statuses[status] += 1
                if pressed_at is not None:
                    self.latency.add(now - pressed_at)

    def progress(self) -> Progress:
        with self._lock:
            return Progress(self.sent, self.receipted, len(self._pressed), self.carried_over)

    def statuses(self) -> dict[str, int]:
        with self._lock:
            return {s: self._statuses.get(s, 0) for s in STATUSES}

    def latency_copy(self) -> LatencyHistogram:
        with self._lock:
            copy = LatencyHistogram()
            copy.merge_json(self.latency.to_json())
            return copy
