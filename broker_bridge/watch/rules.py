"""The watcher's core: events in (ratings, status, telemetry, device events, the
watcher's own broker link, ticks), alerts out (raised, resolved). Pure: time arrives in
the events, nothing here reads a clock, a file or a socket, so every rule is tested in
virtual time.

Lifecycle of one problem (one kind at one device): while its condition holds and no
alert is open, an alert is raised — unless one was raised less than `cooldown_min`
ago, in which case it is raised when the cooldown ends if the condition still holds.
It stays open (nothing more is sent) while the condition holds and is resolved, with
the same alert_id, when the condition clears. So a problem is one alert, and a
flapping one at most one raise per cooldown.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from broker_bridge.satisfaction import GOOD_LEVELS, format_rate, percent, satisfaction_rate
from broker_bridge.watch.alerts import iso_utc
from broker_bridge.watch.hours import HallCalendar
from broker_bridge.watch.model import (
    BACKLOG,
    BAD_BURST,
    CLOCK_UNSYNCED,
    DEVICE_SILENT,
    KINDS,
    LOW_SATISFACTION,
    POSSIBLE_GAMING,
    RATING_RATE,
    SPONTANEOUS_SHARE,
    Alert,
    BrokerLink,
    ClockStep,
    EventSeen,
    RatingSeen,
    StatusSeen,
    TelemetrySeen,
    Tick,
    WatchEvent,
    alert_key,
)
from broker_bridge.watch.settings import Rules
from broker_bridge.watch.tracks import (
    FUTURE_SKEW_S,
    LATEST_SAVED_TIME,
    DeviceTrack,
    RatingEntry,
)

STATE_VERSION = 1
# Ratings kept per device at most (unless a rule's threshold needs more): a device
# rating faster than that is gaming already, and every message walks them all.
RATINGS_KEPT_MAX = 1000
EVIDENCE_IDS = 10  # rating ids quoted in an alert's evidence
# Device ids kept at most ([watch] max_devices): well above a province's windows per
# watcher. Every tick walks them all (20,000 ids: 0.9 s a tick), and only a client the
# broker's ACL lets publish under other devices' ids can invent more.
DEFAULT_MAX_DEVICES = 5000


@dataclass(frozen=True, slots=True)
class Finding:
    """One rule's verdict for one device: does its condition hold, and why."""

    kind: str
    condition: str
    holds: bool
    evidence: dict[str, Any]


