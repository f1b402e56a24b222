"""The small interfaces every driver implements, real or simulated, and the bundle of
them the composition root (device/compose.py) hands to the daemon.

The daemon only ever sees these: it never asks whether a driver is simulated.
Driver threads (gpiozero callbacks, the serial reader, the sim socket) only call the
`emit` function they were given, which puts a typed event on the daemon's queue.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from device.core.model import Event, Feedback, Screen

Emit = Callable[[Event], None]


class DriverError(Exception):
    """A driver could not do its job; the message says what and what to check."""


class HardwareNotFound(DriverError):
    """The configured hardware is missing (no I²C bus, no GPIO, no input device, no font)."""


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


class ControlSocket(Protocol):
    """The simulator's control socket (SPEC §8): it asks the daemon for its status, and
    in tests may step the wall clock."""

    status_provider: Callable[[], dict[str, Any]] | None
    clock_stepper: Callable[[float], None] | None


log = logging.getLogger("hcp.drivers")


@dataclass
class Drivers:
    keys: KeyInput
    display: Display
    indicators: Indicators
    serial: SerialLink | None
    control: ControlSocket | None = None

    def close(self) -> None:
        """Close every part once, whatever one of them does."""
        for part in (self.keys, self.serial, self.indicators, self.display):
            if part is None:
                continue
            try:
                part.close()
            except Exception:  # closing must go on whatever one driver does
                log.exception("closing %s failed", type(part).__name__)
