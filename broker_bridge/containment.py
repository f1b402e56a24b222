"""How the bridge contains what it did not expect (SPEC §9: nothing lost to a bridge
bug). A message whose handling raised is set aside — dead letter, acknowledged, no
receipt — instead of stopping the loop again at each redelivery; a batch whose delivery
raised is split into ratings tried alone, and one failing alone POISON_FAILURES times is
set aside, so a poison record neither stops a worker nor holds the others back. `Bridge`
inherits these; the normal path of a rating is bridge.py's."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

from broker_bridge.device_numbers import QuietWarnings
from broker_bridge.metrics import BridgeMetrics
from broker_bridge.mqtt_link import BrokerLink, Incoming
from broker_bridge.outgoing import Outgoing
from broker_bridge.pending import Pending
from broker_bridge.sender import BatchFailed, describe_failure
from common.rating import InvalidRecord, scan_rating_id

__all__ = ["POISON_FAILURES", "Containment"]

log = logging.getLogger("hcp.bridge")

# A rating whose delivery raised unexpectedly is tried again alone; failing alone this
# many times, it is set aside (dead letter, no receipt: the device keeps it).
POISON_FAILURES = 2


class Containment:
    """The bridge's containment of failures (mixed into Bridge, which sets these)."""

    metrics: BridgeMetrics
    link: BrokerLink
    out: Outgoing
    _prefix: str
    _prefix_len: int
    _failure_log: QuietWarnings
    _pending: dict[str, Pending]
    _alone: deque[str]
    _deferred: dict[str, list[tuple[str, Incoming]]]
    _batches_out: int
    _idle_workers: int
    _on_message: Callable[[Incoming], None]
    _on_rating: Callable[..., None]

    def _handle_message(self, msg: Incoming) -> None:
        """A message, with whatever it raises contained: the checks should refuse every
        bad message with a reason, but a message that got past them and made the loop
        raise would otherwise stop the bridge again at each redelivery."""
        try:
            self._on_message(msg)
        except Exception as e:
            detail = describe_failure(e)
            self._failure_log.warn(f"handling a message on {self.out.shown_topic(msg.topic)} "
                                   f"failed unexpectedly ({detail})")
            log.debug("the failure in full", exc_info=True)
            self.metrics.internal_errors.labels("message").inc()
            device_id = msg.topic[self._prefix_len:].partition("/")[0]
            if msg.topic.endswith("/rating"):
                # Set aside without a receipt: the device keeps the rating and re-sends
                # it; if the fault is ours, a fixed bridge forwards it then.
                self.out.publish_dead_letter(msg.topic, device_id, msg.payload, InvalidRecord(
                    "unprocessable", f"the bridge failed on this message ({detail})",
                    scan_rating_id(msg.payload)))
                self.link.ack(msg.generation, msg.mid, msg.qos)

    def _on_failed(self, event: BatchFailed) -> None:
        """A batch whose delivery raised: each rating is tried again alone; one that
        fails alone POISON_FAILURES times is set aside, so a poison record can neither
        stop a worker nor hold the others back."""
        self._batches_out -= 1
        self._idle_workers += 1
        alone = len(event.batch.ratings) == 1
        for rating in event.batch.ratings:
            entry = self._pending.get(rating.rating_id)
            if entry is None or entry.rating is not rating:
                continue
            entry.dispatched = False
            entry.failures += 1
            if alone and entry.failures >= POISON_FAILURES:
                self._set_aside(entry, event.detail)
            else:
                self._alone.append(rating.rating_id)

    def _set_aside(self, entry: Pending, detail: str) -> None:
        """Dead letter and acknowledgement, but no receipt: the device keeps the rating
        and re-sends it after resend_after_s, so nothing is lost to a bridge bug."""
        rating = entry.rating
        del self._pending[rating.rating_id]
        self.out.publish_dead_letter(
            f"{self._prefix}/{rating.device_id}/rating", rating.device_id, rating.payload,
            InvalidRecord("unprocessable", f"delivering it failed {entry.failures} times "
                          f"({detail}); the device keeps it", rating.rating_id))
        for d in entry.deliveries:
            self.link.ack(d.generation, d.mid, d.qos)
        for device_id, msg in self._deferred.pop(rating.rating_id, ()):
            self._on_rating(device_id, msg, counted=True)
