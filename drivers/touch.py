"""A touch panel read as a raw Linux input device (/dev/input/eventN), with screen zones
mapped to the five levels: each touch is one KeyDown at touch-down and one KeyUp at lift.

On a colour display (SPEC §10) there are no zones: the targets are the buttons the screen
drew (drivers/targets.py), and raw coordinates become screen pixels through the axis
ranges the kernel reports for the panel (EVIOCGABS), read each time it is opened.

No evdev dependency: the kernel's `struct input_event` is decoded with `struct`, in the
native layout of this process (see EVENT_FORMAT).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import select
import stat
import struct
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import BinaryIO, Literal, NamedTuple

from device.core.model import KeyDown, KeyUp
from device.ports import DriverStatus, Emit, MonotonicClock
from drivers.targets import AxisRange, ScreenTargets, TouchCalibration

log = logging.getLogger(__name__)

# struct input_event { struct timeval time; __u16 type; __u16 code; __s32 value; }.
# The kernel gives each process the layout of its own ABI (a 32-bit userland on a 64-bit
# kernel gets the compat layout), so two native longs for the time are right everywhere:
# 24 bytes on 64-bit Linux, 16 bytes on 32-bit Raspberry Pi OS.
EVENT_FORMAT = "@llHHi"
EVENT_SIZE = struct.calcsize(EVENT_FORMAT)

EV_SYN, EV_KEY, EV_ABS = 0x00, 0x01, 0x03
SYN_REPORT, SYN_DROPPED = 0, 3
BTN_TOUCH = 0x14A
ABS_X, ABS_Y = 0x00, 0x01
ABS_MT_SLOT = 0x2F
ABS_MT_POSITION_X, ABS_MT_POSITION_Y = 0x35, 0x36
ABS_MT_TRACKING_ID = 0x39

Zone = tuple[int, int, int, int]  # x0, y0, x1, y1 — half-open: x0 <= x < x1, y0 <= y < y1

# The simulator's touch op uses display coordinates (128×64): five columns, left to right
# 非常满意 (5) … 非常不满意 (1).
DEFAULT_SIM_ZONES: dict[int, Zone] = {
    5: (0, 0, 25, 64),
    4: (25, 0, 51, 64),
    3: (51, 0, 76, 64),
    2: (76, 0, 102, 64),
    1: (102, 0, 128, 64),
}

RETRY_S = 2.0
_READ_SIZE = EVENT_SIZE * 64

# Which level a raw point picks (None: none): zones, or a colour screen's buttons.
Locator = Callable[[int, int], "int | None"]
Axes = tuple[AxisRange, AxisRange]
NO_CALIBRATION = TouchCalibration()
# EVIOCGABS(code) = _IOR('E', 0x40 + code, struct input_absinfo): six __s32.
_ABSINFO = struct.Struct("6i")
_EVIOCGABS = (2 << 30) | (_ABSINFO.size << 16) | (ord("E") << 8) | 0x40


def read_axes(fd: int) -> Axes | None:
    """The panel's x and y ranges from the kernel: ABS_X/ABS_Y, or the multi-touch
    positions for a panel that reports only those; None when it reports neither."""
    for x_code, y_code in ((ABS_X, ABS_Y), (ABS_MT_POSITION_X, ABS_MT_POSITION_Y)):
        try:
            x = _ABSINFO.unpack(fcntl.ioctl(fd, _EVIOCGABS + x_code, bytes(_ABSINFO.size)))
            y = _ABSINFO.unpack(fcntl.ioctl(fd, _EVIOCGABS + y_code, bytes(_ABSINFO.size)))
        except OSError:
            continue
        if x[2] > x[1] and y[2] > y[1]:
            return AxisRange(x[1], x[2]), AxisRange(y[1], y[2])
    return None


def zone_for(zones: Mapping[int, Zone], x: int, y: int) -> int | None:
    """The level whose zone contains (x, y), or None; overlapping zones: the first listed."""
    for level, (x0, y0, x1, y1) in zones.items():
        if x0 <= x < x1 and y0 <= y < y1:
            return level
    return None


class InputEvent(NamedTuple):
    sec: int
    usec: int
    type: int
    code: int
    value: int


def pack_event(type: int, code: int, value: int, sec: int = 0, usec: int = 0) -> bytes:
    """One input_event in this platform's layout (for tests, captures and simulators)."""
    return struct.pack(EVENT_FORMAT, sec, usec, type, code, value)