class Watcher:
    """All devices, all rules. Not thread-safe: owned by one loop."""

    def __init__(self, rules: Rules, calendar: HallCalendar, dedupe_per_device: int = 500,
                 snapshot: dict[str, Any] | None = None,
                 max_devices: int = DEFAULT_MAX_DEVICES) -> None:
        self.rules = rules
        self.max_devices = max_devices
        # Messages (and saved devices) from new device ids ignored: max_devices reached.
        self.devices_ignored = 0
        self.calendar = calendar
        self._keep_last = rules.keep_last()
        self._keep_fresh_s = rules.keep_fresh_s()
        self._dedupe_max = max(dedupe_per_device, 2 * self._keep_last)
        self._keep_max = max(RATINGS_KEPT_MAX, self._keep_last, rules.bad_burst.count,
                             rules.gaming.max_ratings + 1)
        self.devices: dict[str, DeviceTrack] = {}
        self.open: dict[str, Alert] = {}
        self._last_raised: dict[str, float] = {}
        self._pending_since: dict[str, float] = {}
        self._link_up = False
        self._listening_since: float | None = None
        self.duplicates = 0
        self.dirty = False          # something worth saving changed
        self.alerts_changed = False  # an alert was raised or resolved: save at once
        if snapshot is not None:
            self._restore(snapshot)

    # Events -------------------------------------------------------------------------

    def handle(self, event: WatchEvent) -> list[Alert]:
        """Apply one event; return the alerts raised and resolved because of it."""
        if isinstance(event, Tick):
            return self._evaluate_all(event.now)
        if isinstance(event, ClockStep):
            self._shift(event.step_s)
            return []
        if isinstance(event, BrokerLink):
            self._link_up = event.up
            if event.up:
                self._listening_since = event.now
            return []
        if isinstance(event, StatusSeen) and event.online is None:
            return self._forget(event.device_id, event.now)
        track = self._track(event.device_id, event.now)
        if track is None:
            self.devices_ignored += 1
            return []
        if isinstance(event, RatingSeen):
            if not self._add_rating(track, event.record, event.now):
                self.duplicates += 1
                return []
        elif isinstance(event, StatusSeen):
            if event.online is False and track.online is not False:
                track.offline_since = event.now
            elif event.online:
                track.offline_since = None
            track.online = event.online
        elif isinstance(event, TelemetrySeen):
            track.last_telemetry = event.now
            track.backlog = event.backlog
            track.oldest_pending_s = event.oldest_pending_s
            if event.clock_synced is not None:
                self._clock_state(track, event.clock_synced, event.now)
        elif isinstance(event, EventSeen):
            if event.name == "clock_unsynced":
                self._clock_state(track, False, event.now)
            elif event.name == "clock_synced":
                self._clock_state(track, True, event.now)
        self.dirty = True
        return self._evaluate(track, event.now)

    def _track(self, device_id: str, now: float) -> DeviceTrack | None:
        """The device's track, new if there is room for it; None when max_devices are
        known and this is not one of them."""
        track = self.devices.get(device_id)
        if track is None:
            if len(self.devices) >= self.max_devices:
                return None
            track = self.devices[device_id] = DeviceTrack(device_id, now)
        return track

    def _add_rating(self, track: DeviceTrack, record: Mapping[str, Any], now: float) -> bool:
        at = _timestamp(record["rated_at"])
        trusted = record["clock_synced"] is True and at <= now + FUTURE_SKEW_S
        entry = RatingEntry(record["rating_id"], at, at if trusted else now, record["level"],
                            record.get("reason"), record["trigger"] == "spontaneous")
        if not track.add_rating(entry, self._dedupe_max):
            return False
        track.hall_id = record["hall_id"]
        track.window_id = record["window_id"]
        track.region_code = record["region_code"]
        track.prune(now, self._keep_last, self._keep_fresh_s, self._keep_max)
        return True

    @staticmethod
    def _clock_state(track: DeviceTrack, synced: bool, now: float) -> None:
        if synced:
            track.unsynced_since = None
        elif track.unsynced_since is None:
            track.unsynced_since = now

    def _forget(self, device_id: str, now: float) -> list[Alert]:
        """The retained status was cleared: the device left the fleet."""
        track = self.devices.pop(device_id, None)
        if track is None:
            return []
        self.dirty = True
        out = []
        for key, alert in list(self.open.items()):
            if alert.device_id == device_id:
                out.append(self._resolve(key, {"reason": "device removed from the fleet "
                                                          "(retained status cleared)"}, now))
        for key in [k for k in self._pending_since if k.split("|")[1] == device_id]:
            del self._pending_since[key]
        return out

    def _shift(self, step_s: float) -> None:
        """Move every time noted on our own clock by `step_s` (the clock was stepped).
        Device times (rated_at of a trusted clock) and sent alerts stay as they are."""
        for track in self.devices.values():
            track.shift(step_s)
        self._last_raised = {k: t + step_s for k, t in self._last_raised.items()}
        self._pending_since = {k: t + step_s for k, t in self._pending_since.items()}
        if self._listening_since is not None:
            self._listening_since += step_s
        self.dirty = True

    # Evaluation ---------------------------------------------------------------------

    def _evaluate_all(self, now: float) -> list[Alert]:
        out: list[Alert] = []
        for track in list(self.devices.values()):
            track.prune(now, self._keep_last, self._keep_fresh_s, self._keep_max)
            out.extend(self._evaluate(track, now))
        self._expire_cooldowns(now)
        return out

    def _evaluate(self, track: DeviceTrack, now: float) -> list[Alert]:
        track.not_after(now)
        out: list[Alert] = []
        for finding in self._findings(track, now):
            change = self._apply(track, finding, now)
            if change is not None:
                out.append(change)
        return out

    def _findings(self, track: DeviceTrack, now: float) -> Iterable[Finding]:
        r = self.rules
        if r.bad_burst.enabled:
            yield self._bad_burst(track, now)
        if r.low_satisfaction.enabled:
            yield self._low_satisfaction(track)
        if r.silent.enabled:
            finding = self._silent(track, now)
            if finding is not None:
                yield finding
        if r.backlog.enabled:
            yield self._backlog(track)
        if r.gaming.enabled:
            yield from self._gaming(track, now)
        if r.clock.enabled:
            yield self._clock(track, now)

    def _bad_burst(self, track: DeviceTrack, now: float) -> Finding:
        rule = self.rules.bad_burst
        span = rule.within_min * 60
        bad = [e for e in track.fresh(now, span) if e.level not in GOOD_LEVELS]
        worst = _densest(bad, span)
        reasons: dict[str, int] = {}
        for e in worst:
            reasons[e.reason or "none"] = reasons.get(e.reason or "none", 0) + 1
        return Finding(BAD_BURST, "", len(worst) >= rule.count, {
            "bad_ratings": len(worst), "threshold": rule.count, "within_min": rule.within_min,
            "levels": {str(lv): sum(1 for e in worst if e.level == lv) for lv in (1, 2)},
            "reasons": reasons,
            "rating_ids": [e.rating_id for e in worst][-EVIDENCE_IDS:],
        })

    def _low_satisfaction(self, track: DeviceTrack) -> Finding:
        rule = self.rules.low_satisfaction
        last = track.last(rule.last_n)
        good = sum(1 for e in last if e.level in GOOD_LEVELS)
        rate = satisfaction_rate(good, len(last))
        holds = (len(last) >= rule.min_ratings and rate is not None
                 and rate < _decimal_pct(rule.below_pct))
        return Finding(LOW_SATISFACTION, "", holds, {
            "satisfaction_pct": format_rate(rate), "below_pct": rule.below_pct,
            "ratings": len(last), "good": good, "bad": len(last) - good,
            "last_n": rule.last_n,
        })

    def _silent(self, track: DeviceTrack, now: float) -> Finding | None:
        rule = self.rules.silent
        if not self._link_up or self._listening_since is None:
            return None  # we hear nothing ourselves: say nothing about the devices
        no_telemetry_since = (track.last_telemetry if track.last_telemetry is not None
                              else track.first_heard)
        since = no_telemetry_since
        if track.online is False and track.offline_since is not None:
            since = min(since, track.offline_since)
        # Silence before we were listening is not the device's (we could not hear it),
        # unless it was already judged silent: a reconnect or a restart of ours is no
        # sign of life, and resolving then would be a false 已恢复 (raised again later).
        counted_from = (since if alert_key(DEVICE_SILENT, track.device_id) in self.open
                        else max(since, self._listening_since))
        limit = rule.after_min * 60
        hours = self.calendar.for_device(track.device_id, track.hall_id)
        silent_s = (hours.open_seconds(counted_from, now, enough=limit)
                    if now - counted_from > limit else 0.0)
        return Finding(DEVICE_SILENT, "", silent_s > limit, {
            "online": track.online,
            "offline_since": iso_utc(track.offline_since),
            "last_telemetry": iso_utc(track.last_telemetry),
            "silent_open_min": round(silent_s / 60, 1),
            "after_min": rule.after_min,
        })

    def _backlog(self, track: DeviceTrack) -> Finding:
        rule = self.rules.backlog
        backlog, oldest = track.backlog, track.oldest_pending_s
        holds = ((backlog is not None and backlog > rule.max_backlog)
                 or (oldest is not None and oldest > rule.max_oldest_min * 60))
        return Finding(BACKLOG, "", holds, {
            "backlog": backlog, "max_backlog": rule.max_backlog,
            "oldest_pending_min": None if oldest is None else round(oldest / 60, 1),
            "max_oldest_min": rule.max_oldest_min,
        })

    def _gaming(self, track: DeviceTrack, now: float) -> Iterable[Finding]:
        rule = self.rules.gaming
        densest = _densest(track.fresh(now, rule.within_s), rule.within_s)
        yield Finding(POSSIBLE_GAMING, RATING_RATE, len(densest) > rule.max_ratings, {
            "condition": RATING_RATE, "ratings": len(densest), "max_ratings": rule.max_ratings,
            "within_s": rule.within_s,
            "rating_ids": [e.rating_id for e in densest][-EVIDENCE_IDS:],
        })
        last = track.last(rule.last_n)
        spontaneous = sum(1 for e in last if e.spontaneous)
        share = percent(spontaneous, len(last))
        holds = (len(last) >= rule.min_ratings and share is not None
                 and share >= _decimal_pct(rule.spontaneous_pct))
        yield Finding(POSSIBLE_GAMING, SPONTANEOUS_SHARE, holds, {
            "condition": SPONTANEOUS_SHARE, "spontaneous": spontaneous, "ratings": len(last),
            "spontaneous_pct": format_rate(share), "threshold_pct": rule.spontaneous_pct,
        })

    def _clock(self, track: DeviceTrack, now: float) -> Finding:
        rule = self.rules.clock
        since = track.unsynced_since
        return Finding(CLOCK_UNSYNCED, "", since is not None and now - since > rule.after_min * 60,
                       {"unsynced_since": iso_utc(since), "after_min": rule.after_min})

    # Alert lifecycle ----------------------------------------------------------------

    def _cooldown_s(self, kind: str) -> float:
        r = self.rules
        minutes = {BAD_BURST: r.bad_burst.cooldown_min,
                   LOW_SATISFACTION: r.low_satisfaction.cooldown_min,
                   DEVICE_SILENT: r.silent.cooldown_min, BACKLOG: r.backlog.cooldown_min,
                   POSSIBLE_GAMING: r.gaming.cooldown_min,
                   CLOCK_UNSYNCED: r.clock.cooldown_min}[kind]
        return minutes * 60

    def _severity(self, kind: str) -> str:
        r = self.rules
        return {BAD_BURST: r.bad_burst.severity, LOW_SATISFACTION: r.low_satisfaction.severity,
                DEVICE_SILENT: r.silent.severity, BACKLOG: r.backlog.severity,
                POSSIBLE_GAMING: r.gaming.severity, CLOCK_UNSYNCED: r.clock.severity}[kind]

    def _apply(self, track: DeviceTrack, finding: Finding, now: float) -> Alert | None:
        key = alert_key(finding.kind, track.device_id, finding.condition)
        if not finding.holds:
            self._pending_since.pop(key, None)
            if key in self.open:
                return self._resolve(key, finding.evidence, now)
            return None
        if key in self.open:
            return None
        first_seen = self._pending_since.setdefault(key, now)
        last = self._last_raised.get(key)
        if last is not None and last > now:
            # Raised "later" than now: by a clock that was ahead (a state saved then).
            # The cooldown runs from now, not until our clock catches up.
            last = self._last_raised[key] = now
        if last is not None and now - last < self._cooldown_s(finding.kind):
            return None
        alert = Alert(
            alert_id=hashlib.sha256(f"{key}|{now!r}".encode()).hexdigest()[:32],
            kind=finding.kind, condition=finding.condition,
            severity=self._severity(finding.kind), device_id=track.device_id,
            hall_id=track.hall_id, window_id=track.window_id, region_code=track.region_code,
            evidence=finding.evidence, first_seen=first_seen, raised_at=now)
        self.open[key] = alert
        self._last_raised[key] = now
        del self._pending_since[key]
        self.dirty = self.alerts_changed = True
        return alert

    def _resolve(self, key: str, evidence: dict[str, Any], now: float) -> Alert:
        alert = replace(self.open.pop(key), evidence=evidence, resolved_at=now)
        self.dirty = self.alerts_changed = True
        return alert

    def _expire_cooldowns(self, now: float) -> None:
        for key in [k for k, t in self._last_raised.items() if t > now]:
            self._last_raised[key] = now  # as in _apply: no cooldown beyond its length
        for key in [k for k, t in self._last_raised.items()
                    if k not in self.open and now - t >= self._cooldown_s(k.split("|")[0])]:
            del self._last_raised[key]
            self.dirty = True

    # Persistence --------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Everything needed to carry on after a restart, as JSON-ready data."""
        return {
            "version": STATE_VERSION,
            "devices": {d: t.to_json() for d, t in self.devices.items()},
            "open": {k: _alert_json(a) for k, a in self.open.items()},
            "last_raised": dict(self._last_raised),
            "pending_since": dict(self._pending_since),
        }

    def _restore(self, snapshot: dict[str, Any]) -> None:
        if snapshot.get("version") != STATE_VERSION:
            raise ValueError(f"state version {snapshot.get('version')!r}, expected "
                             f"{STATE_VERSION}")
        # Beyond max_devices (a lower limit than the state was saved with) the first
        # saved are kept; the others are dropped with their alerts, as if forgotten.
        dropped: set[str] = set()
        for device_id, data in snapshot.get("devices", {}).items():
            if len(self.devices) >= self.max_devices:
                dropped.add(device_id)
                continue
            self.devices[device_id] = DeviceTrack.from_json(device_id, data)
        self.devices_ignored = len(dropped)

        def kept(key: str) -> bool:
            kind, _, rest = key.partition("|")
            return kind in _KINDS and rest.partition("|")[0] not in dropped

        for key, data in snapshot.get("open", {}).items():
            alert = Alert.from_json(data)
            if (alert is not None and alert.kind in _KINDS and kept(key)
                    and _saved_time(alert.first_seen) and _saved_time(alert.raised_at)):
                self.open[key] = alert
        # Times outside 0..2100 are a damaged file: iso_utc of them raised when the
        # alert was sent (at a tick, every tick).
        self._last_raised = {k: float(v) for k, v in snapshot.get("last_raised", {}).items()
                             if kept(k) and _saved_time(v)}
        self._pending_since = {k: float(v) for k, v in snapshot.get("pending_since",
                                                                    {}).items()
                               if kept(k) and _saved_time(v)}


