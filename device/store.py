"""The loop's door to the outbox for ratings: opening it (and saying what was recovered),
storing a rating with its case in the duplicate-case memory, and the disk-full episode.

A rating that cannot be stored is the one failure that stops a rating: `store()` says
why, and the executor feeds that back to the core (no thanks, no `rated`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.text import log_text
from device.clock import Clock
from device.core.machine import DUPLICATE_WINDOW_S
from device.core.model import Persist
from device.faults import EventSink
from device.outbox import Outbox, StorageError
from device.telemetry import Stats

log = logging.getLogger("hcp.device")

FORGET_EVERY_S = 3600.0


class RatingStore:
    def __init__(self, outbox: Outbox, data_dir: Path, clock: Clock, stats: Stats,
                 event: EventSink, stored: Callable[[dict[str, Any]], None]) -> None:
        self.outbox = outbox
        self.data_dir = data_dir
        self.clock = clock
        self.stats = stats
        self.event = event
        self.stored = stored          # the rating is durable: delivery, observers
        self.disk_full = False        # an outbox_overflow was raised; a good store ends it
        self._next_forget = 0.0

    def open(self) -> None:
        report = self.outbox.open()
        if report.details or report.moved_aside:
            log.warning("outbox: recovered: %s; damaged file kept as %s",
                        "; ".join(report.details), ", ".join(map(str, report.moved_aside)))
        if report.dropped_records:
            log.error("outbox: dropped %d damaged record(s) (%d bytes) while opening: %s",
                      report.dropped_records, report.dropped_bytes, "; ".join(report.details))
            self.event("outbox_recovered", {"dropped_records": report.dropped_records,
                                            "dropped_bytes": report.dropped_bytes,
                                            "details": report.details[:10]})
        log.info("outbox: %d rating(s) pending", report.ratings)
        self.stats.backlog = len(self.outbox)

    def duplicate_memory(self) -> tuple[dict[str, float], dict[str, float]]:
        """Cases rated in the last 24 h by either clock: ({case: wall}, {case: mono})."""
        horizon = self.clock.wall() - DUPLICATE_WINDOW_S
        mono_horizon = self.clock.monotonic() - DUPLICATE_WINDOW_S
        mono = {c: t for c, t in self.outbox.recent_cases_mono(self.clock.boot_id()).items()
                if t >= mono_horizon}
        recent = {c: at for c, at in self.outbox.recent_cases().items()
                  if at >= horizon or c in mono}
        return recent, mono

    def store(self, action: Persist) -> str | None:
        """Store durably; None when stored, else why not (logged and reported here)."""
        r = action.rating
        try:
            self.outbox.store(r, case_id=action.case_id,
                              case_rated_at=action.rated_epoch if action.case_id else None,
                              case_rated_mono=action.rated_mono, boot_id=self.clock.boot_id())
        except StorageError as e:
            self.stats.storage_errors += 1
            log.error("outbox: could not store rating %s: %s", r["rating_id"], e)
            if e.disk_full:
                self._outbox_full(str(e))
            return str(e)
        if self.disk_full:
            self.disk_full = False
            log.warning("outbox: storing ratings again (disk space is back)")
        self.stats.backlog += 1
        self.stored(r)
        log.info("rating stored: %s level=%s trigger=%s case=%s", r["rating_id"], r["level"],
                 r["trigger"], log_text(action.case_id) if action.case_id else "-")
        return None

    def forget_if_due(self, now: float) -> None:
        """The duplicate-case memory only needs 24 h; the removal rides on the next write."""
        if now < self._next_forget:
            return
        self._next_forget = now + FORGET_EVERY_S
        self.outbox.forget_cases_before(self.clock.wall() - DUPLICATE_WINDOW_S,
                                        now - DUPLICATE_WINDOW_S, self.clock.boot_id())

    def _outbox_full(self, error: str) -> None:
        """The disk is full: say so once per episode (each failed rating still raises its
        own `storage_error`), with what the technician needs to judge it."""
        if self.disk_full:
            return
        self.disk_full = True
        try:
            free_mb: float | None = round(self.outbox.disk_free_mb(), 2)
        except StorageError:
            free_mb = None
        log.error("outbox: the disk is full; ratings cannot be stored until space is freed "
                  "in %s", self.data_dir)
        self.event("outbox_overflow", {"backlog": len(self.outbox), "disk_free_mb": free_mb,
                                       "data_dir": str(self.data_dir), "error": error})
