"""What to publish when (SPEC §7): the device's delivery bookkeeping, pure and clocked.

The outbox is the truth; this only remembers, per pending rating, whether it is
waiting to be published, waiting for the broker's PUBACK, or published and waiting
for a receipt. A bounded in-flight window lets a 10,000-rating backlog drain steadily
while new ratings go first.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass
class _Sent:
    ticket: int | None       # None once the broker answered the publish
    at: float                # monotonic time of the last publish


class Delivery:
    """Which pending ratings to publish now.

    A publish is identified by a ticket from `published()`, never reused, so an answer
    to an older copy of a rating cannot be mistaken for the answer to the newest.
    """

    def __init__(self, resend_after_s: float, max_inflight: int) -> None:
        self.resend_after_s = resend_after_s
        self.max_inflight = max_inflight
        self.connected = False
        # Ratings to publish, in order; new ratings jump the backlog queue.
        self._due: OrderedDict[str, None] = OrderedDict()
        self._sent: dict[str, _Sent] = {}
        self._by_ticket: dict[int, str] = {}
        self._tickets = itertools.count(1)
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
        if sent is not None and sent.ticket is not None:
            self._by_ticket.pop(sent.ticket, None)

    # --- the link ----------------------------------------------------------------

    def on_connect(self, pending_ids: Iterable[str]) -> None:
        """Connected: every pending rating is published again (SPEC §7), oldest first,
        except those already queued (a new rating keeps its place at the front)."""
        self.connected = True
        self._by_ticket.clear()
        self._sent.clear()
        self._resend_queue.clear()
        for rid in pending_ids:
            if rid not in self._due:
                self._due[rid] = None

    def on_disconnect(self) -> None:
        """Unanswered publishes are unknown now; they go back to due, in front."""
        self.connected = False
        unanswered = [rid for rid, s in self._sent.items() if s.ticket is not None]
        for rid in reversed(unanswered):
            self._sent.pop(rid)
            self._due[rid] = None
            self._due.move_to_end(rid, last=False)
        self._by_ticket.clear()

    def inflight(self) -> int:
        """Publishes the broker has not answered yet (at most `max_inflight`)."""
        return len(self._by_ticket)

    def due(self) -> int:
        """Ratings waiting for their turn to be published."""
        return len(self._due)

    def next_batch(self, now: float) -> list[str]:
        """Rating ids to publish now, within the in-flight window."""
        if not self.connected:
            return []
        self._requeue_stale(now)
        room = self.max_inflight - len(self._by_ticket)
        batch: list[str] = []
        while room > 0 and self._due:
            rid, _ = self._due.popitem(last=False)
            batch.append(rid)
            room -= 1
        return batch

    def published(self, rating_id: str, now: float) -> int:
        """`rating_id` from the last batch was handed to the link: its ticket."""
        ticket = next(self._tickets)
        self._sent[rating_id] = _Sent(ticket, now)
        self._by_ticket[ticket] = rating_id
        self._resend_queue.append((now, rating_id))
        return ticket

    def acked(self, ticket: int, ok: bool) -> str | None:
        """The broker answered publish `ticket`: its window slot is free. A refusal (a v5
        failure reason code, e.g. not authorised) is retried like a missing receipt,
        after `resend_after_s`: re-publishing at once would only hammer the broker."""
        rid = self._by_ticket.pop(ticket, None)
        if rid is None:
            return None
        sent = self._sent.get(rid)
        if sent is not None and sent.ticket == ticket:
            sent.ticket = None
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
            # The same sum as next_deadline's: `now - at < resend_after_s` could say
            # "not yet" at that very deadline (float rounding), and the loop spun.
            if now < at + self.resend_after_s:
                return
            self._resend_queue.popleft()
            if sent.ticket is not None:
                # Still no answer from the broker after all this time: it has the copy in
                # our session and the connection is alive; don't stack another one.
                sent.at = now
                self._resend_queue.append((now, rid))
                continue
            del self._sent[rid]
            self._due[rid] = None
