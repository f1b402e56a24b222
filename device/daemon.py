"""`hcp-device run`: wires drivers, outbox and the core on one event queue.

Driver threads only put events on the queue; this loop is the only place that calls
the core, touches the outbox and drives the display and the serial writer, so the
order "stored, then thanks, then `rated`" holds by construction.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from common.sdnotify import notify, watchdog_interval
from common.serial_codec import Frame, decode_line, nak
from device import __version__
from device.clock import SystemClock
from device.config import DeviceConfig
from device.core.machine import DUPLICATE_WINDOW_S, Evaluator, Identity
from device.core.model import (
    Action,
    EmitEvent,
    Feedback,
    FrameReceived,
    LinkChanged,
    Persist,
    PersistFailed,
    SendFrame,
    SettingsChanged,
    Show,
    Tick,
)
from device.delivery import Delivery
from device.frames import FrameWriter
from device.mqtt_link import MqttDown, MqttLink, MqttMessage, MqttPubAck, MqttUp, now_iso
from device.outbox import Outbox, StorageError
from device.ports import Drivers
from device.remote_config import apply as apply_remote_config
from device.remote_config import parse_remote_config

log = logging.getLogger("hcp.device")

RATING_ID_LEN = 32
CLOCK_CHECK_S = 15.0
SERIAL_EVENT_EVERY_S = 60.0
EVENT_BUFFER = 256


# Loop-level events (the core never sees these) ------------------------------

@dataclass(frozen=True)
class SerialLine:
    line: bytes
    t: float


@dataclass(frozen=True)
class SerialOpen:
    opened: bool
    t: float


@dataclass(frozen=True)
class WallClockStep:
    """Test seam (sim socket `clock` op): the wall clock now reads host time + offset_s."""

    offset_s: float
    t: float = 0.0


@dataclass(frozen=True)
class Stop:
    reason: str
    t: float = 0.0




class RateLimitedLog:
    """At most `burst` lines per `period_s`, then one summary: a window system spewing
    garbage must not drown the journal."""

    def __init__(self, logger: logging.Logger, burst: int = 10, period_s: float = 60.0) -> None:
        self.logger, self.burst, self.period_s = logger, burst, period_s
        self.window_start = -1e18
        self.count = 0
        self.suppressed = 0

    def warning(self, t: float, msg: str, *args: Any) -> None:
        if t - self.window_start >= self.period_s:
            if self.suppressed:
                self.logger.warning("... %d more like this suppressed", self.suppressed)
            self.window_start, self.count, self.suppressed = t, 0, 0
        self.count += 1
        if self.count <= self.burst:
            self.logger.warning(msg, *args)
        else:
            self.suppressed += 1


@dataclass
class Stats:
    started_mono: float = 0.0
    serial_errors: Counter[str] = field(default_factory=Counter)
    frames_in: int = 0
    frames_out: int = 0
    serial_open: bool = False
    last_frame: str | None = None
    storage_errors: int = 0
    backlog: int = 0
    receipts: int = 0
    rejected: int = 0


class Daemon:
    def __init__(self, config: DeviceConfig, drivers: Drivers,
                 clock: SystemClock | None = None, outbox: Outbox | None = None,
                 mqtt: bool = True) -> None:
        self.config = config
        self.drivers = drivers
        self.clock = clock or SystemClock(config.clock.sync_file, config.clock.assume_synced)
        self.outbox = outbox or Outbox(config.device.data_dir)
        self.queue: queue.Queue[Any] = queue.Queue()
        self.writer = FrameWriter(drivers.serial, self.outbox.reserve_frame_seqs,
                                  clock=self.clock.monotonic)
        self.stats = Stats()
        self.serial_log = RateLimitedLog(log)
        self.core: Evaluator | None = None
        self.on_ready: Callable[[], None] | None = None
        # Observers for in-process tools (hcp-sim fleet), called on the loop's thread:
        # a rating is durably stored; receipts removed these ratings ({rating_id: status}).
        self.on_stored: Callable[[dict[str, Any]], None] | None = None
        self.on_receipted: Callable[[dict[str, str]], None] | None = None
        self.delivery = Delivery(config.mqtt.resend_after_s, config.mqtt.max_inflight)
        self.link: MqttLink | None = None
        if mqtt:
            self.link = MqttLink(config.mqtt, config.device.id, __version__, self.emit,
                                 self.clock.monotonic)
        self._events: list[dict[str, Any]] = []   # waiting for the broker
        self._next_telemetry = 0.0
        self._next_clock_check = 0.0
        self._next_forget = 0.0
        self._next_serial_event = 0.0
        self._serial_errors_unreported: Counter[str] = Counter()
        self._clock_synced: bool | None = None
        self._disk_full = False   # an outbox_overflow was raised; cleared by a good store

    # --- thread-safe door ---------------------------------------------------

    def emit(self, event: Any) -> None:
        self.queue.put(event)

    def request_stop(self, reason: str = "requested") -> None:
        self.queue.put(Stop(reason))

    # --- startup --------------------------------------------------------------

    def _open_outbox(self) -> None:
        report = self.outbox.open()
        if report.details or report.moved_aside:
            log.warning("outbox: recovered: %s; damaged file kept as %s",
                        "; ".join(report.details), ", ".join(map(str, report.moved_aside)))
        if report.dropped_records:
            log.error("outbox: dropped %d damaged record(s) (%d bytes) while opening: %s",
                      report.dropped_records, report.dropped_bytes, "; ".join(report.details))
            self._event("outbox_recovered", {"dropped_records": report.dropped_records,
                                             "dropped_bytes": report.dropped_bytes,
                                             "details": report.details[:10]})
        log.info("outbox: %d rating(s) pending", report.ratings)

    def _make_core(self) -> Evaluator:
        d = self.config.device
        horizon = self.clock.wall() - DUPLICATE_WINDOW_S
        mono_horizon = self.clock.monotonic() - DUPLICATE_WINDOW_S
        mono = {c: t for c, t in self.outbox.recent_cases_mono(self.clock.boot_id()).items()
                if t >= mono_horizon}
        recent = {c: at for c, at in self.outbox.recent_cases().items()
                  if at >= horizon or c in mono}
        return Evaluator(
            identity=Identity(d.id, d.region_code, d.hall_id, d.window_id),
            settings=self._stored_settings(),
            clock=self.clock,
            first_seq=self.outbox.next_seq(),
            rated_cases=recent,
            rated_cases_mono=mono,
        )

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT become a Stop event on the queue.

        The kernel may deliver the signal to any thread; Python runs its handler only
        in the main thread, and only once that thread wakes up — which it would not,
        blocked in queue.get until its next deadline. The C-level handler always writes
        to the wakeup fd, whatever thread it runs on, so a small thread waiting on that
        fd turns the signal into an event at once."""
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)

        def relay() -> None:
            while True:
                data = os.read(read_fd, 1)
                if not data:
                    return
                self.request_stop(signal.Signals(data[0]).name)

        threading.Thread(target=relay, name="signals", daemon=True).start()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: None)  # the relay thread does the work

    # --- the loop ---------------------------------------------------------------

    def run(self) -> int:
        self.stats.started_mono = self.clock.monotonic()
        self._open_outbox()
        self.core = self._make_core()
        self._hold_unannounced(set(self.core.rated_cases))
        if self.drivers.control is not None:
            self.drivers.control.status_provider = self.status
            self.drivers.control.clock_stepper = lambda offset: self.emit(WallClockStep(offset))
        self.stats.backlog = len(self.outbox)
        self.delivery.load(self.outbox.pending_ids())
        self._execute(self.core.start(self.clock.monotonic()))
        self._check_clock(self.clock.monotonic())
        if self.link is not None:
            self.link.start()
        self.drivers.keys.start(self.emit, self.clock)
        if self.drivers.serial is not None:
            self.drivers.serial.start(
                lambda line: self.emit(SerialLine(line, self.clock.monotonic())),
                lambda opened: self.emit(SerialOpen(opened, self.clock.monotonic())))
        notify(f"READY=1\nSTATUS=ready, {len(self.outbox)} rating(s) pending")
        log.info("device %s ready (version %s)", self.config.device.id, __version__)
        if self.on_ready:
            self.on_ready()
        wd = watchdog_interval()
        next_wd = self.clock.monotonic()
        try:
            while True:
                now = self.clock.monotonic()
                if wd is not None and now >= next_wd:
                    notify("WATCHDOG=1")
                    next_wd = now + wd
                deadlines = [d for d in (self.core.next_deadline(),
                                         next_wd if wd is not None else None,
                                         self._next_telemetry if self._connected() else None,
                                         self.delivery.next_deadline() if self._connected()
                                         else None,
                                         self._next_clock_check) if d is not None]
                timeout = max(0.0, min(deadlines) - now) if deadlines else None
                try:
                    ev = self.queue.get(timeout=timeout)
                except queue.Empty:
                    ev = Tick(self.clock.monotonic())
                if isinstance(ev, Stop):
                    log.info("stopping (%s)", ev.reason)
                    break
                self._dispatch(ev)
                self._housekeeping(self.clock.monotonic())
        finally:
            self._shutdown()
        return 0

    def _dispatch(self, ev: Any) -> None:
        assert self.core is not None
        if isinstance(ev, SerialLine):
            self._serial_line(ev)
        elif isinstance(ev, SerialOpen):
            self.stats.serial_open = ev.opened
            if ev.opened:
                log.info("serial link open: %s", self.config.serial.port)
                self.writer.send({"type": "hello", "device_id": self.config.device.id,
                                  "version": __version__})
                held = len(self.writer.held)
                if held:
                    sent = self.writer.flush()
                    self.stats.frames_out += sent
                    log.info("serial: sent %d of %d rated/expired frame(s) held while the "
                             "link was down", sent, held)
            else:
                again = self.writer.link_lost()
                if again:
                    log.info("serial: %d rated/expired frame(s) written just before the link "
                             "dropped will be sent again after the next hello", again)
            # the driver itself logs the outage, once
        elif isinstance(ev, WallClockStep):
            # Applied in the loop, so a press sent after the step sees the new time.
            log.warning("wall clock stepped to host time %+.3f s (sim socket test seam)",
                        ev.offset_s)
            self.clock.wall_offset_s = ev.offset_s
        elif isinstance(ev, MqttUp):
            self._mqtt_up(ev)
        elif isinstance(ev, MqttDown):
            log.warning("broker connection lost: %s", ev.reason)
            self.delivery.on_disconnect()
            self._execute(self.core.handle(LinkChanged(False, ev.t)))
        elif isinstance(ev, MqttPubAck):
            rid = self.delivery.acked(ev.ticket, ev.ok)
            if rid is not None and not ev.ok:
                log.warning("broker refused rating %s: %s (retrying in %g s)", rid, ev.reason,
                            self.config.mqtt.resend_after_s)
        elif isinstance(ev, MqttMessage):
            if ev.kind == "receipt":
                self._receipt(ev.payload)
            else:
                self._remote_config(ev.payload, ev.t)
        else:
            self._execute(self.core.handle(ev))

    # --- MQTT -------------------------------------------------------------------------

    def _connected(self) -> bool:
        return self.link is not None and self.delivery.connected

    def _mqtt_up(self, ev: MqttUp) -> None:
        assert self.core is not None
        self.delivery.on_connect(self.outbox.pending_ids())
        self._execute(self.core.handle(LinkChanged(True, ev.t)))
        events, self._events = self._events, []
        for payload in events:
            self._publish("event", payload)
        self._next_telemetry = ev.t  # one right away: the hall view fills in at once

    def _publish(self, kind: str, payload: dict[str, Any], qos: int = 1) -> None:
        assert self.link is not None
        self.link.publish(kind, payload, qos=qos)

    def _pump(self, now: float) -> None:
        """Publish what delivery says is due, within its in-flight window."""
        if not self._connected():
            return
        assert self.link is not None
        for rid in self.delivery.next_batch(now):
            rating = self.outbox.get(rid)
            if rating is None:
                self.delivery.receipted(rid)
                continue
            self.link.publish("rating", rating, ticket=self.delivery.published(rid, now))

    def _receipt(self, payload: bytes) -> None:
        try:
            data = json.loads(payload.decode("utf-8"))
            receipts = data["receipts"]
            if not isinstance(receipts, list):
                raise TypeError("receipts is not a list")
        except (UnicodeDecodeError, ValueError, KeyError, TypeError, RecursionError) as e:
            log.warning("ignoring malformed receipt message: %s", e)
            return
        done: dict[str, str] = {}
        for r in receipts:
            if not isinstance(r, dict):
                continue
            rid, status = r.get("rating_id"), r.get("status")
            if (not isinstance(rid, str) or len(rid) != RATING_ID_LEN
                    or status not in ("accepted", "duplicate", "rejected")):
                continue
            rating = self.outbox.get(rid)
            if rating is None:
                continue  # already receipted (a duplicate receipt) or not ours
            if status == "rejected":
                self.stats.rejected += 1
                error = str(r.get("error"))[:200]
                log.error("platform rejected rating %s: %s (kept in the rejected list)",
                          rid, error)
                try:
                    self.outbox.record_rejected(rating, error)
                except StorageError as e:
                    log.error("outbox: could not record rejected rating %s: %s", rid, e)
            done[rid] = status
        if not done:
            return
        try:
            self.outbox.remove(done)
        except StorageError as e:
            # Not fatal: the rating stays and is re-sent; the platform de-duplicates.
            log.error("outbox: could not remove receipted ratings: %s", e)
            return
        for rid in done:
            self.delivery.receipted(rid)
        self.stats.receipts += len(done)
        self.stats.backlog = len(self.outbox)
        if self.on_receipted:
            self.on_receipted(done)

    def _stored_settings(self) -> Any:
        stored = self.outbox.get_setting("remote_config")
        if not stored:
            return self.config.ui
        parsed = parse_remote_config(json.dumps(stored).encode())
        if isinstance(parsed, list):
            log.error("ignoring stored remote config: %s", "; ".join(parsed))
            return self.config.ui
        return apply_remote_config(self.config.ui, parsed)

    def _remote_config(self, payload: bytes, t: float) -> None:
        assert self.core is not None
        if not payload.strip():
            changes: dict[str, Any] | list[str] = {}
        else:
            changes = parse_remote_config(payload)
        if isinstance(changes, list):
            log.error("refusing config from the broker: %s", "; ".join(changes))
            self._event("config_rejected", {"problems": changes[:20]})
            return
        settings = apply_remote_config(self.config.ui, changes)
        if settings == self.core.settings:
            return
        try:
            self.outbox.put_setting("remote_config", changes or None)
        except StorageError as e:
            log.error("could not persist the config from the broker: %s", e)
        self._execute(self.core.handle(SettingsChanged(settings, t)))
        log.info("config from the broker applied: %s", sorted(changes) or "(cleared)")
        self._event("config_applied", {"keys": sorted(changes)})

    # --- periodic work ------------------------------------------------------------------

    def _hold_unannounced(self, recent: set[str]) -> None:
        """Ratings stored by an earlier run whose `rated` frame may never have reached the
        window system (killed while the link was down, or just after writing it): told
        again after the first `hello`. A second `rated` for a case is harmless; one for a
        case older than the duplicate memory's 24 h would only be noise."""
        unannounced = [u for u in self.outbox.unannounced_cases() if u[0] in recent]
        for case_id, rating_id, level in unannounced:
            self.writer.held.append({"type": "rated", "case_id": case_id, "level": level,
                                     "rating_id": rating_id})
        if unannounced:
            log.info("serial: %d rated frame(s) not known to have reached the window system "
                     "will be sent after hello", len(unannounced))

    def _mark_announced(self, all_written: bool = False) -> None:
        done = [f["case_id"] for f in self.writer.settled(all_written)
                if f.get("type") == "rated" and isinstance(f.get("case_id"), str)]
        if done:
            self.outbox.mark_announced(done)

    def _housekeeping(self, now: float) -> None:
        self._mark_announced()
        self._pump(now)
        if self._connected() and now >= self._next_telemetry:
            self._publish("telemetry", self.telemetry(now), qos=0)
            self._next_telemetry = now + self.config.mqtt.telemetry_s
        if now >= self._next_clock_check:
            self._check_clock(now)
        if now >= self._next_forget:
            # The duplicate-case memory only needs 24 h; the removal rides on the next write.
            self._next_forget = now + 3600
            self.outbox.forget_cases_before(self.clock.wall() - DUPLICATE_WINDOW_S,
                                            now - DUPLICATE_WINDOW_S, self.clock.boot_id())

    def _check_clock(self, now: float) -> None:
        self._next_clock_check = now + CLOCK_CHECK_S
        synced = self.clock.synced()
        if synced != self._clock_synced:
            if not synced:
                log.warning("clock not synchronised: ratings carry clock_synced=false")
                self._event("clock_unsynced", {"sync_file": self.config.clock.sync_file})
            elif self._clock_synced is not None:
                log.info("clock synchronised")
                self._event("clock_synced", {})
            self._clock_synced = synced

    def telemetry(self, now: float) -> dict[str, Any]:
        """The SPEC §7 telemetry payload (docs/mqtt.md lists every field)."""
        oldest = self.outbox.oldest_rated_at()
        oldest_s = None
        if oldest is not None:
            try:
                oldest_s = max(0, round(self.clock.wall() - _epoch(oldest)))
            except (ValueError, TypeError):
                oldest_s = None
        try:
            disk_free_mb: float | None = round(self.outbox.disk_free_mb(), 1)
        except StorageError as e:
            log.warning("telemetry: %s", e)
            disk_free_mb = None
        return {
            "at": now_iso(),
            "backlog": len(self.outbox),
            "oldest_pending_s": oldest_s,
            "uptime_s": round(now - self.stats.started_mono),
            "serial_errors": sum(self.stats.serial_errors.values()),
            "serial_errors_by_kind": dict(self.stats.serial_errors),
            "serial_open": self.stats.serial_open,
            "frames_in": self.stats.frames_in,
            "disk_free_mb": disk_free_mb,
            "storage_errors": self.stats.storage_errors,
            "link": {"serial": "open" if self.stats.serial_open else "closed",
                     "broker": "connected",
                     "broker_connects": self.link.connects if self.link else 0},
            "inflight": self.delivery.inflight(),
            "due": self.delivery.due(),
            "pending_cases": self.core.pending_cases if self.core else 0,
            "clock_synced": self.clock.synced(),
            "rejected": self.stats.rejected,
            "version": __version__,
        }

    def _serial_line(self, ev: SerialLine) -> None:
        assert self.core is not None
        result = decode_line(ev.line, self.config.serial.require_crc)
        if isinstance(result, Frame):
            self.stats.frames_in += 1
            self.stats.last_frame = result.type
            self._execute(self.core.handle(
                FrameReceived(result.type, result.seq, result.fields, ev.t)))
            return
        self.stats.serial_errors[result.error] += 1
        self.serial_log.warning(ev.t, "serial: rejected frame (%s): %s%s", result.error,
                                result.detail, "" if result.nak else " (no answer)")
        if result.nak is not None and result.seq is not None:
            self.writer.send(nak(result.seq, result.nak))
        # One `serial_error` event per minute at most, with what was seen since the last.
        self._serial_errors_unreported[result.error] += 1
        if ev.t >= self._next_serial_event:
            self._next_serial_event = ev.t + SERIAL_EVENT_EVERY_S
            self._event("serial_error", {"last": result.error, "detail": result.detail[:120],
                                         "counts": dict(self._serial_errors_unreported)})
            self._serial_errors_unreported.clear()

    def _execute(self, actions: list[Action]) -> None:
        for i, action in enumerate(actions):
            if isinstance(action, Persist):
                try:
                    self._persist(action)
                except StorageError as e:
                    self.stats.storage_errors += 1
                    log.error("outbox: could not store rating %s: %s",
                              action.rating["rating_id"], e)
                    if e.disk_full:
                        self._outbox_full(str(e))
                    assert self.core is not None
                    # Nothing after a failed Persist may run: no thanks, no `rated`.
                    self._execute(self.core.handle(PersistFailed(
                        action.rating["rating_id"], str(e), self.clock.monotonic())))
                    return
            elif isinstance(action, Show):
                self.drivers.display.show(action.screen)
            elif isinstance(action, SendFrame):
                if self.writer.send(action.frame):
                    self.stats.frames_out += 1
            elif isinstance(action, Feedback):
                self.drivers.indicators.feedback(action)
            elif isinstance(action, EmitEvent):
                self._event(action.name, action.details)
            else:  # pragma: no cover - the Action union is closed
                raise TypeError(f"unknown action {action!r} at {i}")

    def _persist(self, action: Persist) -> None:
        self.outbox.store(action.rating, case_id=action.case_id,
                          case_rated_at=action.rated_epoch if action.case_id else None,
                          case_rated_mono=action.rated_mono, boot_id=self.clock.boot_id())
        if self._disk_full:
            self._disk_full = False
            log.warning("outbox: storing ratings again (disk space is back)")
        r = action.rating
        self.delivery.added(r["rating_id"])
        self.stats.backlog += 1
        if self.on_stored:
            self.on_stored(r)
        log.info("rating stored: %s level=%s trigger=%s case=%s", r["rating_id"], r["level"],
                 r["trigger"], action.case_id or "-")

    def _outbox_full(self, error: str) -> None:
        """The disk is full: say so once per episode (each failed rating still raises its
        own `storage_error`), with what the technician needs to judge it."""
        if self._disk_full:
            return
        self._disk_full = True
        try:
            free_mb: float | None = round(self.outbox.disk_free_mb(), 2)
        except StorageError:
            free_mb = None
        log.error("outbox: the disk is full; ratings cannot be stored until space is freed "
                  "in %s", self.config.device.data_dir)
        self._event("outbox_overflow", {"backlog": len(self.outbox), "disk_free_mb": free_mb,
                                        "data_dir": str(self.config.device.data_dir),
                                        "error": error})

    def _event(self, name: str, details: dict[str, Any]) -> None:
        log.info("event %s %s", name, details)
        payload = {"event": name, "at": now_iso(), **details}
        if self._connected():
            self._publish("event", payload)
        elif self.link is not None:
            if len(self._events) >= EVENT_BUFFER:
                self._events.pop(0)
            self._events.append(payload)

    # --- shutdown -------------------------------------------------------------

    def _shutdown(self) -> None:
        notify("STOPPING=1")
        try:
            self.drivers.keys.close()
        except Exception:
            log.exception("closing input failed")
        if self.core is not None:
            # Drain what was already queued (a key pressed just before SIGTERM), then
            # store a level already chosen on the reasons screen.
            while True:
                try:
                    ev = self.queue.get_nowait()
                except queue.Empty:
                    break
                if not isinstance(ev, Stop):
                    self._dispatch(ev)
            self._execute(self.core.flush(self.clock.monotonic()))
        if self.link is not None:
            self._pump(self.clock.monotonic())
            self.link.stop()
        self.drivers.close()
        self._mark_announced(all_written=self.stats.serial_open)
        self.outbox.close()
        log.info("stopped")

    # --- introspection (sim socket `status`, telemetry) ------------------------

    def status(self) -> dict[str, Any]:
        # Called from the sim socket's thread: read only plain counters kept by the loop.
        core = self.core
        return {
            "device_id": self.config.device.id,
            "version": __version__,
            "backlog": self.stats.backlog,
            "pending_cases": core.pending_cases if core else 0,
            "serial_open": self.stats.serial_open,
            "serial_errors": sum(self.stats.serial_errors.values()),
            "last_frame": self.stats.last_frame,
            "broker": "connected" if self._connected() else (
                "disabled" if self.link is None else "offline"),
            "receipts": self.stats.receipts,
            "uptime_s": round(self.clock.monotonic() - self.stats.started_mono, 1),
        }


def _epoch(iso: str) -> float:
    from datetime import datetime
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
