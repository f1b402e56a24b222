"""What the watcher remembers about one device: its recent ratings (deduplicated by
rating_id, bounded), its last status and telemetry, and since when its clock has been
unsynchronised. Plain data plus the bookkeeping that keeps it bounded; no rules here."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

# The latest time (POSIX seconds, 2100-01-01) a state file may hold for a device.
LATEST_SAVED_TIME = 4_102_444_800.0

# A rated_at this far ahead of our clock cannot be trusted as "when", even if the device
# says its clock is synchronised.
FUTURE_SKEW_S = 300.0


@dataclass(slots=True)
class RatingEntry:
    rating_id: str
    at: float        # the device's rated_at: spacing between a device's own ratings
    fresh_at: float  # rated_at when the device's clock is trusted, else when we saw it
    level: int
    reason: str | None
    spontaneous: bool

    def to_json(self) -> list[Any]:
        return [self.rating_id, self.at, self.fresh_at, self.level, self.reason,
                self.spontaneous]

    @classmethod
    def from_json(cls, data: Any) -> RatingEntry:
        rating_id, at, fresh_at, level, reason, spontaneous = data
        return cls(str(rating_id), float(at), float(fresh_at), int(level),
                   None if reason is None else str(reason), bool(spontaneous))


@dataclass
class DeviceTrack:
    device_id: str
    first_heard: float
    hall_id: str | None = None
    window_id: str | None = None
    region_code: str | None = None
    online: bool | None = None
    offline_since: float | None = None
    last_telemetry: float | None = None
    backlog: int | None = None
    oldest_pending_s: float | None = None
    unsynced_since: float | None = None
    ratings: list[RatingEntry] = field(default_factory=list)  # sorted by `at`
    # Ids of ratings from an untrusted clock, oldest first. Those are dated by arrival,
    # so a re-sent copy would look fresh again; ratings from a trusted clock need no
    # list: a copy is either still in `ratings` or too old for every rule.
    seen: dict[str, None] = field(default_factory=dict)

    def add_rating(self, entry: RatingEntry, dedupe_max: int) -> bool:
        """Remember a rating; False (and nothing changes) when it was counted before."""
        if self.counted(entry.rating_id):
            return False
        if entry.fresh_at != entry.at:
            self.seen[entry.rating_id] = None
            while len(self.seen) > dedupe_max:
                del self.seen[next(iter(self.seen))]
        keys = [e.at for e in self.ratings]
        self.ratings.insert(bisect.bisect_right(keys, entry.at), entry)
        return True

    def prune(self, now: float, keep_last: int, keep_fresh_s: float,
              keep_max: int | None = None) -> None:
        """Keep the latest `keep_last` ratings and those seen within `keep_fresh_s`, at
        most the latest `keep_max` in all."""
        if len(self.ratings) <= keep_last:
            return
        cut = len(self.ratings) - keep_last
        horizon = now - keep_fresh_s
        self.ratings = [e for i, e in enumerate(self.ratings)
                        if i >= cut or e.fresh_at > horizon]
        if keep_max is not None and len(self.ratings) > keep_max:
            del self.ratings[:len(self.ratings) - keep_max]

    def shift(self, step_s: float) -> None:
        """Our clock was stepped by `step_s`: move the times we noted on it."""
        self.first_heard += step_s
        for name in ("offline_since", "last_telemetry", "unsynced_since"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value + step_s)
        for e in self.ratings:
            if e.fresh_at != e.at or e.rating_id in self.seen:  # dated by arrival
                e.fresh_at += step_s

    def not_after(self, now: float) -> None:
        """Times of ours later than `now` were noted by a clock that was ahead (a state
        saved then): they become `now`, else silence and an unsynced clock would count
        only once our clock had caught up."""
        self.first_heard = min(self.first_heard, now)
        for name in ("offline_since", "last_telemetry", "unsynced_since"):
            value = getattr(self, name)
            if value is not None and value > now:
                setattr(self, name, now)
        for e in self.ratings:
            if e.fresh_at > now + FUTURE_SKEW_S:  # beyond what a trusted clock may say
                e.fresh_at = now

    def last(self, n: int) -> list[RatingEntry]:
        return self.ratings[-n:] if n > 0 else []

    def fresh(self, now: float, within_s: float) -> list[RatingEntry]:
        horizon = now - within_s
        return [e for e in self.ratings if e.fresh_at > horizon]

    def to_json(self) -> dict[str, Any]:
        return {
            "first_heard": self.first_heard, "hall_id": self.hall_id,
            "window_id": self.window_id, "region_code": self.region_code,
            "online": self.online, "offline_since": self.offline_since,
            "last_telemetry": self.last_telemetry, "backlog": self.backlog,
            "oldest_pending_s": self.oldest_pending_s, "unsynced_since": self.unsynced_since,
            "ratings": [e.to_json() for e in self.ratings], "seen": list(self.seen),
        }

    @classmethod
    def from_json(cls, device_id: str, data: dict[str, Any]) -> DeviceTrack:
        track = cls(device_id, float(data["first_heard"]))
        for name in ("hall_id", "window_id", "region_code"):
            value = data.get(name)
            setattr(track, name, value if isinstance(value, str) else None)
        online = data.get("online")
        track.online = online if isinstance(online, bool) else None
        for name in ("offline_since", "last_telemetry", "oldest_pending_s", "unsynced_since"):
            number: Any = data.get(name)
            # Times of our own clock, or a duration: outside 0..2100 the file is damaged
            # (and iso_utc of it raised at every tick, for every device after this one).
            setattr(track, name, float(number) if _number(number)
                    and 0 <= number <= LATEST_SAVED_TIME else None)
        backlog = data.get("backlog")
        track.backlog = backlog if isinstance(backlog, int) and not isinstance(backlog, bool) \
            else None
        track.ratings = sorted((RatingEntry.from_json(e) for e in data.get("ratings", ())),
                               key=lambda e: e.at)
        track.seen = {str(r): None for r in data.get("seen", ())}
        return track

    def counted(self, rating_id: str) -> bool:
        """Is this rating among those the rules count or remember?"""
        return rating_id in self.seen or any(e.rating_id == rating_id for e in self.ratings)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
