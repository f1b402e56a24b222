"""A short-lived memory of the platform's answers, so a redelivered or re-sent rating
gets its receipt without a second platform call.

Only an optimisation: the platform's de-duplication by rating_id is the guarantee, so
losing this cache (restart, eviction, another bridge in the group) costs a request,
never a rating.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Answer:
    """What the platform said about one rating."""

    status: str
    error: str | None


class RecentAnswers:
    """(device_id, rating_id) → Answer, dropped after `ttl_s` seconds or beyond
    `max_entries` (oldest first). Keyed by device too: a record that borrows another
    device's rating_id neither gets nor overwrites that device's answer — it goes to the
    platform, which decides. Not thread-safe: owned by the bridge's main loop."""

    def __init__(self, ttl_s: float, max_entries: int) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str], tuple[float, Answer]] = OrderedDict()
        # When the oldest entry expires (or earlier): put() skips the eviction scan
        # until then. The bridge calls put() for every rating.
        self._oldest_expires = math.inf

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, rating_id: str, device_id: str, now: float) -> Answer | None:
        key = (device_id, rating_id)
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, answer = entry
        if expires <= now:
            del self._entries[key]
            return None
        return answer

    def put(self, rating_id: str, device_id: str, answer: Answer, now: float) -> None:
        if self.max_entries <= 0 or self.ttl_s <= 0:
            return
        key = (device_id, rating_id)
        entries = self._entries
        if key in entries:
            entries.move_to_end(key)
        entries[key] = (now + self.ttl_s, answer)
        if len(entries) == 1:
            self._oldest_expires = now + self.ttl_s
        if len(entries) > self.max_entries or now >= self._oldest_expires:
            self._evict(now)

    def _evict(self, now: float) -> None:
        entries = self._entries
        while len(entries) > self.max_entries:
            entries.popitem(last=False)
        # Entries are in insertion order with one TTL, so expired ones are at the front.
        self._oldest_expires = math.inf
        while entries:
            key, (expires, _) = next(iter(entries.items()))
            if expires > now:
                self._oldest_expires = expires
                break
            del entries[key]
