"""What the device tells about itself: the counters the loop keeps, the SPEC §7
telemetry payload (every field is listed in docs/mqtt.md), the sim socket's `status`,
and the watch on whether the wall clock can be trusted."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from device import __version__
from device.clock import Clock, iso_utc
from device.faults import DriverHealth
from device.outbox import Outbox, StorageError
from device.uplink import Uplink

log = logging.getLogger("hcp.device")

CLOCK_CHECK_S = 15.0

EventSink = Callable[[str, dict[str, Any]], None]


@dataclass
class Stats:
    """Plain counters, written by the loop's thread only (other threads just read them)."""

    started_mono: float = 0.0
    serial_errors: Counter[str] = field(default_factory=Counter)
    frames_in: int = 0
    serial_open: bool = False
    last_frame: str | None = None
    storage_errors: int = 0
    backlog: int = 0
    receipts: int = 0
    rejected: int = 0


class Telemetry:
    """The telemetry payload, published every `every_s` while connected and once right
    after each connect; and the status the sim socket answers."""

    def __init__(self, device_id: str, every_s: float, clock: Clock, outbox: Outbox,
                 stats: Stats, uplink: Uplink, health: DriverHealth,
                 pending_cases: Callable[[], int]) -> None:
        self.device_id = device_id
        self.every_s = every_s
        self.clock = clock
        self.outbox = outbox
        self.stats = stats
        self.uplink = uplink
        self.health = health
        self.pending_cases = pending_cases
        self.next_at = 0.0

    def connected(self, t: float) -> None:
        self.next_at = t   # one right away: the hall view fills in at once

    def next_deadline(self) -> float | None:
        return self.next_at if self.uplink.connected() else None

    def publish_if_due(self, now: float) -> None:
        if self.uplink.connected() and now >= self.next_at:
            self.uplink.publish("telemetry", self.payload(now), qos=0)
            self.next_at = now + self.every_s

    def payload(self, now: float) -> dict[str, Any]:
        """The SPEC §7 telemetry payload (docs/mqtt.md lists every field)."""
        oldest = self.outbox.oldest_rated_at()
        oldest_s = None
        if oldest is not None:
            try:
                oldest_s = max(0, round(self.clock.wall() - _epoch(oldest)))
            except (ValueError, TypeError, OverflowError):
                oldest_s = None
        try:
            disk_free_mb: float | None = round(self.outbox.disk_free_mb(), 1)
        except StorageError as e:
            log.warning("telemetry: %s", e)
            disk_free_mb = None
        stats = self.stats
        return {
            "at": iso_utc(self.clock.wall()),
            "backlog": len(self.outbox),
            "oldest_pending_s": oldest_s,
            "uptime_s": round(now - stats.started_mono),
            "serial_errors": sum(stats.serial_errors.values()),
            "serial_errors_by_kind": dict(stats.serial_errors),
            "serial_open": stats.serial_open,
            "frames_in": stats.frames_in,
            "disk_free_mb": disk_free_mb,
            "storage_errors": stats.storage_errors,
            "link": {"serial": "open" if stats.serial_open else "closed",
                     "broker": "connected",
                     "broker_connects": self.uplink.connects},
            "inflight": self.uplink.delivery.inflight(),
            "due": self.uplink.delivery.due(),
            "pending_cases": self.pending_cases(),
            "clock_synced": self.clock.synced(),
            "rejected": stats.rejected,
            "faults": self.health.faults(),
            "version": __version__,
        }

    def status(self) -> dict[str, Any]:
        # Called from the sim socket's thread: read only plain counters kept by the loop.
        stats = self.stats
        return {
            "device_id": self.device_id,
            "version": __version__,
            "backlog": stats.backlog,
            "pending_cases": self.pending_cases(),
            "serial_open": stats.serial_open,
            "serial_errors": sum(stats.serial_errors.values()),
            "last_frame": stats.last_frame,
            "broker": "connected" if self.uplink.connected() else (
                "disabled" if not self.uplink.enabled else "offline"),
            "receipts": stats.receipts,
            "faults": self.health.faults(),
            "uptime_s": round(self.clock.monotonic() - stats.started_mono, 1),
        }


class ClockWatch:
    """Says (log and event) when the wall clock becomes untrustworthy or trustworthy."""

    def __init__(self, clock: Clock, sync_file: str, event: EventSink) -> None:
        self.clock = clock
        self.sync_file = sync_file
        self.event = event
        self.next_at = 0.0
        self._synced: bool | None = None

    def check_if_due(self, now: float) -> None:
        if now >= self.next_at:
            self.check(now)

    def check(self, now: float) -> None:
        self.next_at = now + CLOCK_CHECK_S
        synced = self.clock.synced()
        if synced != self._synced:
            if not synced:
                log.warning("clock not synchronised: ratings carry clock_synced=false")
                self.event("clock_unsynced", {"sync_file": self.sync_file})
            elif self._synced is not None:
                log.info("clock synchronised")
                self.event("clock_synced", {})
            self._synced = synced


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
