"""The session with the window system over the serial link (SPEC §4): `hello` each time
the port opens, the `rated`/`expired` frames held while it was down (or written just
before it dropped, or not known to have reached it before a restart), decoding the
window's lines for the core, and a rate-limited account of the lines it rejects.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from common.serial_codec import WINDOW_TYPES, Frame, Rejected, decode_line, nak
from common.text import log_text
from device.clock import Clock
from device.core.model import FrameReceived
from device.faults import DriverHealth, EventSink
from device.frames import FrameWriter
from device.outbox import Outbox
from device.ports import SerialLink
from device.telemetry import Stats

log = logging.getLogger("hcp.device")

SERIAL_EVENT_EVERY_S = 60.0
# Lines read but not yet handled by the loop: beyond this the reader waits for room (the
# kernel's tty buffer, or TCP, holds the rest). The reader is ten times faster than the
# loop, so a flood of short lines would otherwise grow the queue until the daemon is
# killed for its memory; at most 4 MiB of lines wait here.
MAX_QUEUED_LINES = 1000
ROOM_WAIT_S = 0.1


@dataclass(frozen=True)
class SerialLine:
    line: bytes
    t: float


@dataclass(frozen=True)
class SerialOpen:
    opened: bool
    t: float


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


class SerialSession:
    def __init__(self, link: SerialLink | None, port: str, hello: dict[str, Any],
                 require_crc: bool, outbox: Outbox, clock: Clock, stats: Stats,
                 event: EventSink, health: DriverHealth,
                 frame: Callable[[FrameReceived], None]) -> None:
        self.link = link
        self.port = port
        self.hello = hello
        self.require_crc = require_crc
        self.outbox = outbox
        self.clock = clock
        self.stats = stats
        self.event = event
        self.health = health
        self.frame = frame   # a well-formed frame, for the core
        self.writer = FrameWriter(link, outbox.reserve_frame_seqs, clock=clock.monotonic,
                                  report=self._write_outcome)
        self.log = RateLimitedLog(log)
        self._next_event = 0.0
        self._unreported: Counter[str] = Counter()
        self._room = threading.Condition()
        self._queued = 0                 # lines emitted and not yet handled by `line`
        self._loop_thread: threading.Thread | None = None
        self._stopping = False

    def start(self, emit: Callable[[Any], None]) -> None:
        self._loop_thread = threading.current_thread()
        if self.link is not None:
            self.link.start(
                lambda line: self._read(emit, line),
                lambda opened: emit(SerialOpen(opened, self.clock.monotonic())))

    def stop_waiting(self) -> None:
        """The daemon is stopping (its queue's lines are dropped, never handled): the
        reader must not wait for room any more."""
        with self._room:
            self._stopping = True
            self._room.notify_all()

    def _read(self, emit: Callable[[Any], None], line: bytes) -> None:
        """A line from the reader: queued for the loop once there is room (a line handed
        in on the loop's own thread never waits: nobody else could make room)."""
        with self._room:
            if threading.current_thread() is not self._loop_thread:
                while self._queued >= MAX_QUEUED_LINES and not self._stopping:
                    self._room.wait(ROOM_WAIT_S)
            self._queued += 1
        emit(SerialLine(line, self.clock.monotonic()))

    def send(self, frame: dict[str, Any]) -> bool:
        sent = self.writer.send(frame)
        if sent and self.writer.held and frame.get("type") in ("ack", "nak"):
            # Writes work again after failing with the port open (no new hello will come
            # to flush them): the outcomes held meanwhile follow the answer.
            self.writer.flush()
        return sent

    # --- the port opens and closes ------------------------------------------------------

    def opened(self, ev: SerialOpen) -> None:
        self.stats.serial_open = ev.opened
        if ev.opened:
            log.info("serial link open: %s", self.port)
            self.writer.send(self.hello)
            held = len(self.writer.held)
            if held:
                sent = self.writer.flush()
                log.info("serial: sent %d of %d rated/expired frame(s) held while the "
                         "link was down", sent, held)
        else:
            again = self.writer.link_lost()
            if again:
                log.info("serial: %d rated/expired frame(s) written just before the link "
                         "dropped will be sent again after the next hello", again)
        # the driver itself logs the outage, once

    def hold_unannounced(self, recent: set[str]) -> None:
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

    def mark_announced(self, all_written: bool = False) -> None:
        done = [f["case_id"] for f in self.writer.settled(all_written)
                if f.get("type") == "rated" and isinstance(f.get("case_id"), str)]
        if done:
            self.outbox.mark_announced(done)

    # --- lines from the window -----------------------------------------------------------

    def line(self, ev: SerialLine) -> None:
        with self._room:
            self._queued = max(0, self._queued - 1)
            self._room.notify()
        result = decode_line(ev.line, self.require_crc)
        if isinstance(result, Frame):
            self.stats.frames_in += 1
            self.stats.last_frame = result.type
            self.frame(FrameReceived(result.type, result.seq, result.fields, ev.t))
            return
        self.stats.serial_errors[result.error] += 1
        detail = _safe_detail(result, len(ev.line))
        self.log.warning(ev.t, "serial: rejected frame (%s): %s%s", result.error,
                         log_text(detail, 160), "" if result.nak else " (no answer)")
        if result.nak is not None and result.seq is not None:
            self.writer.send(nak(result.seq, result.nak))
        # One `serial_error` event per minute at most, with what was seen since the last.
        self._unreported[result.error] += 1
        if ev.t >= self._next_event:
            self._next_event = ev.t + SERIAL_EVENT_EVERY_S
            self.event("serial_error", {"last": result.error, "detail": detail[:120],
                                        "counts": dict(self._unreported)})
            self._unreported.clear()

    def _write_outcome(self, error: str | None) -> None:
        if error is None:
            self.health.worked("serial", self.clock.monotonic())
        else:
            self.health.failed("serial", error, self.clock.monotonic())


def _safe_detail(result: Rejected, size: int) -> str:
    """What the log and the `serial_error` event may say about a rejected line: never
    what the window system wrote, which may be personal data (the codec's detail for an
    unknown type quotes it; a window system may put a name there)."""
    if result.error == "unknown_type":
        return f"type is none of the {len(WINDOW_TYPES)} known ones ({size}-byte line)"
    return result.detail
