"""The touch targets of the screen on a colour display (SPEC §10): the buttons the layout
drew, shared between the display that draws them and the touch input that hits them.

The display replaces the targets after each frame (from its own thread, the daemon's);
the touch reader asks which button a point is in (from its thread). A touch panel's
raw coordinates become screen pixels through the kernel's axis ranges (`AxisRange`),
with swap and mirroring from the config (`TouchCalibration`).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in screen pixels, ends exclusive


@dataclass(frozen=True)
class AxisRange:
    """One axis as the kernel reports it (EVIOCGABS: minimum and maximum, inclusive)."""

    minimum: int
    maximum: int

    def fraction(self, value: int) -> float:
        """`value` as 0.0 (minimum) .. 1.0 (maximum), clamped."""
        span = self.maximum - self.minimum
        if span <= 0:
            return 0.0
        return min(1.0, max(0.0, (value - self.minimum) / span))


@dataclass(frozen=True)
class TouchCalibration:
    """`[input] touch_swap_xy`, `touch_invert_x`, `touch_invert_y`: applied in that order
    (swap the panel's axes first, then mirror the screen's x and y)."""

    swap_xy: bool = False
    invert_x: bool = False
    invert_y: bool = False


class ScreenTargets:
    """The buttons on screen now, by level, and the screen's size."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._size = (0, 0)
        self._boxes: dict[int, Box] = {}

    def set(self, size: tuple[int, int], boxes: Mapping[int, Box]) -> None:
        with self._lock:
            self._size = size
            self._boxes = dict(boxes)

    @property
    def size(self) -> tuple[int, int]:
        with self._lock:
            return self._size

    def hit(self, x: int, y: int) -> int | None:
        """The level of the button that (x, y), in screen pixels, is in; None outside
        every button."""
        with self._lock:
            boxes = self._boxes
        for level, (x0, y0, x1, y1) in boxes.items():
            if x0 <= x < x1 and y0 <= y < y1:
                return level
        return None

    def to_screen(self, raw_x: int, raw_y: int, x_axis: AxisRange, y_axis: AxisRange,
                  calibration: TouchCalibration) -> tuple[int, int]:
        """A panel's raw point as screen pixels."""
        u, v = x_axis.fraction(raw_x), y_axis.fraction(raw_y)
        if calibration.swap_xy:
            u, v = v, u
        if calibration.invert_x:
            u = 1.0 - u
        if calibration.invert_y:
            v = 1.0 - v
        w, h = self.size
        return min(w - 1, int(u * w)), min(h - 1, int(v * h))

    def hit_raw(self, raw_x: int, raw_y: int, x_axis: AxisRange, y_axis: AxisRange,
                calibration: TouchCalibration) -> int | None:
        w, h = self.size
        if w <= 0 or h <= 0:
            return None  # nothing drawn yet
        return self.hit(*self.to_screen(raw_x, raw_y, x_axis, y_axis, calibration))


def calibration_for_rotation(quarter_turns: int) -> TouchCalibration:
    """The touch settings for a panel whose picture is turned by `[display] rotate`
    (quarter turns clockwise) while its touch layer still reports the panel's own axes:
    90° swap and mirror y, 180° mirror both, 270° swap and mirror x (docs/hardware-input.md)."""
    return {0: TouchCalibration(),
            1: TouchCalibration(swap_xy=True, invert_y=True),
            2: TouchCalibration(invert_x=True, invert_y=True),
            3: TouchCalibration(swap_xy=True, invert_x=True)}[quarter_turns % 4]
