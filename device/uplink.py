"""The device's side of delivery (SPEC §7) as the loop sees it: the broker link, the
delivery bookkeeping and the pump that publishes what is due from the outbox.

Only the loop's thread calls this; the link's own thread only puts events on the queue.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from device.delivery import Delivery
from device.outbox import Outbox
from device.ports import BrokerLink

log = logging.getLogger("hcp.device")


class Uplink:
    def __init__(self, link: BrokerLink | None, delivery: Delivery, outbox: Outbox) -> None:
        self.link = link
        self.delivery = delivery
        self.outbox = outbox
        self._status: dict[str, Any] | None = None

    def status(self, fields: dict[str, Any]) -> None:
        """The retained status's own fields (who is logged in at the window): handed to
        the link when they change, which publishes them at once and with every connect."""
        if self.link is not None and fields != self._status:
            self._status = dict(fields)
            self.link.status_fields(fields)

    @property
    def enabled(self) -> bool:
        """False for a device run without a broker (`mqtt=False`): nothing is buffered."""
        return self.link is not None

    @property
    def connects(self) -> int:
        return self.link.connects if self.link is not None else 0

    def connected(self) -> bool:
        return self.link is not None and self.delivery.connected

    def start(self, pending_ids: Iterable[str]) -> None:
        self.delivery.load(pending_ids)
        if self.link is not None:
            self.link.start()

    def publish(self, kind: str, payload: dict[str, Any], qos: int = 1) -> None:
        assert self.link is not None
        self.link.publish(kind, payload, qos=qos)

    def up(self) -> None:
        self.delivery.on_connect(self.outbox.pending_ids())

    def down(self, reason: str) -> None:
        log.warning("broker connection lost: %s", reason)
        self.delivery.on_disconnect()

    def puback(self, ticket: int, ok: bool, reason: str) -> None:
        rid = self.delivery.acked(ticket, ok)
        if rid is not None and not ok:
            log.warning("broker refused rating %s: %s (retrying in %g s)", rid, reason,
                        self.delivery.resend_after_s)

    def stored(self, rating_id: str) -> None:
        self.delivery.added(rating_id)

    def receipted(self, rating_id: str) -> None:
        self.delivery.receipted(rating_id)

    def next_deadline(self) -> float | None:
        return self.delivery.next_deadline() if self.connected() else None

    def pump(self, now: float) -> None:
        """Publish what delivery says is due, within its in-flight window."""
        if not self.connected():
            return
        assert self.link is not None
        for rid in self.delivery.next_batch(now):
            rating = self.outbox.get(rid)
            if rating is None:
                self.delivery.receipted(rid)
                continue
            self.link.publish("rating", rating, ticket=self.delivery.published(rid, now))

    def stop(self, now: float) -> None:
        """The last publishes, then the retained offline status and a clean disconnect."""
        if self.link is not None:
            self.pump(now)
            self.link.stop()
