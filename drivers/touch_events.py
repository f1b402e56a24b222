"""The pure half of the touch driver: the kernel's `struct input_event` stream decoded
(with `struct`, in this process's native layout; no evdev dependency) and turned into
presses and releases of the five levels by zones or by a colour screen's buttons. No
file, no thread, no clock: a change of what the kernel reports lands here; opening,
re-opening and reading the device is drivers/touch.py's."""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, NamedTuple

__all__ = ["ABS_MT_POSITION_X", "ABS_MT_POSITION_Y", "ABS_MT_SLOT", "ABS_MT_TRACKING_ID",
           "ABS_X", "ABS_Y", "BTN_TOUCH", "DEFAULT_SIM_ZONES", "EVENT_FORMAT", "EVENT_SIZE",
           "EV_ABS", "EV_KEY", "EV_SYN", "SYN_DROPPED", "SYN_REPORT", "EventDecoder",
           "InputEvent", "Locator", "TouchAction", "TouchParser", "TouchTracker", "Zone",
           "pack_event", "zone_for"]

# The touch driver's logger, whichever of its two modules speaks.
log = logging.getLogger("drivers.touch")

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

# Which level a raw point picks (None: none): zones, or a colour screen's buttons.
Locator = Callable[[int, int], "int | None"]

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
