"""What to publish when (SPEC §7): the device's delivery bookkeeping, pure and clocked.

The outbox is the truth; this only remembers, per pending rating, whether it is
waiting to be published, waiting for its PUBACK, or published and waiting for a
receipt. A bounded in-flight window lets a 10,000-rating backlog drain steadily
while new ratings go first.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass
class _Sent:
    mid: int | None          # None once PUBACKed
    at: float                # monotonic time of the last publish


class Delivery:
    def __init__(self, resend_after_s: float, max_inflight: int) -> None:
        self.resend_after_s = resend_after_s
        self.max_inflight = max_inflight
        self.connected = False
        # Ratings to publish, in order; new ratings jump the backlog queue.
        self._due: OrderedDict[str, None] = OrderedDict()
        self._sent: dict[str, _Sent] = {}
        self._by_mid: dict[int, str] = {}
        # (published at, rating_id) in publish order; stale entries are skipped lazily.
        self._resend_queue: deque[tuple[float, str]] = deque()

    # --- what the outbox holds -------------------------------------------------

    def load(self, rating_ids: Iterable[str]) -> None:
        """Pending ratings found in the outbox at start: all due on the first connect."""
        for rid in rating_ids:
            self._due[rid] = None

    def added(self, rating_id: str) -> None:
        """A new rating was stored: publish it before the backlog."""
        self._due[rating_id] = None
        self._due.move_to_end(rating_id, last=False)

    def receipted(self, rating_id: str) -> None:
        """A receipt named it: forget it entirely (the outbox removes it)."""
        self._due.pop(rating_id, None)
        sent = self._sent.pop(rating_id, None)
        if sent is not None and sent.mid is not None:
            self._by_mid.pop(sent.mid, None)

    # --- the link ----------------------------------------------------------------

    def on_connect(self, pending_ids: Iterable[str]) -> None:
        """Connected: every pending rating is published again (SPEC §7), oldest first,
        except those already queued (a new rating keeps its place at the front)."""
        self.connected = True
        self._by_mid.clear()
        self._sent.clear()
        self._resend_queue.clear()
        for rid in pending_ids:
            if rid not in self._due:
                self._due[rid] = None

    def on_disconnect(self) -> None:
        """In-flight publishes are unknown now; they go back to due, in front."""
        self.connected = False
        unacked = [rid for rid, s in self._sent.items() if s.mid is not None]
        for rid in reversed(unacked):
            self._sent.pop(rid)
            self._due[rid] = None
            self._due.move_to_end(rid, last=False)
        self._by_mid.clear()

    def inflight(self) -> int:
        return len(self._by_mid)

    def next_batch(self, now: float) -> list[str]:
        """Rating ids to publish now, within the in-flight window."""
        if not self.connected:
            return []
        self._requeue_stale(now)
        room = self.max_inflight - len(self._by_mid)
        batch: list[str] = []
        while room > 0 and self._due:
            rid, _ = self._due.popitem(last=False)
            batch.append(rid)
            room -= 1
        return batch

    def published(self, rating_id: str, mid: int, now: float) -> None:
        self._sent[rating_id] = _Sent(mid, now)
        self._by_mid[mid] = rating_id
        self._resend_queue.append((now, rating_id))

    def publish_failed(self, rating_id: str) -> None:
        """paho refused the publish outright: try it again later, first in line."""
        self._due[rating_id] = None
        self._due.move_to_end(rating_id, last=False)

    def acked(self, mid: int, ok: bool) -> str | None:
        """PUBACK for `mid`; a failure reason code puts the rating back in line."""
        rid = self._by_mid.pop(mid, None)
        if rid is None:
            return None
        if ok:
            sent = self._sent.get(rid)
            if sent is not None:
                sent.mid = None
        else:
            self._sent.pop(rid, None)
            self._due[rid] = None
        return rid

    def next_deadline(self) -> float | None:
        """When the oldest receipt-less publish becomes due for a resend."""
        while self._resend_queue:
            at, rid = self._resend_queue[0]
            sent = self._sent.get(rid)
            if sent is None or sent.at != at:
                self._resend_queue.popleft()  # receipted or re-published since
                continue
            return at + self.resend_after_s
        return None

    def _requeue_stale(self, now: float) -> None:
        while self._resend_queue:
            at, rid = self._resend_queue[0]
            sent = self._sent.get(rid)
            if sent is None or sent.at != at:
                self._resend_queue.popleft()
                continue
            if now - at < self.resend_after_s:
                return
            self._resend_queue.popleft()
            if sent.mid is not None:
                # Still no PUBACK after all this time: the broker will resend on its
                # own (QoS 1 in the session); don't stack another copy.
                sent.at = now
                self._resend_queue.append((now, rid))
                continue
            del self._sent[rid]
            self._due[rid] = None
