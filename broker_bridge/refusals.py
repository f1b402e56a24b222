"""What the bridge does when the broker answers and says no (docs/bridge.md, "When the
broker says no"): one ERROR for the first refusal in a row, INFO after, and the next
connection attempt a backoff step later. paho's reconnect delay is the one knob: this
module only decides its value. (A broker's in-flight cap too low for a batch is named
from the batches: broker_bridge/inflight_cap.py.)"""

from __future__ import annotations

import logging
from collections.abc import Callable

from broker_bridge.config import MqttSettings

log = logging.getLogger("hcp.bridge.mqtt")

# While the broker cannot be reached (down, restarting), retry often: a refused TCP
# connection costs nothing, and after a city broker's restart every second without our
# subscriptions is a second in which ratings published there have no subscriber
# (docs/hall-broker.md). paho doubles the delay from the first figure to the second.
RECONNECT_S = (1, 2)
# When the broker answers and refuses us (shared subscriptions not supported, bad
# credentials, our session taken over by another bridge), trying again soon cannot help:
# one attempt per step, doubling from the first figure up to the second.
REFUSED_S = (5, 300)
SHARED_NOT_SUPPORTED = 0x9E
SESSION_TAKEN_OVER = 0x8E


class Refusals:
    """The refusal count and the reconnect delay it implies. Used from paho's network
    thread only."""

    def __init__(self, settings: MqttSettings,
                 set_reconnect_delay: Callable[[int, int], None]) -> None:
        self._settings = settings
        self._set_delay = set_reconnect_delay
        self._in_a_row = 0        # refused attempts in a row (reset once healthy)
        # Sessions taken from us by another client with our client id, since start: never
        # reset, so that two live bridges sharing an id (a misconfigured standby) settle
        # into taking turns for minutes, not seconds, however healthy each turn is.
        self._takeovers = 0
        self._receive_maximum_logged = False

    def refused(self, why: str, shared: bool = False, takeover: bool = False) -> int:
        """Log the refusal and set the next attempt's delay; return that delay."""
        first, cap = REFUSED_S
        self._in_a_row += 1
        if takeover:
            self._takeovers += 1
        n = self._takeovers if takeover else self._in_a_row
        delay: int = min(cap, first << min(n - 1, 16))
        # paho waits this long before its next attempt (its delay starts again from the
        # first figure after each accepted CONNACK: hence min = max = this step).
        self._set_delay(delay, delay)
        where = f"broker {self._settings.host}:{self._settings.port}"
        if shared:
            what = (f"{where} {why}: set [mqtt] shared_group = \"\" and run one bridge "
                    "(a standby may share its client_id), or use a broker with shared "
                    "subscriptions (docs/brokers.md)")
        else:
            what = f"{where} {why}"
        if n == 1:
            log.error("%s; not healthy; next attempt in %d s at the earliest", what, delay)
        else:
            log.info("%s (again, %d times); next attempt in %d s at the earliest", what, n,
                     delay)
        return delay

    def healthy_again(self) -> None:
        """Every subscription granted: back to the short reconnect delay."""
        if self._in_a_row:
            log.info("subscriptions granted again after %d refusal%s", self._in_a_row,
                     "" if self._in_a_row == 1 else "s")
            self._in_a_row = 0
            self._set_delay(*RECONNECT_S)

    def note_batch_window(self) -> None:
        """MQTT 3.1.1 announces no window toward us; say once what bounds a batch there.
        (A v5 broker's CONNACK Receive Maximum bounds what we send it, not what it sends
        us: broker_bridge/inflight_cap.py names a window that is too small from the
        batches themselves.)"""
        batch_max = self._settings.batch_max
        if self._settings.protocol != "5" and batch_max and not self._receive_maximum_logged:
            self._receive_maximum_logged = True   # said once per process
            log.info("MQTT 3.1.1 has no Receive Maximum: the broker's own in-flight "
                     "limit bounds every batch (NATS max_ack_pending, 1024 by default; "
                     "mosquitto max_inflight_messages); it should be at least [platform] "
                     "batch_max = %d. The bridge says so if its batches show a lower one",
                     batch_max)