class EventDecoder:
    """Cuts a byte stream into input_events; a partial event waits for the rest."""

    def __init__(self) -> None:
        self._buffer = b""

    @property
    def pending(self) -> int:
        """Bytes of an incomplete event held back."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[InputEvent]:
        buf = self._buffer + data
        whole = len(buf) - len(buf) % EVENT_SIZE
        self._buffer = buf[whole:]
        return [InputEvent(*fields) for fields in struct.iter_unpack(EVENT_FORMAT, buf[:whole])]


class TouchAction(NamedTuple):
    kind: Literal["down", "up"]
    level: int


@dataclass
class _Contact:
    tracking_id: int = -1
    x: int | None = None
    y: int | None = None


class TouchTracker:
    """Turns input_events into presses: one packet (up to SYN_REPORT) at a time.

    The panel counts as touched while BTN_TOUCH is down or, on a multi-touch (type B)
    panel, while any slot holds a contact. The level is fixed at touch-down from the
    first contact's position; moving into another zone does not press again, and a touch
    that lands outside every zone stays ignored until lifted.
    """

    def __init__(self, zones: Mapping[int, Zone] | Locator) -> None:
        if callable(zones):
            self.zones: dict[int, Zone] = {}
            self._locate: Locator = zones
        else:
            self.zones = dict(zones)
            self._locate = lambda x, y: zone_for(self.zones, x, y)
        # The kernel only reports values that changed, so positions are kept across
        # touches: a second tap on the very same spot carries no coordinates.
        self._x: int | None = None
        self._y: int | None = None
        self._btn_touch = False
        self._multitouch = False
        self._slot = 0
        self._contacts: dict[int, _Contact] = {}
        self._dropping = False
        self._touching = False
        self._level: int | None = None

    def handle(self, event: InputEvent) -> TouchAction | None:
        """Feed one event; returns a press or a release when a packet completes one."""
        if event.type == EV_SYN:
            if event.code == SYN_DROPPED:
                # The kernel's buffer overflowed: events up to the next SYN_REPORT are
                # incomplete and must not be applied.
                log.warning("touch events dropped by the kernel (reader too slow)")
                self._dropping = True
            elif event.code == SYN_REPORT:
                if self._dropping:
                    self._dropping = False
                    return None
                return self._commit()
            return None
        if self._dropping:
            return None
        if event.type == EV_KEY and event.code == BTN_TOUCH:
            self._btn_touch = event.value != 0
        elif event.type == EV_ABS:
            self._absolute(event.code, event.value)
        return None

    def lift(self) -> TouchAction | None:
        """The device is gone: end a press in progress (a vanished panel holds no key)."""
        level, was = self._level, self._touching
        self._btn_touch = False
        for contact in self._contacts.values():
            contact.tracking_id = -1
        self._touching, self._level = False, None
        return TouchAction("up", level) if was and level is not None else None

    def _absolute(self, code: int, value: int) -> None:
        if code == ABS_X:
            self._x = value
        elif code == ABS_Y:
            self._y = value
        elif code == ABS_MT_SLOT:
            self._slot = value
        elif code in (ABS_MT_TRACKING_ID, ABS_MT_POSITION_X, ABS_MT_POSITION_Y):
            contact = self._contacts.setdefault(self._slot, _Contact())
            if code == ABS_MT_TRACKING_ID:
                self._multitouch = True
                contact.tracking_id = value
            elif code == ABS_MT_POSITION_X:
                contact.x = value
            else:
                contact.y = value

    def _position(self) -> tuple[int, int] | None:
        if self._multitouch:
            for slot in sorted(self._contacts):
                contact = self._contacts[slot]
                if contact.tracking_id >= 0 and contact.x is not None and contact.y is not None:
                    return contact.x, contact.y
        if self._x is None or self._y is None:
            return None
        return self._x, self._y

    def _commit(self) -> TouchAction | None:
        if self._multitouch:
            touching = any(c.tracking_id >= 0 for c in self._contacts.values())
        else:
            touching = self._btn_touch
        if touching == self._touching:
            return None
        self._touching = touching
        if not touching:
            level, self._level = self._level, None
            return TouchAction("up", level) if level is not None else None
        position = self._position()
        if position is None:
            log.debug("touch without coordinates: ignored")
            return None
        self._level = self._locate(*position)
        if self._level is None:
            log.debug("touch at %s is outside every zone: ignored", position)
            return None
        return TouchAction("down", self._level)


class TouchParser:
    """Bytes of an input_event stream in, presses out: the pure half of TouchInput."""

    def __init__(self, zones: Mapping[int, Zone] | Locator) -> None:
        self.decoder = EventDecoder()
        self.tracker = TouchTracker(zones)

    def feed(self, data: bytes) -> list[TouchAction]:
        actions = []
        for event in self.decoder.feed(data):
            action = self.tracker.handle(event)
            if action is not None:
                actions.append(action)
        return actions

    def end(self) -> list[TouchAction]:
        """The stream ended: drop a partial event and release a press in progress."""
        if self.decoder.pending:
            log.debug("touch stream ended inside an event: %d bytes dropped",
                      self.decoder.pending)
        action = self.tracker.lift()
        return [action] if action is not None else []


Source = str | os.PathLike[str] | int | BinaryIO


class TouchInput:
    """Implements device.ports.KeyInput for a touch panel.

    `device` is a path (reopened every `retry_s` while missing or after it disappears:
    the daemon starts and waits for a panel plugged in later), or an already open file
    descriptor / binary file object that reads like an evdev node (read until it ends,
    never closed here). A path to a regular file is a recorded capture: played once.
    """

    def __init__(self, device: Source, zones: Mapping[int, Zone],
                 retry_s: float = RETRY_S, *, targets: ScreenTargets | None = None,
                 calibration: TouchCalibration = NO_CALIBRATION,
                 axes: Axes | None = None) -> None:
        """`targets`: a colour screen's buttons instead of `zones`; `axes` is a test seam
        (the panel's ranges, for a stand-in that cannot answer EVIOCGABS)."""
        self._device = device
        self._zones = dict(zones)
        self._targets = targets
        self._calibration = calibration
        self._axes = axes
        self._retry_s = retry_s
        self._emit: Emit | None = None
        self._clock: MonotonicClock | None = None
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self._thread: threading.Thread | None = None
        self._lost_why = ""

    @property
    def name(self) -> str:
        d = self._device
        if isinstance(d, int):
            return f"fd {d}"
        if isinstance(d, str | os.PathLike):
            return os.fspath(d)
        return str(getattr(d, "name", repr(d)))

    def start(self, emit: Emit, clock: MonotonicClock) -> None:
        self._emit, self._clock = emit, clock
        self._thread = threading.Thread(target=self._run, name="touch-reader", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._wake_r = self._wake_w = -1

    # The reader thread ---------------------------------------------------------

    def _run(self) -> None:
        reopen = isinstance(self._device, str | os.PathLike)
        failing = False
        while not self._stop.is_set():
            fd = self._open(quiet=failing)
            if fd is None:
                if not failing:
                    self._status(f"touch device {self.name} not available")
                failing = True
            else:
                if failing:
                    log.info("touch device %s is back", self.name)
                    self._status(None)
                failing = False
                try:
                    regular = stat.S_ISREG(os.fstat(fd).st_mode)
                    outcome = self._pump(fd)
                finally:
                    if reopen:  # a descriptor or file object given to us stays open
                        os.close(fd)
                if outcome == "closed" or not reopen:
                    return
                if outcome == "eof":
                    if regular:
                        log.info("end of touch capture %s", self.name)
                        return
                    log.warning("touch device %s lost: end of stream", self.name)
                self._status(f"touch device {self.name} lost ({self._lost_why})")
                failing = True
            if self._stop.wait(self._retry_s):
                return

    def _open(self, quiet: bool) -> int | None:
        d = self._device
        if isinstance(d, int):
            return d
        if not isinstance(d, str | os.PathLike):
            return d.fileno()
        try:
            # Non-blocking so that opening a FIFO without a writer cannot hang close().
            return os.open(d, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            level = logging.DEBUG if quiet else logging.ERROR
            log.log(level, "touch device %s not available (%s); retrying every %g s",
                    self.name, e.strerror or e, self._retry_s)
            return None

    def _pump(self, fd: int) -> Literal["closed", "eof", "lost"]:
        parser = TouchParser(self._locator(fd))
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLPRI)
        poller.register(self._wake_r, select.POLLIN)
        outcome: Literal["closed", "eof", "lost"] = "closed"
        while not self._stop.is_set():
            ready = dict(poller.poll())
            if self._wake_r in ready:
                break
            try:
                data = os.read(fd, _READ_SIZE)
            except BlockingIOError:
                continue
            except OSError as e:
                # ENODEV: the USB panel was unplugged.
                what = "unplugged" if e.errno == errno.ENODEV else (e.strerror or str(e))
                log.warning("touch device %s lost: %s", self.name, what)
                self._lost_why = what
                outcome = "lost"
                break
            if not data:
                outcome = "eof"
                self._lost_why = "end of stream"
                break
            self._dispatch(parser.feed(data))
        if outcome != "closed":
            self._dispatch(parser.end())
        return outcome

    def _locator(self, fd: int) -> Mapping[int, Zone] | Locator:
        """The zones, or for a colour screen its buttons through this panel's axes."""
        targets = self._targets
        if targets is None:
            return self._zones
        axes = self._axes or read_axes(fd)
        if axes is None:
            log.error("touch device %s reports no axis ranges (EVIOCGABS): touches are "
                      "ignored; is it a touch screen? (evtest %s)", self.name, self.name)
            return lambda x, y: None
        x_axis, y_axis = axes
        log.info("touch device %s: x %d..%d, y %d..%d", self.name, x_axis.minimum,
                 x_axis.maximum, y_axis.minimum, y_axis.maximum)
        calibration = self._calibration
        return lambda x, y: targets.hit_raw(x, y, x_axis, y_axis, calibration)

    def _status(self, error: str | None) -> None:
        """Tell the daemon the panel failed (or works again): a fault in its status."""
        if self._emit is not None and self._clock is not None:
            self._emit(DriverStatus("keys", error, self._clock.monotonic()))

    def _dispatch(self, actions: list[TouchAction]) -> None:
        if not actions:
            return
        assert self._emit is not None and self._clock is not None
        t = self._clock.monotonic()
        for action in actions:
            self._emit(KeyDown(action.level, t, input="touch") if action.kind == "down"
                       else KeyUp(action.level, t))
