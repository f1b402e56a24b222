"""The watcher process around the pure core: MQTT messages in (a plain subscription to
every device's rating, status, telemetry and event topics), alerts out on
`{prefix}/alerts` and the webhook, the state saved atomically.

One loop owns the core. paho's network thread only puts messages on a queue; hostile
payloads are logged (a few a minute) and skipped, never fatal.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from broker_bridge import device_numbers
from broker_bridge.device_numbers import Refused
from broker_bridge.mqtt_link import (
    Incoming,
    IncomingBurst,
    LinkDown,
    LinkEvent,
    LinkFactory,
    LinkUp,
    MqttLink,
)
from broker_bridge.sender import describe_failure
from broker_bridge.watch.alerts import alert_payload
from broker_bridge.watch.config import WatchConfig
from broker_bridge.watch.model import (
    Alert,
    BrokerLink,
    ClockStep,
    EventSeen,
    RatingSeen,
    StatusSeen,
    TelemetrySeen,
    Tick,
    WatchEvent,
)
from broker_bridge.watch.rules import Watcher
from broker_bridge.watch.state import StateError, load_state, save_state
from broker_bridge.watch.webhook import Webhook
from common.rating import DEVICE_ID_RE, InvalidRecord, decode_json_object, parse_rating

log = logging.getLogger("hcp.watch")

MAX_DEVICE_MESSAGE = 64 * 1024
SKIPPED_LOGS_PER_MIN = 20
# Wall time that moved this much more (or less) than monotonic time was stepped.
CLOCK_STEP_S = 5.0
# Messages from device ids beyond [watch] max_devices: one WARNING at most this often.
IGNORED_DEVICES_LOG_S = 600.0


class _Wakeup:
    pass


class WatchService:
    """Owns the MQTT link, the core and the state file."""

    def __init__(self, config: WatchConfig, clock: Callable[[], float] = time.time,
                 link_factory: LinkFactory = MqttLink, tick_s: float = 1.0,
                 monotonic: Callable[[], float] | None = None) -> None:
        self.config = config
        self._wall = clock
        # Steps of the wall clock are told from its drift against the monotonic one; a
        # virtual `clock` (tests) without its own `monotonic` has none.
        self._monotonic = monotonic or (time.monotonic if clock is time.time else None)
        self._wall_mono: tuple[float, float] | None = None
        self._tick_s = tick_s
        self._prefix = config.mqtt.prefix
        self._events: queue.SimpleQueue[LinkEvent | _Wakeup] = queue.SimpleQueue()
        self._stop = threading.Event()
        self.watcher = self._load_core()
        self.link = link_factory(config.mqtt, self.subscriptions(), self._events.put,
                                 lambda topic: False)
        w = config.watch
        self._webhook = (Webhook(w.webhook_url, w.webhook_timeout_s, w.webhook_token_file,
                                 w.webhook_format, w.webhook_secret_file, clock)
                         if w.webhook_url else None)
        self._last_save = time.monotonic()
        self._save_failing = False
        self._skip_log = (0.0, 0)
        self._tick_failed_log = -60.0
        self._ignored_told = 0                 # devices_ignored when last logged
        self._ignored_log_at: float | None = None
        self.failed = False  # a thread died: exit non-zero
        self.failures = 0  # messages whose handling raised unexpectedly (contained)
        self.ticks = 0  # ticks run so far (tests wait for one after moving their clock)

    def _clock(self) -> float:
        """Now by the wall clock; when it has been stepped since the last reading (NTP,
        an operator, a resume from suspend), the core is told first."""
        wall = self._wall()
        if self._monotonic is None:
            return wall
        mono = self._monotonic()
        if self._wall_mono is not None:
            last_wall, last_mono = self._wall_mono
            step = (wall - last_wall) - (mono - last_mono)
            if abs(step) > CLOCK_STEP_S:
                log.warning("the clock was stepped by %+.0f s; moving the watcher's own "
                            "times with it", step)
                self.watcher.handle(ClockStep(step, wall))
        self._wall_mono = (wall, mono)
        return wall

    def _load_core(self) -> Watcher:
        c, w = self.config, self.config.watch
        snapshot = load_state(w.state_file)
        if snapshot is not None:
            try:
                core = Watcher(c.rules, c.calendar, w.dedupe_per_device, snapshot,
                               w.max_devices)
                log.info("state loaded from %s: %d devices, %d open alerts", w.state_file,
                         len(core.devices), len(core.open))
                if core.devices_ignored:
                    log.warning("the state file holds more than [watch] max_devices = %d "
                                "devices: the first %d are kept, %d dropped with their "
                                "alerts", w.max_devices, w.max_devices, core.devices_ignored)
                    self._ignored_told = core.devices_ignored
                return core
            except (ValueError, KeyError, TypeError, AttributeError, OverflowError) as e:
                log.error("state file %s cannot be used (%s); starting afresh", w.state_file,
                          str(e)[:200])
        return Watcher(c.rules, c.calendar, w.dedupe_per_device, max_devices=w.max_devices)

    def subscriptions(self) -> list[tuple[str, int]]:
        p = self._prefix
        return [(f"{p}/+/rating", 1), (f"{p}/+/status", 1), (f"{p}/+/telemetry", 0),
                (f"{p}/+/event", 1)]

    @property
    def healthy(self) -> bool:
        return self.link.healthy and self._webhook_alive()

    def _webhook_alive(self) -> bool:
        return self._webhook is None or self._webhook.is_alive()

    def request_stop(self) -> None:
        """Safe from a signal handler or any thread."""
        self._stop.set()
        self._events.put(_Wakeup())

    def run(self, on_tick: Callable[[], None] | None = None, tick_s: float = 1.0) -> None:
        """The watcher's loop; `on_tick` (the watchdog) runs at each rule tick, which
        comes every `[watch] tick_s` whatever `tick_s` asks."""
        if self._webhook is not None:
            self._webhook.start()
        self.link.start()
        next_tick = time.monotonic()
        try:
            while not self._stop.is_set():
                try:
                    item = self._events.get(timeout=max(0.0, next_tick - time.monotonic()))
                except queue.Empty:
                    item = None
                if isinstance(item, IncomingBurst):
                    for message in item:
                        self._contained(message)
                elif isinstance(item, Incoming | LinkUp | LinkDown):
                    self._contained(item)
                if time.monotonic() >= next_tick:
                    self._tick()
                    self.ticks += 1
                    next_tick = time.monotonic() + self._tick_s
                    if not self._webhook_alive():
                        # Its loop contains its failures; should it die anyway, a
                        # restart is the cure: no more watchdog pings, and out.
                        log.critical("the webhook thread has died; stopping so that "
                                     "systemd restarts the watcher")
                        self.failed = True
                        break
                    if on_tick is not None:
                        on_tick()
                self._maybe_save()
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        self._save()
        self.link.stop()
        if self._webhook is not None:
            self._webhook.stop()

    # Messages -----------------------------------------------------------------------

    def _contained(self, item: Incoming | LinkUp | LinkDown) -> None:
        """A message, with whatever it raises contained (counted and logged, a few a
        minute): the messages are retained or redelivered, and one that stopped the
        watcher would stop it again at every start."""
        try:
            self._on_link_event(item)
        except Exception as e:
            self.failures += 1
            topic = item.topic if isinstance(item, Incoming) else "the link"
            self._skip(topic, f"handling it failed unexpectedly ({describe_failure(e)})")
            log.debug("the failure in full", exc_info=True)

    def _tick(self) -> None:
        """The rules' tick, contained like a message: one device whose alert cannot be
        sent must not end the loop (and with it every other device's alerts)."""
        try:
            self._apply(Tick(self._clock()))
        except Exception as e:
            self.failures += 1
            if time.monotonic() - self._tick_failed_log >= 60:  # at most once a minute
                self._tick_failed_log = time.monotonic()
                log.error("a tick of the rules failed unexpectedly (%s); carrying on",
                          describe_failure(e))
            log.debug("the failure in full", exc_info=True)

    def _on_link_event(self, item: Incoming | LinkUp | LinkDown) -> None:
        now = self._clock()
        if isinstance(item, LinkUp):
            self._apply(BrokerLink(True, now))
        elif isinstance(item, LinkDown):
            self._apply(BrokerLink(False, now))
        else:
            event = self._decode(item, now)
            if event is not None:
                self._apply(event)

    def _decode(self, msg: Incoming, now: float) -> WatchEvent | None:
        if not msg.topic.startswith(self._prefix + "/"):
            return None
        device_id, _, kind = msg.topic[len(self._prefix) + 1:].partition("/")
        if not DEVICE_ID_RE.fullmatch(device_id) or kind not in (
                "rating", "status", "telemetry", "event"):
            self._skip(msg.topic, "topic does not name a device")
            return None
        if kind == "rating":
            try:
                rating = parse_rating(msg.payload, device_id)
            except InvalidRecord as e:
                self._skip(msg.topic, f"{e.reason}: {e.detail}")
                return None
            return RatingSeen(device_id, rating.record, now)
        if kind == "status" and not msg.payload:
            return StatusSeen(device_id, None, now)
        body = self._object(msg)
        if body is None:
            return None
        if kind == "status":
            online = body.get("online")
            if not isinstance(online, bool):
                self._skip(msg.topic, "status without online true/false")
                return None
            return StatusSeen(device_id, online, now)
        if kind == "telemetry":
            # A refused field reads as absent; the message still shows the device alive.
            backlog = oldest = None
            try:
                backlog = device_numbers.count(body.get("backlog"), device_id, "backlog")
            except Refused as e:
                self._skip(msg.topic, str(e))
            try:
                oldest = device_numbers.seconds(body.get("oldest_pending_s"), device_id,
                                                "oldest_pending_s")
            except Refused as e:
                self._skip(msg.topic, str(e))
            return TelemetrySeen(device_id, backlog, oldest, _flag(body.get("clock_synced")),
                                 now)
        name = body.get("event")
        if not isinstance(name, str) or not 0 < len(name) <= 64:
            self._skip(msg.topic, "event without a name")
            return None
        return EventSeen(device_id, name, now)

    def _object(self, msg: Incoming) -> dict[str, Any] | None:
        if len(msg.payload) > MAX_DEVICE_MESSAGE:
            self._skip(msg.topic, f"{len(msg.payload)} bytes")
            return None
        try:
            return decode_json_object(msg.payload)
        except InvalidRecord as e:
            self._skip(msg.topic, f"{e.reason}: {e.detail}")
            return None

    def _skip(self, topic: str, why: str) -> None:
        start, count = self._skip_log
        now = time.monotonic()
        if now - start >= 60:
            start, count = now, 0
        if count < SKIPPED_LOGS_PER_MIN:
            log.warning("skipped a message on %s: %s", self._shown_topic(topic), why[:200])
        elif count == SKIPPED_LOGS_PER_MIN:
            log.warning("more messages skipped this minute; not logging them")
        self._skip_log = (start, count + 1)

    def _shown_topic(self, topic: str) -> str:
        """The topic for the log, without its device part when that is not a device id
        (it could be any text, a line break or someone's name)."""
        device_id, _, kind = topic[len(self._prefix) + 1:].partition("/")
        if topic.startswith(self._prefix + "/") and DEVICE_ID_RE.fullmatch(device_id):
            return topic[:120]
        return f"{self._prefix}/?/{kind[:20] if kind.isidentifier() else '?'}"

    # Alerts and state -----------------------------------------------------------------

    def _apply(self, event: WatchEvent) -> None:
        for alert in self.watcher.handle(event):
            self._publish(alert)
        if self.watcher.devices_ignored != self._ignored_told:
            self._tell_ignored()

    def _tell_ignored(self) -> None:
        """One WARNING per IGNORED_DEVICES_LOG_S while messages from device ids beyond
        max_devices come in."""
        now = time.monotonic()
        if self._ignored_log_at is not None and now - self._ignored_log_at \
                < IGNORED_DEVICES_LOG_S:
            return
        ignored = self.watcher.devices_ignored
        log.warning("watching [watch] max_devices = %d devices already: ignoring messages "
                    "from new device ids (%d since the last warning, %d in all); the known "
                    "devices are watched as before. A fleet this large needs a higher "
                    "max_devices; otherwise the broker's ACL lets a client publish under "
                    "other devices' ids", self.watcher.max_devices,
                    ignored - self._ignored_told, ignored)
        self._ignored_told = ignored
        self._ignored_log_at = now

    def _publish(self, alert: Alert) -> None:
        hall_tz = self.config.calendar.for_device(alert.device_id, alert.hall_id).tz
        payload = alert_payload(alert, self.config.mqtt.client_id, self._clock(), hall_tz,
                                self.config.watch.window_names.get(alert.device_id))
        self.link.publish(f"{self._prefix}/alerts", payload, qos=1)
        if self._webhook is not None:
            self._webhook.send(payload)
        if alert.resolved:
            log.info("resolved %s at %s (%s)", alert.kind, alert.device_id, alert.alert_id)
        else:
            log.warning("ALERT %s (%s) at %s: %s", alert.kind, alert.severity,
                        alert.device_id, alert.evidence)

    def _maybe_save(self) -> None:
        if self.watcher.alerts_changed:
            self._save()
        elif self.watcher.dirty and (time.monotonic() - self._last_save
                                     >= self.config.watch.save_every_s):
            self._save()

    def _save(self) -> None:
        self._last_save = time.monotonic()
        try:
            save_state(self.config.watch.state_file, self.watcher.snapshot())
        except StateError as e:
            if not self._save_failing:
                log.error("%s; alerts go on, but a restart may raise open ones again", e)
            self._save_failing = True
            return
        if self._save_failing:
            log.info("state saved again")
        self._save_failing = False
        self.watcher.dirty = self.watcher.alerts_changed = False


def _flag(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None
