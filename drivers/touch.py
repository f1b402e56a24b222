"""A touch panel read as a raw Linux input device (/dev/input/eventN), with screen zones
mapped to the five levels: each touch is one KeyDown at touch-down and one KeyUp at lift.

On a colour display (SPEC §10) there are no zones: the targets are the buttons the screen
drew (drivers/targets.py), and raw coordinates become screen pixels through the axis
ranges the kernel reports for the panel (EVIOCGABS), read each time it is opened.

No evdev dependency: the kernel's `struct input_event` is decoded with `struct`, in the
native layout of this process (see EVENT_FORMAT). Decoding and tracking the stream is
drivers/touch_events.py; this module opens, re-opens and reads the device.
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
from collections.abc import Mapping
from typing import BinaryIO, Literal

from device.core.model import KeyDown, KeyUp
from device.ports import DriverStatus, Emit, MonotonicClock
from drivers.targets import AxisRange, ScreenTargets, TouchCalibration
from drivers.touch_events import (
    ABS_MT_POSITION_X,
    ABS_MT_POSITION_Y,
    ABS_MT_SLOT,
    ABS_MT_TRACKING_ID,
    ABS_X,
    ABS_Y,
    BTN_TOUCH,
    DEFAULT_SIM_ZONES,
    EV_ABS,
    EV_KEY,
    EV_SYN,
    EVENT_FORMAT,
    EVENT_SIZE,
    SYN_DROPPED,
    SYN_REPORT,
    EventDecoder,
    InputEvent,
    Locator,
    TouchAction,
    TouchParser,
    TouchTracker,
    Zone,
    pack_event,
    zone_for,
)

log = logging.getLogger(__name__)

# The event stream's names live in drivers/touch_events.py and stay importable from here
# (the sim driver, the compose root and the tests use them so).
__all__ = ["ABS_MT_POSITION_X", "ABS_MT_POSITION_Y", "ABS_MT_SLOT", "ABS_MT_TRACKING_ID",
           "ABS_X", "ABS_Y", "BTN_TOUCH", "DEFAULT_SIM_ZONES", "EVENT_FORMAT", "EVENT_SIZE",
           "EV_ABS", "EV_KEY", "EV_SYN", "NO_CALIBRATION", "RETRY_S", "SYN_DROPPED",
           "SYN_REPORT", "Axes", "EventDecoder", "InputEvent", "Locator", "Source",
           "TouchAction", "TouchInput", "TouchParser", "TouchTracker", "Zone", "pack_event",
           "read_axes", "zone_for"]

RETRY_S = 2.0
_READ_SIZE = EVENT_SIZE * 64

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
        except (OSError, ValueError) as e:   # ValueError: a NUL in the path
            level = logging.DEBUG if quiet else logging.ERROR
            log.log(level, "touch device %s not available (%s); retrying every %g s",
                    self.name, getattr(e, "strerror", None) or e, self._retry_s)
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
