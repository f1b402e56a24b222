"""The small interfaces every driver implements, real or simulated.

The daemon only ever sees these: it never asks whether a driver is simulated.
Driver threads (gpiozero callbacks, the serial reader, the sim socket) only call the
`emit` function they were given, which puts a typed event on the daemon's queue.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from device.core.model import Event, Feedback, Screen

Emit = Callable[[Event], None]


class MonotonicClock(Protocol):
    def monotonic(self) -> float: ...


class KeyInput(Protocol):
    """Five keys (or touch zones): emits KeyDown/KeyUp events stamped with clock time."""

    def start(self, emit: Emit, clock: MonotonicClock) -> None: ...

    def close(self) -> None: ...


class Display(Protocol):
    """Shows a screen; must return quickly (the press-to-thanks path runs through it)."""

    def show(self, screen: Screen) -> None: ...

    def close(self) -> None: ...


class Indicators(Protocol):
    """Key LEDs and a buzzer: best-effort feedback, never blocks."""

    def feedback(self, feedback: Feedback) -> None: ...

    def close(self) -> None: ...


class LineSink(Protocol):
    def __call__(self, line: bytes) -> None: ...


class SerialLink(Protocol):
    """A byte stream to the window system, split into lines by the driver.

    `on_line` gets each line without its newline, from the reader thread; a line longer
    than the protocol maximum arrives cut to MAX_LINE + 1 bytes so the decoder rejects it.
    `on_open(True)` fires each time the port (re)opens, `on_open(False)` when it is lost.
    """

    def start(self, on_line: LineSink, on_open: Callable[[bool], None]) -> None: ...

    def send(self, data: bytes) -> bool: ...

    def close(self) -> None: ...
