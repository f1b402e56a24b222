"""Receipts from the bridge (SPEC §7 `receipt` topic): the only thing that removes a
rating from the outbox. A malformed message, or an entry that is not ours, changes
nothing; a `rejected` rating is kept in the outbox's rejected list for the technician.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from common.text import log_text
from device.outbox import Outbox, StorageError
from device.telemetry import Stats

log = logging.getLogger("hcp.device")

RATING_ID_LEN = 32
STATUSES = ("accepted", "duplicate", "rejected")


class Receipts:
    def __init__(self, outbox: Outbox, stats: Stats,
                 removed: Callable[[dict[str, str]], None]) -> None:
        self.outbox = outbox
        self.stats = stats
        self.removed = removed   # {rating_id: status} left the outbox: delivery, observers

    def received(self, payload: bytes) -> None:
        try:
            data = json.loads(payload.decode("utf-8"))
            receipts = data["receipts"]
            if not isinstance(receipts, list):
                raise TypeError("receipts is not a list")
        except (UnicodeDecodeError, ValueError, KeyError, TypeError, RecursionError) as e:
            log.warning("ignoring malformed receipt message: %s", log_text(str(e), 160))
            return
        done: dict[str, str] = {}
        for r in receipts:
            if not isinstance(r, dict):
                continue
            rid, status = r.get("rating_id"), r.get("status")
            if (not isinstance(rid, str) or len(rid) != RATING_ID_LEN
                    or status not in STATUSES):
                continue
            rating = self.outbox.get(rid)
            if rating is None:
                continue  # already receipted (a duplicate receipt) or not ours
            if status == "rejected":
                self.stats.rejected += 1
                # A lone surrogate (JSON "\ud800") is no UTF-8: the outbox could not
                # write it, and the loop would die on it at every re-sent rating.
                error = str(r.get("error"))[:200].encode("utf-8", "replace").decode()
                log.error("platform rejected rating %s: %s (kept in the rejected list)",
                          rid, log_text(error, 200))
                try:
                    self.outbox.record_rejected(rating, error)
                except StorageError as e:
                    log.error("outbox: could not record rejected rating %s: %s", rid, e)
            done[rid] = status
        if not done:
            return
        try:
            self.outbox.remove(done)
        except StorageError as e:
            # Not fatal: the rating stays and is re-sent; the platform de-duplicates.
            log.error("outbox: could not remove receipted ratings: %s", e)
            return
        self.stats.receipts += len(done)
        self.stats.backlog = len(self.outbox)
        self.removed(done)
