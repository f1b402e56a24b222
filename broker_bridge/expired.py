"""`hcp-bridge expired --config bridge.toml`: report expired prompts to the platform, for
`[platform] profile = "gov"`.

A prompt that times out unrated is a `prompt_expired` event on `{prefix}/{device}/event`
(docs/mqtt.md), not a rating: the device never invents one. In the gov profile it becomes
a record with `assessType = "expired"` (docs/gov-profile.md) that the platform can turn
into its province's default rating. This process is that output path, beside the bridge:
it subscribes to the events (its own shared group, `<shared_group>-expired`, and its own
session), posts expired prompts in batches with the bridge's platform client and retry
policy, and acknowledges each event only after the platform has answered for it. Other
events are acknowledged at once. The record id is derived from device, case and time,
so a redelivered event is de-duplicated by the platform like a re-sent rating.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from broker_bridge.bridge import POISON_FAILURES
from broker_bridge.config import BridgeConfig, load_bridge_config, login_as
from broker_bridge.device_numbers import QuietWarnings
from broker_bridge.messages import dead_letter
from broker_bridge.metrics import BridgeMetrics
from broker_bridge.mqtt_link import (
    Incoming,
    IncomingBurst,
    LinkDown,
    LinkError,
    LinkEvent,
    LinkFactory,
    LinkUp,
    MqttLink,
)
from broker_bridge.platform_client import PlatformClient, PlatformError
from broker_bridge.profile import GovProfile, encode
from broker_bridge.sender import (
    Batch,
    BatchAbandoned,
    BatchAnswered,
    BatchFailed,
    PlatformRefuses,
    PlatformWorker,
    WorkerEvent,
    describe_failure,
)
from common.rating import (
    DEVICE_ID_RE,
    TIME_RANGE_TEXT,
    InvalidRecord,
    RatingMessage,
    aware_time,
    decode_json_object,
    is_text,
)
from common.service import (
    EX_CONFIG,
    EX_SOFTWARE,
    config_from_command_line,
    run_service,
    setup_logging,
)

DRAIN_S = 2.0
MAX_EVENT_BYTES = 64 * 1024
log = logging.getLogger("hcp.expired")


@dataclass(slots=True)
class _Held:
    message: RatingMessage
    since: float
    deliveries: list[tuple[int, int, int]] = field(default_factory=list)
    dispatched: bool = False
    failures: int = 0
    topic: str = ""


class _Wakeup:
    pass


class ExpiredForwarder:
    """Events in, expired prompts out to the platform, acknowledgements after answers."""

    def __init__(self, config: BridgeConfig, link_factory: LinkFactory = MqttLink) -> None:
        if config.gov_profile is None:
            raise ValueError("expired prompts are reported only with profile = \"gov\"")
        self.profile: GovProfile = config.gov_profile
        m, p = config.mqtt, config.platform
        self._prefix = m.prefix
        self.link_client_id = f"{m.client_id[:55]}-expired"
        self._batch_max = p.batch_max
        self._batch_wait = p.batch_wait_ms / 1000.0
        self._events: queue.SimpleQueue[LinkEvent | WorkerEvent | _Wakeup] = \
            queue.SimpleQueue()
        self._jobs: queue.SimpleQueue[Batch | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._worker_stopping = threading.Event()
        self._held: dict[str, _Held] = {}
        self._waiting: deque[str] = deque()
        self._alone: deque[str] = deque()  # from a batch that failed: one at a time
        self._busy = False
        self.failed = False  # the worker died: exit non-zero
        self.metrics = BridgeMetrics()
        self._warnings = QuietWarnings(log, time.monotonic)
        self._batches = 0
        self.forwarded = 0
        # Its own client id (and, with username_is_client_id, its own broker user): the
        # bridge with the same config runs beside it.
        settings = replace(login_as(m, self.link_client_id),
                           shared_group=f"{m.shared_group[:55]}-expired" if m.shared_group
                           else "")
        self.link = link_factory(settings, [(self._subscription(settings.shared_group), 1)],
                                 self._events.put, lambda topic: topic.endswith("/event"))
        self._worker = PlatformWorker(
            "platform-expired", PlatformClient(p.url, p.timeout_s, p.token_file, p.ca_file),
            self._jobs, self._events.put, self.metrics, self._worker_stopping,
            p.client_error_retry_s, p.retry_cap_s)

    def _subscription(self, group: str) -> str:
        topic = f"{self._prefix}/+/event"
        return f"$share/{group}/{topic}" if group else topic

    @property
    def healthy(self) -> bool:
        return self.link.healthy and not self.failed and self._worker.is_alive()

    def request_stop(self) -> None:
        self._stop.set()
        self._events.put(_Wakeup())

    def run(self, on_tick: Callable[[], None] | None = None, tick_s: float = 1.0) -> None:
        self._worker.start()
        self.link.start()
        try:
            while not self._stop.is_set():
                timeout = tick_s
                if self._alone and not self._busy:
                    timeout = 0.0
                elif self._waiting and not self._busy:
                    head = self._held[self._waiting[0]]
                    timeout = max(0.0, min(tick_s, head.since + self._batch_wait
                                           - time.monotonic()))
                try:
                    item = self._events.get(timeout=timeout)
                except queue.Empty:
                    item = None
                if isinstance(item, Incoming):
                    self._handle_event(item)
                elif isinstance(item, IncomingBurst):
                    for message in item:
                        self._handle_event(message)
                elif item is not None:
                    self._handle(item)
                self._dispatch()
                if not self._worker.is_alive():
                    log.critical("the platform worker thread has died; stopping so that "
                                 "systemd restarts this process")
                    self.failed = True
                    break
                if on_tick is not None:
                    on_tick()
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        self._worker_stopping.set()
        deadline = time.monotonic() + DRAIN_S
        while self._busy and time.monotonic() < deadline:
            try:
                item = self._events.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                continue
            if isinstance(item, BatchAnswered | BatchAbandoned | BatchFailed):
                self._handle(item)
        self._jobs.put(None)
        self.link.stop()

    def _handle(self, item: LinkEvent | WorkerEvent | _Wakeup) -> None:
        if isinstance(item, Incoming):
            self._on_event(item)
        elif isinstance(item, LinkUp):
            # Deliveries from an earlier connection cannot be acknowledged; the broker
            # delivers again what it still holds.
            for prompt_id in list(self._held):
                held = self._held[prompt_id]
                held.deliveries.clear()
                if not held.dispatched:
                    del self._held[prompt_id]
            self._waiting = deque(p for p in self._waiting if p in self._held)
            self._alone = deque(p for p in self._alone if p in self._held)
        elif isinstance(item, BatchAnswered):
            self._on_answered(item)
        elif isinstance(item, BatchAbandoned):
            self._busy = False
        elif isinstance(item, BatchFailed):
            self._on_failed(item)
        elif isinstance(item, PlatformRefuses):
            pass  # the worker logged it loudly; the events wait at the broker
        elif isinstance(item, LinkDown):
            pass

    def _handle_event(self, msg: Incoming) -> None:
        """One event, with whatever it raises contained (acknowledged, counted, logged):
        an event that made this loop raise would stop it again at every redelivery."""
        try:
            self._on_event(msg)
        except Exception as e:
            log.error("handling an event failed unexpectedly (%s); acknowledged and "
                      "skipped", describe_failure(e))
            log.debug("the failure in full", exc_info=True)
            self.metrics.internal_errors.labels("message").inc()
            self.link.ack(msg.generation, msg.mid, msg.qos)

    def _on_event(self, msg: Incoming) -> None:
        record = self._expired_record(msg)
        if record is None:
            self.link.ack(msg.generation, msg.mid, msg.qos)
            return
        prompt_id = record[self.profile.id_field]
        held = self._held.get(prompt_id)
        if held is None:
            device_id = record.get("deviceCode") or ""
            held = self._held[prompt_id] = _Held(
                RatingMessage(prompt_id, str(device_id), 0, record, encode(record)),
                time.monotonic(), topic=msg.topic)
            self._waiting.append(prompt_id)
        held.deliveries.append((msg.generation, msg.mid, msg.qos))

    def _expired_record(self, msg: Incoming) -> dict[str, Any] | None:
        """The gov record for a valid prompt_expired event; None for anything else."""
        device_id, _, kind = msg.topic[len(self._prefix) + 1:].partition("/")
        if kind != "event" or not DEVICE_ID_RE.fullmatch(device_id) \
                or len(msg.payload) > MAX_EVENT_BYTES:
            return None
        try:
            event = decode_json_object(msg.payload)
        except InvalidRecord:
            return None
        if event.get("event") != "prompt_expired":
            return None
        case_id, at = event.get("case_id"), event.get("at")
        if not (is_text(case_id, 64) and aware_time(at) is not None):
            self._warnings.warn(f"skipped a prompt_expired event from {device_id} without "
                                "a case_id (1..64 characters of text) or an ISO-8601 time with an "
                                f"offset from {TIME_RANGE_TEXT}")
            return None
        return self.profile.expired(device_id, {"case_id": case_id, "at": at})

    def _dispatch(self) -> None:
        while self._alone and not self._busy:
            held = self._held.get(self._alone.popleft())
            if held is not None and not held.dispatched:
                held.dispatched = True
                self._send([held.message])
        if self._busy or not self._waiting:
            return
        head = self._held[self._waiting[0]]
        if len(self._waiting) < self._batch_max and \
                time.monotonic() - head.since < self._batch_wait:
            return
        messages: list[RatingMessage] = []
        while self._waiting and len(messages) < self._batch_max:
            held = self._held[self._waiting.popleft()]
            held.dispatched = True
            messages.append(held.message)
        self._send(messages)

    def _send(self, messages: list[RatingMessage]) -> None:
        self._batches += 1
        self._busy = True
        self._jobs.put(Batch(self._batches, messages))

    def _on_failed(self, failed: BatchFailed) -> None:
        """Each prompt of a batch whose delivery raised is tried again alone; one that
        fails alone too is set aside (dead letter, acknowledged): no poison event can
        stop the worker or hold the others back."""
        self._busy = False
        alone = len(failed.batch.ratings) == 1
        for message in failed.batch.ratings:
            held = self._held.get(message.rating_id)
            if held is None:
                continue
            held.dispatched = False
            held.failures += 1
            if not (alone and held.failures >= POISON_FAILURES):
                self._alone.append(message.rating_id)
                continue
            del self._held[message.rating_id]
            self.metrics.deadletter.labels("unprocessable").inc()
            device_id = held.topic[len(self._prefix) + 1:].partition("/")[0]
            self.link.publish(f"{self._prefix}/deadletter", dead_letter(
                held.topic, device_id, message.payload, InvalidRecord(
                    "unprocessable", f"reporting this expired prompt failed "
                    f"{held.failures} times ({failed.detail})", message.rating_id),
                self.link_client_id), qos=1)
            self._warnings.warn(f"expired prompt {message.rating_id} from {device_id} set "
                                f"aside: delivering it failed ({failed.detail})")
            for generation, mid, qos in held.deliveries:
                self.link.ack(generation, mid, qos)

    def _on_answered(self, answered: BatchAnswered) -> None:
        self._busy = False
        for message in answered.batch.ratings:
            result = answered.results[message.rating_id]
            if result.status == "rejected":
                log.warning("platform rejected expired prompt %s from %s: %s",
                            message.rating_id, message.device_id, result.error)
            held = self._held.pop(message.rating_id, None)
            for generation, mid, qos in (held.deliveries if held else ()):
                self.link.ack(generation, mid, qos)
            self.forwarded += 1


def main(argv: list[str]) -> int:
    config = config_from_command_line(
        "hcp-bridge expired",
        "Report expired prompts to the platform (platform.profile = \"gov\").",
        "bridge.toml", load_bridge_config, argv)
    if isinstance(config, int):
        return config
    if config.gov_profile is None:
        print(f"{config.path}: [platform] profile: expired prompts are reported only with "
              "profile = \"gov\" (SPEC §9 records have no place for them)", file=sys.stderr)
        return EX_CONFIG
    setup_logging(config.log_level)
    try:
        forwarder = ExpiredForwarder(config)
    except (LinkError, PlatformError) as e:
        print(f"{config.path}: {e}", file=sys.stderr)
        return EX_CONFIG

    log.info("expired prompts: %s:%s %s/+/event -> %s", config.mqtt.host, config.mqtt.port,
             config.mqtt.prefix, config.platform.url)
    run_service(forwarder)
    if forwarder.failed:
        return EX_SOFTWARE  # the worker died: systemd restarts us
    log.info("stopped after reporting %d expired prompts", forwarder.forwarded)
    return 0
