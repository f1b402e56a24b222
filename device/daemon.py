"""`hcp-device run`: wires drivers, outbox and the core on one event queue.

Driver threads only put events on the queue; this loop is the only place that calls
the core, touches the outbox and drives the display and the serial writer, so the
order "stored, then thanks, then `rated`" holds by construction.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from device import __version__
from device.clock import SystemClock
from device.config import DeviceConfig
from device.core.machine import DUPLICATE_WINDOW_S, Evaluator, Identity
from device.core.model import (
    Action,
    EmitEvent,
    Event,
    Feedback,
    FrameReceived,
    Persist,
    PersistFailed,
    SendFrame,
    Show,
    Tick,
)
from device.outbox import Outbox, StorageError
from device.protocol import Frame, decode_line, encode_frame, nak
from device.sdnotify import notify, watchdog_interval
from drivers.base import Display, Indicators, KeyInput, SerialLink
from drivers.sim import SimServer

log = logging.getLogger("hcp.device")


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
class Stop:
    reason: str
    t: float = 0.0


@dataclass
class Drivers:
    keys: KeyInput
    display: Display
    indicators: Indicators
    serial: SerialLink | None
    sim: SimServer | None = None

    def close(self) -> None:
        for part in (self.keys, self.serial, self.indicators, self.display):
            if part is None:
                continue
            try:
                part.close()
            except Exception:  # closing must go on whatever one driver does
                log.exception("closing %s failed", type(part).__name__)


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


class FrameWriter:
    """Numbers the evaluator's own frames (hello/rated/expired) and writes them."""

    def __init__(self, link: SerialLink | None) -> None:
        self.link = link
        self.seq = 0

    def send(self, frame: dict[str, Any]) -> bool:
        if self.link is None:
            return False
        if frame.get("type") not in ("ack", "nak"):
            self.seq += 1
            frame = {**frame, "seq": self.seq}
        return self.link.send(encode_frame(frame))


class Daemon:
    def __init__(self, config: DeviceConfig, drivers: Drivers,
                 clock: SystemClock | None = None, outbox: Outbox | None = None) -> None:
        self.config = config
        self.drivers = drivers
        self.clock = clock or SystemClock(config.clock.sync_file, config.clock.assume_synced)
        self.outbox = outbox or Outbox(config.device.data_dir)
        self.queue: queue.Queue[Any] = queue.Queue()
        self.writer = FrameWriter(drivers.serial)
        self.stats = Stats()
        self.serial_log = RateLimitedLog(log)
        self._stopping = threading.Event()
        self.core: Evaluator | None = None
        self.on_ready: Callable[[], None] | None = None

    # --- thread-safe door ---------------------------------------------------

    def emit(self, event: Any) -> None:
        self.queue.put(event)

    def request_stop(self, reason: str = "requested") -> None:
        self.queue.put(Stop(reason))

    # --- startup --------------------------------------------------------------

    def _open_outbox(self) -> None:
        report = self.outbox.open()
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
        recent = {c: at for c, at in self.outbox.recent_cases().items() if at >= horizon}
        return Evaluator(
            identity=Identity(d.id, d.region_code, d.hall_id, d.window_id),
            settings=self.config.ui,
            clock=self.clock,
            first_seq=self.outbox.next_seq(),
            rated_cases=recent,
        )

    def install_signal_handlers(self) -> None:
        def handler(signum: int, _frame: Any) -> None:
            self.request_stop(signal.Signals(signum).name)
        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    # --- the loop ---------------------------------------------------------------

    def run(self) -> int:
        self.stats.started_mono = self.clock.monotonic()
        self._open_outbox()
        self.core = self._make_core()
        if self.drivers.sim is not None:
            self.drivers.sim.status_provider = self.status
        self._execute(self.core.start(self.clock.monotonic()))
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
                                         next_wd if wd is not None else None) if d is not None]
                timeout = max(0.0, min(deadlines) - now) if deadlines else None
                try:
                    ev = self.queue.get(timeout=timeout)
                except queue.Empty:
                    ev = Tick(self.clock.monotonic())
                if isinstance(ev, Stop):
                    log.info("stopping (%s)", ev.reason)
                    break
                self._dispatch(ev)
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
            else:
                log.warning("serial link lost: %s (reopening)", self.config.serial.port)
        else:
            self._execute(self.core.handle(ev))

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

    def _execute(self, actions: list[Action]) -> None:
        for i, action in enumerate(actions):
            if isinstance(action, Persist):
                try:
                    self._persist(action)
                except StorageError as e:
                    self.stats.storage_errors += 1
                    log.error("outbox: could not store rating %s: %s",
                              action.rating["rating_id"], e)
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
                          case_rated_at=action.rated_epoch if action.case_id else None)
        r = action.rating
        log.info("rating stored: %s level=%s trigger=%s case=%s", r["rating_id"], r["level"],
                 r["trigger"], action.case_id or "-")

    def _event(self, name: str, details: dict[str, Any]) -> None:
        log.info("event %s %s", name, details)

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
        self.drivers.close()
        self.outbox.close()
        log.info("stopped")

    # --- introspection (sim socket `status`, telemetry) ------------------------

    def status(self) -> dict[str, Any]:
        core = self.core
        return {
            "device_id": self.config.device.id,
            "version": __version__,
            "backlog": len(self.outbox),
            "pending_cases": core.pending_cases if core else 0,
            "serial_open": self.stats.serial_open,
            "serial_errors": sum(self.stats.serial_errors.values()),
            "last_frame": self.stats.last_frame,
            "uptime_s": round(time.monotonic() - self.stats.started_mono, 1),
        }
