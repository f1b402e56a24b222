"""Naming a broker that lets too few un-acknowledged ratings reach the bridge for a batch
(docs/bridge.md, "When the broker says no"), from what the bridge sees, not from what the
broker announces.

A broker's Receive Maximum in its CONNACK limits what *we* may send *it* (MQTT 5
§3.2.2.3.3): mosquitto announces its `max_inflight_messages` (20 by default) there and
still delivers 100 ratings un-acknowledged to a client that asks for 1,000; EMQX
announces the window it really keeps toward us. MQTT 3.1.1 announces nothing, and its
brokers keep a window of their own (mosquitto `max_inflight_messages`, NATS
`max_ack_pending`). So the bridge watches for the cap's signature instead: with a window
of K and ratings waiting at the broker, every batch holds exactly K, all of them arrive in
one burst right after the previous batch's acknowledgements, nothing more arrives while
the batch waits `batch_wait_ms`, and it goes out not full. Five such batches of the same
K in a row (K also the most this connection ever held) and the bridge says so, once per
figure: the ratings still flow, at most K per request.
"""

from __future__ import annotations

import logging

log = logging.getLogger("hcp.bridge")

IN_A_ROW = 5
# How soon after our acknowledgements a capped broker's next burst arrives, and how
# close together its messages are: generous for a loaded machine or a far broker, still
# far shorter than the gaps of sparse traffic.
BURST_S = 0.025


class InFlightCap:
    """Fed every batch the bridge sends; logs one ERROR per figure when the batches show
    the broker's in-flight window is below `batch_max`. Bridge loop thread only."""

    def __init__(self, where: str, batch_max: int, concurrency: int) -> None:
        self._where = where
        self._batch_max = batch_max
        self._concurrency = concurrency
        self._largest = 0          # the most one batch held on this connection
        self._size = 0             # the figure the current run of capped batches shows
        self._in_a_row = 0
        self._acked_at: float | None = None
        self._logged: set[int] = set()
        self.suspected: int | None = None   # the figure, once named

    def new_connection(self) -> None:
        self._largest = self._size = self._in_a_row = 0
        self._acked_at = None

    def acknowledged(self, now: float) -> None:
        """A batch's acknowledgements went out."""
        self._acked_at = now

    def batch(self, size: int, first_at: float, last_at: float) -> None:
        """A batch goes out: `size` ratings, received from `first_at` to `last_at`."""
        self._largest = max(self._largest, size)
        acked = self._acked_at
        capped = (size < self._batch_max and size == self._largest and acked is not None
                  and 0.0 <= first_at - acked <= BURST_S and last_at - first_at <= BURST_S)
        if not capped:
            self._size = self._in_a_row = 0
            return
        if size != self._size:
            self._size, self._in_a_row = size, 0
        self._in_a_row += 1
        if self._in_a_row < IN_A_ROW or size in self._logged:
            return
        self._logged.add(size)
        self.suspected = size
        plural = "" if size == 1 else "s"
        log.error(
            "broker %s lets only %d un-acknowledged message%s reach the bridge at a time "
            "(seen in %d batches in a row), fewer than [platform] batch_max = %d: every "
            "request to the platform carries at most %d rating%s. Raise the broker's "
            "limit (mosquitto max_inflight_messages for MQTT 3.1.1 clients, EMQX "
            "max_inflight, NATS max_ack_pending) to at least %d, or see docs/brokers.md",
            self._where, size, plural, IN_A_ROW, self._batch_max, size, plural,
            self._batch_max * self._concurrency)
