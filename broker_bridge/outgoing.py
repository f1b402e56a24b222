"""What the bridge publishes besides acknowledgements: receipts to devices, dead letters
(with a rate-limited log), and the "platform refuses" alert (SPEC §7, §9)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from broker_bridge.messages import dead_letter, platform_refuses_alert, receipt, receipts
from broker_bridge.metrics import BridgeMetrics
from broker_bridge.sender import PlatformRefuses
from common.rating import DEVICE_ID_RE, InvalidRecord

log = logging.getLogger("hcp.bridge")

ALERT_EVERY_S = 300.0     # repeat the "platform refuses" alert at most this often
DEADLETTER_LOGS_PER_MIN = 20


class Publisher(Protocol):
    def publish(self, topic: str, payload: bytes, qos: int = 1) -> object: ...

    def ack(self, generation: int, mid: int, qos: int) -> int: ...


class Delivered(Protocol):
    """A message as it came from the broker (broker_bridge.mqtt_link.Incoming)."""

    @property
    def topic(self) -> str: ...

    @property
    def payload(self) -> bytes: ...

    @property
    def generation(self) -> int: ...

    @property
    def mid(self) -> int: ...

    @property
    def qos(self) -> int: ...


class Outgoing:
    """Publishes on the bridge's link, from the bridge's loop thread only."""

    def __init__(self, link: Publisher, metrics: BridgeMetrics, prefix: str, client_id: str,
                 clock: Callable[[], float]) -> None:
        self.link = link
        self.metrics = metrics
        self._prefix = prefix
        self._prefix_len = len(prefix) + 1
        self._client_id = client_id
        self._clock = clock
        self._last_alert = -ALERT_EVERY_S
        self._deadletter_log_window = (0.0, 0)

    def shown_topic(self, topic: str) -> str:
        """A topic for the log: as it is when it names a device, else without the
        device part (which could be any text)."""
        device_id = topic[self._prefix_len:].partition("/")[0]
        if topic.startswith(self._prefix + "/") and DEVICE_ID_RE.fullmatch(device_id):
            return topic[:200]
        return f"{self._prefix}/?/{topic.rpartition('/')[2][:20]}"

    def send_receipts(self, by_device: dict[str, list[bytes]]) -> None:
        for device_id, entries in by_device.items():
            self.link.publish(f"{self._prefix}/{device_id}/receipt", receipts(entries), qos=1)

    def dead_letter(self, msg: Delivered, device_id: str, delivery: object | None,
                     error: InvalidRecord) -> None:
        """Publish the dead letter and (when possible) a rejected receipt, then ack."""
        self.publish_dead_letter(msg.topic, device_id, msg.payload, error)
        # The receipt goes to the device named by the topic, never by the payload: a
        # spoofed record must not make another device drop a genuine rating.
        if error.rating_id and delivery is not None:
            self.send_receipts({device_id: [receipt(error.rating_id, "rejected",
                                                     f"{error.reason}: {error.detail}")]})
        self.link.ack(msg.generation, msg.mid, msg.qos)

    def publish_dead_letter(self, topic: str, device_id: str, payload: bytes,
                             error: InvalidRecord) -> None:
        self.metrics.deadletter.labels(error.reason).inc()
        self.link.publish(f"{self._prefix}/deadletter",
                          dead_letter(topic, device_id, payload, error,
                                      self._client_id), qos=1)
        self._log_dead_letter(self.shown_topic(topic), error)

    def _log_dead_letter(self, topic: str, error: InvalidRecord) -> None:
        start, count = self._deadletter_log_window
        now = self._clock()
        if now - start >= 60:
            start, count = now, 0
        if count < DEADLETTER_LOGS_PER_MIN:
            log.warning("dead letter from %s: %s: %s", topic[:120], error.reason,
                        error.detail)
        elif count == DEADLETTER_LOGS_PER_MIN:
            log.warning("more dead letters this minute; see %s/deadletter and "
                        "hcp_bridge_deadletter_total", self._prefix)
        self._deadletter_log_window = (start, count + 1)

    def alert_refused(self, event: PlatformRefuses) -> None:
        now = self._clock()
        if now - self._last_alert < ALERT_EVERY_S:
            return
        self._last_alert = now
        self.link.publish(f"{self._prefix}/alerts", platform_refuses_alert(
            self._client_id, event.status, event.detail), qos=1)
