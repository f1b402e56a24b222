"""`hcp-device run`: the loop. Driver threads only put events on one queue; this loop is
the only place that calls the core and hands its actions to the rooms around it, so the
order "stored, then thanks, then `rated`" holds by construction.

The rooms (each with one reason to change): the action executor (device/executor.py),
the rating store (device/store.py), the serial session (device/serial_session.py),
receipts (device/receipts.py), settings from the broker (device/settings_sync.py), the
uplink to the broker (device/uplink.py), the event buffer (device/events.py), telemetry
and status (device/telemetry.py), driver health (device/faults.py), signals and stop
(device/lifecycle.py). With a FakeClock and fake drivers the whole daemon runs
in-process in virtual time: `start()`, `serve(until=...)`, `shutdown()`.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from common.sdnotify import notify, watchdog_interval
from device import __version__
from device.clock import Clock, SystemClock
from device.config import DeviceConfig
from device.core.machine import Evaluator, Identity
from device.core.model import Action, Event, FrameReceived, LinkChanged, SettingsChanged, Tick
from device.core.settings import UiSettings
from device.delivery import Delivery
from device.events import EventBuffer
from device.executor import ActionExecutor
from device.faults import DriverHealth
from device.lifecycle import Stop, drain, install_signal_handlers
from device.mqtt_events import MqttDown, MqttMessage, MqttPubAck, MqttUp
from device.mqtt_link import MqttLink
from device.outbox import Outbox
from device.ports import BrokerLink, Drivers, DriverStatus
from device.receipts import Receipts
from device.serial_session import SerialLine, SerialOpen, SerialSession
from device.settings_sync import RemoteSettings
from device.store import RatingStore
from device.telemetry import ClockWatch, Stats, Telemetry
from device.uplink import Uplink

log = logging.getLogger("hcp.device")

__all__ = ["Daemon", "SerialLine", "SerialOpen", "Stop", "WallClockStep"]


@dataclass(frozen=True)
class WallClockStep:
    """Test seam (sim socket `clock` op): the wall clock now reads host time + offset_s."""

    offset_s: float
    t: float = 0.0


class Daemon:
    """`link`: the broker link to use (a recording fake in tests); by default the paho
    link, or none at all with `mqtt=False`."""

    def __init__(self, config: DeviceConfig, drivers: Drivers, clock: Clock | None = None,
                 outbox: Outbox | None = None, mqtt: bool = True,
                 link: BrokerLink | None = None) -> None:
        self.config = config
        self.drivers = drivers
        self.clock: Clock = clock or SystemClock(config.clock.sync_file,
                                                 config.clock.assume_synced)
        self.outbox = outbox or Outbox(config.device.data_dir)
        self.queue: queue.Queue[Any] = queue.Queue()
        self.core: Evaluator | None = None
        self.on_ready: Callable[[], None] | None = None
        # Observers for in-process tools (hcp-sim fleet), called on the loop's thread:
        # a rating is durably stored; receipts removed these ratings ({rating_id: status}).
        self.on_stored: Callable[[dict[str, Any]], None] | None = None
        self.on_receipted: Callable[[dict[str, str]], None] | None = None
        if link is None and mqtt:
            link = MqttLink(config.mqtt, config.device.id, __version__, self.emit,
                            self.clock.monotonic, wall=self.clock.wall)
        self.link = link
        self.stats = Stats()
        self.uplink = Uplink(link, Delivery(config.mqtt.resend_after_s,
                                            config.mqtt.max_inflight), self.outbox)
        self.events = EventBuffer(self.clock, self.uplink)
        event = self.events.emit
        self.health = DriverHealth(event)
        self.store = RatingStore(self.outbox, config.device.data_dir, self.clock, self.stats,
                                 event, self._stored)
        self.serial = SerialSession(
            drivers.serial, config.serial.port,
            {"type": "hello", "device_id": config.device.id, "version": __version__},
            config.serial.require_crc, self.outbox, self.clock, self.stats, event,
            self.health, self._core_event)
        self.receipts = Receipts(self.outbox, self.stats, self._receipted)
        self.remote = RemoteSettings(config.ui, self.outbox, event)
        self.report = Telemetry(config.device.id, config.mqtt.telemetry_s, self.clock,
                                self.outbox, self.stats, self.uplink, self.health,
                                lambda: self.core.pending_cases if self.core else 0)
        self.clock_watch = ClockWatch(self.clock, config.clock.sync_file, event)
        self.executor = ActionExecutor(self._handle_core, self.store.store, self.serial.send,
                                       event, drivers.display, drivers.indicators,
                                       self.health, self.clock.monotonic, drivers.voice)
        self._watchdog_s: float | None = None
        self._next_watchdog = 0.0
        self._stopping: str | None = None

    # --- thread-safe door ---------------------------------------------------

    def emit(self, event: Any) -> None:
        self.queue.put(event)

    def request_stop(self, reason: str = "requested") -> None:
        # The flag lets the loop stop before whatever is queued ahead of the Stop (a
        # window system flooding lines), the event wakes it if it is waiting.
        self._stopping = reason
        self.queue.put(Stop(reason))

    def install_signal_handlers(self) -> None:
        install_signal_handlers(self.request_stop)

    # --- the loop -------------------------------------------------------------------

    def run(self) -> int:
        self.start()
        try:
            self.serve()
        finally:
            self.shutdown()
        return 0

    def start(self) -> None:
        now = self.clock.monotonic()
        self.stats.started_mono = now
        self.store.open()
        recent, mono = self.store.duplicate_memory()
        d = self.config.device
        self.core = Evaluator(
            identity=Identity(d.id, d.region_code, d.hall_id, d.window_id),
            settings=self.remote.stored(), clock=self.clock,
            first_seq=self.outbox.next_seq(), rated_cases=recent, rated_cases_mono=mono)
        self.serial.hold_unannounced(set(self.core.rated_cases))
        if self.drivers.control is not None:
            self.drivers.control.status_provider = self.status
            self.drivers.control.clock_stepper = lambda offset: self.emit(WallClockStep(offset))
        self.executor.run(self.core.start(now))
        self.clock_watch.check(now)
        self._status()   # before the first connect: its status says nobody is logged in
        self.uplink.start(self.outbox.pending_ids())
        if self.drivers.voice is not None:
            self.drivers.voice.start(self.emit, self.clock)
        self.drivers.keys.start(self.emit, self.clock)
        self.serial.start(self.emit)
        notify(f"READY=1\nSTATUS=ready, {len(self.outbox)} rating(s) pending")
        log.info("device %s ready (version %s)", d.id, __version__)
        if self.on_ready:
            self.on_ready()
        self._watchdog_s = watchdog_interval()
        self._next_watchdog = self.clock.monotonic()

    def serve(self, until: float | None = None) -> bool:
        """Handle events until a Stop (returns False) or, with `until`, until the clock
        has reached it with nothing left to do (returns True)."""
        while True:
            if self._stopping is not None:
                log.info("stopping (%s)", self._stopping)
                return False
            now = self.clock.monotonic()
            if self._watchdog_s is not None and now >= self._next_watchdog:
                notify("WATCHDOG=1")
                self._next_watchdog = now + self._watchdog_s
            deadline = self.next_deadline()
            if until is not None:
                deadline = until if deadline is None else min(deadline, until)
            ev = self.clock.next_event(
                self.queue, None if deadline is None else max(0.0, deadline - now))
            if isinstance(ev, Stop):
                log.info("stopping (%s)", ev.reason)
                return False
            self.handle(Tick(self.clock.monotonic()) if ev is None else ev)
            if until is not None and self.clock.monotonic() >= until and self.queue.empty():
                return True

    def next_deadline(self) -> float | None:
        assert self.core is not None
        deadlines = [d for d in (self.core.next_deadline(),
                                 self._next_watchdog if self._watchdog_s is not None else None,
                                 self.report.next_deadline(),
                                 self.uplink.next_deadline(),
                                 self.clock_watch.next_at,
                                 self.executor.next_deadline()) if d is not None]
        return min(deadlines) if deadlines else None

    def handle(self, ev: Any) -> None:
        """One event, then the periodic work that may have come due."""
        self._dispatch(ev)
        now = self.clock.monotonic()
        self.serial.mark_announced()
        self.uplink.pump(now)
        self.report.publish_if_due(now)
        self.clock_watch.check_if_due(now)
        self.store.forget_if_due(now)
        self.executor.retry_if_due(now)

    def _dispatch(self, ev: Any) -> None:
        core = self.core
        assert core is not None
        if isinstance(ev, SerialLine):
            self.serial.line(ev)
        elif isinstance(ev, SerialOpen):
            self.serial.opened(ev)
        elif isinstance(ev, DriverStatus):
            if ev.error is None:
                self.health.worked(ev.part, ev.t)
            else:
                self.health.failed(ev.part, ev.error, ev.t)
        elif isinstance(ev, WallClockStep):
            # Applied in the loop, so a press sent after the step sees the new time.
            log.warning("wall clock stepped to host time %+.3f s (sim socket test seam)",
                        ev.offset_s)
            self.clock.step_wall(ev.offset_s)
        elif isinstance(ev, MqttUp):
            self.uplink.up()
            self.executor.run(core.handle(LinkChanged(True, ev.t)))
            self.events.flush()
            self.report.connected(ev.t)
        elif isinstance(ev, MqttDown):
            self.uplink.down(ev.reason)
            self.executor.run(core.handle(LinkChanged(False, ev.t)))
        elif isinstance(ev, MqttPubAck):
            self.uplink.puback(ev.ticket, ev.ok, ev.reason)
        elif isinstance(ev, MqttMessage):
            if ev.kind == "receipt":
                self.receipts.received(ev.payload)
            else:
                self.remote.received(ev.payload, core.settings,
                                     lambda new: self._new_settings(new, ev.t), ev.oversize)
        else:
            self.executor.run(core.handle(ev))

    def shutdown(self) -> None:
        """Stop input, handle what was queued before the stop (a key pressed just before
        SIGTERM), store a level already chosen on the reasons screen, publish the last
        events and the offline status, close each driver once, close the outbox."""
        notify("STOPPING=1")
        self.serial.stop_waiting()
        self.drivers.close_input()
        if self.core is not None:
            queued, unanswered = drain(self.queue, skip=(SerialLine,))
            if unanswered:
                log.info("stopping: %d line(s) from the window system left unanswered "
                         "(it sends them again)", unanswered)
            for ev in queued:
                self._dispatch(ev)
            self.executor.run(self.core.flush(self.clock.monotonic()))
        self.uplink.stop(self.clock.monotonic())
        self.drivers.close()
        self.serial.mark_announced(all_written=self.stats.serial_open)
        self.outbox.close()
        log.info("stopped")

    # --- between the rooms -----------------------------------------------------------

    def _handle_core(self, ev: Event) -> list[Action]:
        assert self.core is not None
        return self.core.handle(ev)

    def _core_event(self, ev: FrameReceived) -> None:
        self.executor.run(self._handle_core(ev))
        self._status()   # a staff_login or staff_logout changes who is at the window

    def _status(self) -> None:
        assert self.core is not None
        staff = self.core.staff
        self.uplink.status({"staff": dict(staff) if staff is not None else None})

    def _new_settings(self, settings: UiSettings, t: float) -> None:
        self.executor.run(self._handle_core(SettingsChanged(settings, t)))

    def _stored(self, rating: dict[str, Any]) -> None:
        self.uplink.stored(rating["rating_id"])
        if self.on_stored:
            self.on_stored(rating)

    def _receipted(self, done: dict[str, str]) -> None:
        for rid in done:
            self.uplink.receipted(rid)
        if self.on_receipted:
            self.on_receipted(done)

    # --- introspection (sim socket `status`, telemetry) ------------------------

    def status(self) -> dict[str, Any]:
        return self.report.status()

    def telemetry(self, now: float) -> dict[str, Any]:
        return self.report.payload(now)
