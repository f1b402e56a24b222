"""The bridge loop: ratings from MQTT, in batches, to the platform; receipts and
acknowledgements only after the platform answered (SPEC §7, §9).

One thread owns all state. paho's network thread and the platform workers only put
events on one queue. The bridge keeps nothing on disk: what it has not acknowledged
the broker delivers again, so it can be killed at any instant, restarted, or run
several times in one shared subscription group.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable

from broker_bridge.cache import Answer, RecentAnswers
from broker_bridge.config import BridgeConfig
from broker_bridge.containment import POISON_FAILURES, Containment
from broker_bridge.device_numbers import QuietWarnings
from broker_bridge.fleet import FleetView
from broker_bridge.inflight_cap import InFlightCap
from broker_bridge.messages import receipt
from broker_bridge.metrics import BridgeMetrics
from broker_bridge.mqtt_link import (
    Incoming,
    IncomingBurst,
    LinkDown,
    LinkEvent,
    LinkFactory,
    LinkUp,
    MqttLink,
)
from broker_bridge.outgoing import Outgoing
from broker_bridge.pending import Delivery, Pending
from broker_bridge.platform_client import STATUSES, PlatformClient, Result
from broker_bridge.sender import (
    Batch,
    BatchAbandoned,
    BatchAnswered,
    BatchFailed,
    PlatformRefuses,
    PlatformWorker,
    WorkerEvent,
)
from common.rating import (
    DEVICE_ID_RE,
    InvalidRecord,
    RatingMessage,
    parse_rating,
    scan_rating_id,
)
from common.text import is_utf8

log = logging.getLogger("hcp.bridge")

# POISON_FAILURES, Delivery and Pending live beside (containment, pending) and stay
# importable from here.
__all__ = ["DRAIN_S", "POISON_FAILURES", "Bridge", "Delivery", "Event", "Pending"]

DRAIN_S = 2.0             # on stop, wait this long for batches the platform is answering



class _Wakeup:
    pass


Event = LinkEvent | WorkerEvent | _Wakeup


class Bridge(Containment):
    """Owns the MQTT link, the platform workers and the pending ratings (what it does
    with failures it did not expect: Containment, broker_bridge/containment.py)."""

    def __init__(self, config: BridgeConfig, metrics: BridgeMetrics,
                 clock: Callable[[], float] = time.monotonic,
                 link_factory: LinkFactory = MqttLink) -> None:
        self.config = config
        self.metrics = metrics
        self._clock = clock
        m, p = config.mqtt, config.platform
        self._prefix = m.prefix
        self._prefix_len = len(m.prefix) + 1
        self._batch_max = p.batch_max
        self._batch_wait = p.batch_wait_ms / 1000.0
        self._events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self._jobs: queue.SimpleQueue[Batch | None] = queue.SimpleQueue()
        self._stop_requested = threading.Event()
        self._workers_stopping = threading.Event()
        self._pending: dict[str, Pending] = {}
        self._waiting: deque[str] = deque()  # rating_ids not yet in a batch, oldest first
        # Ratings of a batch that failed unexpectedly, each to be sent in a batch of its
        # own, so that one poison record cannot hold back the others.
        self._alone: deque[str] = deque()
        self.failed = False  # a worker died: the process must exit non-zero
        # Same rating_id, another device's topic: handled after the first one's answer.
        self._deferred: dict[str, list[tuple[str, Incoming]]] = {}
        self._cache = RecentAnswers(p.cache_ttl_s, p.cache_max)
        self._answers = {status: Answer(status, None) for status in STATUSES}
        self._idle_workers = p.concurrency
        self._batches_out = 0
        self._batch_number = 0
        # Ratings received and the in-flight gauge reach Prometheus once per loop step
        # (answers once per batch): each inc() or set() takes a lock, too much per rating.
        self._received = 0
        self._inflight_shown = -1
        self._connected_shown = -1
        self._fleet = FleetView(metrics, clock)
        self._cap = InFlightCap(f"{m.host}:{m.port}", p.batch_max, p.concurrency)
        self._failure_log = QuietWarnings(log, clock, level=logging.ERROR)
        self.link = link_factory(m, self.subscriptions(), self._events.put, self._holds)
        self.out = Outgoing(self.link, metrics, m.prefix, m.client_id, clock)
        self._workers = [
            PlatformWorker(f"platform-{i + 1}",
                           PlatformClient(p.url, p.timeout_s, p.token_file, p.ca_file,
                                          config.gov_profile),
                           self._jobs, self._events.put, metrics, self._workers_stopping,
                           p.client_error_retry_s, p.retry_cap_s)
            for i in range(p.concurrency)
        ]

    # Topics -----------------------------------------------------------------------

    def subscriptions(self) -> list[tuple[str, int]]:
        """Ratings and events through the shared group (each handled by one bridge);
        status and telemetry plainly, so every bridge sees the whole fleet (and shared
        subscriptions never get retained messages)."""
        m = self.config.mqtt
        shared = f"$share/{m.shared_group}/" if m.shared_group else ""
        return [
            (f"{shared}{m.prefix}/+/rating", 1),
            (f"{shared}{m.prefix}/+/event", 1),
            (f"{m.prefix}/+/status", 1),
            (f"{m.prefix}/+/telemetry", 0),
        ]

    def _holds(self, topic: str) -> bool:
        return topic.endswith("/rating")

    # Lifecycle --------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        """Connected with every subscription granted, and every platform worker alive."""
        return self.link.healthy and not self.failed and self._workers_alive()

    def _workers_alive(self) -> bool:
        return all(worker.is_alive() for worker in self._workers)

    def request_stop(self) -> None:
        """Safe from a signal handler or any thread."""
        self._stop_requested.set()
        self._events.put(_Wakeup())

    def run(self, on_tick: Callable[[], None] | None = None, tick_s: float = 1.0) -> None:
        """Run until request_stop(); `on_tick` is called from this loop at least every
        `tick_s` seconds (the systemd watchdog: it proves this loop is alive)."""
        for worker in self._workers:
            worker.start()
        self.link.start()
        try:
            while not self._stop_requested.is_set():
                self._step(self._wait_timeout(tick_s))
                if not self._workers_alive():
                    # Cannot happen while the workers contain their failures; if it does,
                    # stop (and stop the watchdog pings): a restart is the cure.
                    log.critical("a platform worker thread has died; stopping so that "
                                 "systemd restarts the bridge")
                    self.failed = True
                    break
                if on_tick is not None:
                    on_tick()
        finally:
            self._shutdown()

    def _wait_timeout(self, longest: float) -> float:
        if self._alone and self._idle_workers:
            return 0.0
        if self._waiting and self._idle_workers:
            head = self._pending.get(self._waiting[0])
            if head is not None:
                return max(0.0, min(longest, head.since + self._batch_wait - self._clock()))
        return longest

    def _step(self, timeout: float) -> None:
        try:
            event = self._events.get(timeout=timeout)
        except queue.Empty:
            event = None
        handled = 0
        while event is not None:
            if isinstance(event, Incoming):
                self._handle_message(event)
                handled += 1
            elif isinstance(event, IncomingBurst):
                for message in event:
                    self._handle_message(message)
                handled += len(event)
            else:
                self._handle(event)
                handled += 1
            if handled >= 1000:
                break
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                event = None
        self._dispatch()
        self._flush_metrics()

    def _flush_metrics(self) -> None:
        if self._received:
            self.metrics.received.inc(self._received)
            self._received = 0
        inflight = len(self._pending)
        if inflight != self._inflight_shown:
            self.metrics.inflight.set(inflight)
            self._inflight_shown = inflight
        # Connected *with every subscription granted* (as /healthz): a broker that refuses
        # the subscriptions delivers nothing, connected or not.
        connected = 1 if self.link.healthy else 0
        if connected != self._connected_shown:
            self.metrics.broker_connected.set(connected)
            self._connected_shown = connected

    def _shutdown(self) -> None:
        """Let the platform finish answering what it is answering (acknowledge those),
        abandon the rest un-acknowledged (the broker keeps it), disconnect."""
        self._workers_stopping.set()
        deadline = time.monotonic() + DRAIN_S
        while self._batches_out and time.monotonic() < deadline:
            try:
                event = self._events.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                continue
            if isinstance(event, BatchAnswered | BatchAbandoned | PlatformRefuses
                          | BatchFailed):
                self._handle(event)
        for _ in self._workers:
            self._jobs.put(None)
        if self._batches_out:
            log.warning("stopping with %d batches unanswered: the broker will deliver "
                        "them again", self._batches_out)
        self._flush_metrics()
        self.link.stop()
        self.metrics.broker_connected.set(0)

    # Events -----------------------------------------------------------------------

    def _handle(self, event: Event) -> None:
        if isinstance(event, Incoming):
            self._on_message(event)
        elif isinstance(event, BatchAnswered):
            self._on_answered(event.batch, event.results)
        elif isinstance(event, BatchAbandoned):
            self._batches_out -= 1
            self._idle_workers += 1
        elif isinstance(event, BatchFailed):
            self._on_failed(event)
        elif isinstance(event, LinkUp):
            self._on_link_up(event)
        elif isinstance(event, LinkDown):
            self.metrics.broker_connected.set(0)
            self._connected_shown = 0
        elif isinstance(event, PlatformRefuses):
            self.out.alert_refused(event)

    def _on_link_up(self, event: LinkUp) -> None:
        """Every delivery so far came on an earlier connection and must not be
        acknowledged; the broker redelivers what it still holds for us."""
        held = sum(len(p.deliveries) for p in self._pending.values())
        if held and not event.session_present:
            log.warning("the broker lost our session: %d un-acknowledged ratings come back "
                        "only by the devices' resend", held)
        for rating_id in list(self._pending):
            entry = self._pending[rating_id]
            entry.deliveries.clear()
            if not entry.dispatched:
                del self._pending[rating_id]  # not sent yet: the redelivery replaces it
        self._waiting = deque(r for r in self._waiting if r in self._pending)
        self._alone = deque(r for r in self._alone if r in self._pending)
        self._deferred.clear()
        self._cap.new_connection()

    def _on_message(self, msg: Incoming) -> None:
        rest = msg.topic[self._prefix_len:]
        device_id, _, kind = rest.partition("/")
        if kind == "rating":
            self._on_rating(device_id, msg)
        elif not DEVICE_ID_RE.fullmatch(device_id):
            return  # not a device's topic (the ACL lets none publish there): no metric
        elif kind == "status":
            self._fleet.status(device_id, msg.payload)
        elif kind == "telemetry":
            self._fleet.telemetry(device_id, msg.payload)
        elif kind == "event":
            self._fleet.event(device_id, msg.payload)

    def _on_rating(self, device_id: str, msg: Incoming, counted: bool = False) -> None:
        if not counted:
            self._received += 1
        delivery = Delivery(msg.generation, msg.mid, msg.qos)
        if not DEVICE_ID_RE.fullmatch(device_id):
            self.out.dead_letter(msg, device_id, None, InvalidRecord(
                "bad_topic", _bad_device_part(device_id), scan_rating_id(msg.payload)))
            return
        try:
            rating = parse_rating(msg.payload, device_id, keep_record=False)
        except InvalidRecord as e:
            self.out.dead_letter(msg, device_id, delivery, e)
            return
        now = self._clock()
        answer = self._cache.get(rating.rating_id, device_id, now)
        if answer is not None:
            self.metrics.duplicate.inc()
            self.out.send_receipts({device_id: [receipt(rating.rating_id, answer.status,
                                                      answer.error)]})
            self.link.ack(delivery.generation, delivery.mid, delivery.qos)
            return
        entry = self._pending.get(rating.rating_id)
        if entry is not None:
            if entry.rating.device_id == device_id:
                entry.deliveries.append(delivery)  # a resend while the first is in flight
            else:
                self._deferred.setdefault(rating.rating_id, []).append((device_id, msg))
            return
        self._pending[rating.rating_id] = Pending(rating, now, [delivery])
        self._waiting.append(rating.rating_id)

    def _dispatch(self) -> None:
        while self._alone and self._idle_workers:
            entry = self._pending.get(self._alone.popleft())
            if entry is None or entry.dispatched:
                continue
            entry.dispatched = True
            self._send_batch([entry.rating])
        now = self._clock()
        while self._waiting and self._idle_workers:
            head = self._pending.get(self._waiting[0])
            if head is None or head.dispatched:
                self._waiting.popleft()
                continue
            if len(self._waiting) < self._batch_max and now - head.since < self._batch_wait:
                return
            ratings: list[RatingMessage] = []
            first_at = last_at = head.since
            while self._waiting and len(ratings) < self._batch_max:
                entry = self._pending.get(self._waiting.popleft())
                if entry is None or entry.dispatched:
                    continue
                entry.dispatched = True
                ratings.append(entry.rating)
                last_at = entry.since
            if not ratings:
                return
            self._cap.batch(len(ratings), first_at, last_at)
            self._send_batch(ratings)

    def _send_batch(self, ratings: list[RatingMessage]) -> None:
        self._batch_number += 1
        self._idle_workers -= 1
        self._batches_out += 1
        self._jobs.put(Batch(self._batch_number, ratings))

    def _on_answered(self, batch: Batch, results: dict[str, Result]) -> None:
        self._batches_out -= 1
        self._idle_workers += 1
        now = self._clock()
        by_device: dict[str, list[bytes]] = {}
        deliveries: list[Delivery] = []
        counts = dict.fromkeys(STATUSES, 0)
        pending, cache, answers = self._pending, self._cache, self._answers
        for rating in batch.ratings:
            rating_id, device_id = rating.rating_id, rating.device_id
            result = results[rating_id]
            status, error = result.status, result.error
            counts[status] += 1
            if status == "rejected":
                log.warning("platform rejected rating %s from %s: %s", rating_id,
                            device_id, error)
            cache.put(rating_id, device_id,
                      answers[status] if error is None else Answer(status, error), now)
            entry = pending.pop(rating_id, None)
            if entry is not None:
                deliveries.extend(entry.deliveries)
            entries = by_device.get(device_id)
            if entries is None:
                entries = by_device[device_id] = []
            entries.append(receipt(rating_id, status, error))
        m = self.metrics
        m.forwarded.inc(len(batch.ratings))
        for status, counter in (("accepted", m.accepted), ("duplicate", m.duplicate),
                                ("rejected", m.rejected)):
            if counts[status]:
                counter.inc(counts[status])
        # Receipts are queued before the acknowledgements, on the same connection: if we
        # die in between, the broker redelivers and the device gets a second receipt
        # (duplicate) instead of waiting resend_after_s for its first.
        self.out.send_receipts(by_device)
        ack = self.link.ack
        acked = 0
        for d in deliveries:
            acked += ack(d.generation, d.mid, d.qos)
        self._cap.acknowledged(self._clock())
        log.debug("batch %d: %d answered, %d deliveries acknowledged", batch.number,
                  len(batch.ratings), acked)
        if self._deferred:
            for rating in batch.ratings:
                for device_id, msg in self._deferred.pop(rating.rating_id, ()):
                    self._on_rating(device_id, msg, counted=True)


def _bad_device_part(device_id: str) -> str:
    """Why the topic's device part is not a device id, without repeating it (it could be
    any text)."""
    if not is_utf8(device_id):
        # The link keeps a topic's undecodable bytes as lone surrogates.
        return "the topic is not UTF-8 (MQTT topics must be)"
    return (f"the topic's device id ({len(device_id)} characters) is not a device id "
            "([A-Za-z0-9_-]{1,64})")