def _saved_time(value: Any) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and 0 <= value <= LATEST_SAVED_TIME)


_KINDS = frozenset(KINDS)


def _densest(entries: list[RatingEntry], span_s: float) -> list[RatingEntry]:
    """The largest group of `entries` whose device times lie within `span_s` of each
    other. Device time, not arrival time: a backlog that arrives all at once after an
    outage is as spread out as it was when it was rated."""
    ordered = sorted(entries, key=lambda e: e.at)
    best: tuple[int, int] = (0, 0)
    start = 0
    for end, entry in enumerate(ordered):
        while entry.at - ordered[start].at > span_s:
            start += 1
        if end + 1 - start > best[1] - best[0]:
            best = (start, end + 1)
    return ordered[best[0]:best[1]]


def _decimal_pct(value: float) -> Decimal:
    """A configured percentage as written (80.0 is exactly 80.0, not 79.999…)."""
    return Decimal(str(value))


def _timestamp(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def _alert_json(alert: Alert) -> dict[str, Any]:
    return {
        "alert_id": alert.alert_id, "kind": alert.kind, "condition": alert.condition,
        "severity": alert.severity, "device_id": alert.device_id, "hall_id": alert.hall_id,
        "window_id": alert.window_id, "region_code": alert.region_code,
        "evidence": alert.evidence, "first_seen": alert.first_seen,
        "raised_at": alert.raised_at, "resolved_at": alert.resolved_at,
    }
