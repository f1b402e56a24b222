"""The small interfaces every driver implements, real or simulated, and the bundle of
them the composition root (device/compose.py) hands to the daemon.

The daemon only ever sees these: it never asks whether a driver is simulated.
Driver threads (gpiozero callbacks, the serial reader, the sim socket) only call the
`emit` function they were given, which puts a typed event on the daemon's queue.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from device.core.model import Event, Feedback, Screen


@dataclass(frozen=True)
class DriverStatus:
    """A driver thread's news about its part: `error` when it started failing (a touch
    panel unplugged, a key that cannot be read), None when it works again. The daemon
    reports it as a fault (device/faults.py); key events keep flowing when they can."""

    part: str        # "keys", "display", "indicators", "serial", "voice"
    error: str | None
    t: float


Emit = Callable[[Event | DriverStatus], None]


class DriverError(Exception):
    """A driver could not do its job; the message says what and what to check."""


class HardwareNotFound(DriverError):
    """The configured hardware is missing (no I²C bus, no GPIO, no input device, no font)."""


# The longest path a UNIX socket may be bound or reached at: the kernel's sun_path holds
# 108 bytes with the closing NUL (bind() says only "AF_UNIX path too long").
MAX_SOCKET_PATH = 107


def socket_path_problem(path: str | os.PathLike[str]) -> str | None:
    """What is wrong with `path` as a UNIX socket's path (too long: its length and the
    limit), or None. Measured as given: the kernel takes a relative path as it is."""
    size = len(os.fsencode(path))
    if size <= MAX_SOCKET_PATH:
        return None
    return f"{size} bytes long, over the {MAX_SOCKET_PATH} bytes a UNIX socket path may have"


class MonotonicClock(Protocol):
    def monotonic(self) -> float: ...


class KeyInput(Protocol):
    """Five keys (or touch zones): emits KeyDown/KeyUp events stamped with clock time."""

    def start(self, emit: Emit, clock: MonotonicClock) -> None: ...

    def close(self) -> None: ...


class Display(Protocol):
    """Shows a screen; must return quickly (the press-to-thanks path runs through it).

    A panel that stops answering raises DriverError; the next show() must try to open
    it again (the daemon re-shows the current screen every few seconds until one works).
    """

    def show(self, screen: Screen) -> None: ...

    def close(self) -> None: ...


class Indicators(Protocol):
    """Key LEDs and a buzzer: best-effort feedback, never blocks; DriverError when the
    hardware failed (reported as a fault; the rating goes on)."""

    def feedback(self, feedback: Feedback) -> None: ...

    def close(self) -> None: ...


class Voice(Protocol):
    """Plays the voice clips (SPEC §10). `play` returns at once: the clips play one after
    another on the driver's own thread, and a newer `play` cuts whatever is playing.

    DriverError when no player could be started (no audio device, no player program); a
    player that fails later is reported through `emit` as DriverStatus("voice", …), and
    one that plays a clip to its end as DriverStatus("voice", None)."""

    def start(self, emit: Emit, clock: MonotonicClock) -> None: ...

    def play(self, clips: Sequence[str], volume: int) -> None: ...

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

    def send(self, data: bytes) -> bool:
        """Write one encoded frame: False when the port is not open (an outage, reported
        through `on_open`); DriverError when it is open but the write failed (a window
        system that does not read, an I/O error)."""
        ...

    def close(self) -> None: ...


class ControlSocket(Protocol):
    """The simulator's control socket (SPEC §8): it asks the daemon for its status, and
    in tests may step the wall clock."""

    status_provider: Callable[[], dict[str, Any]] | None
    clock_stepper: Callable[[float], None] | None


class BrokerLink(Protocol):
    """The MQTT connection (device/mqtt_link.py; a recording fake in tests). Its thread
    puts MqttUp/MqttDown/MqttPubAck/MqttMessage events on the daemon's queue."""

    connects: int       # successful connections since start
    connected: bool

    def start(self) -> None: ...

    def publish(self, kind: str, payload: dict[str, Any], qos: int = 1, retain: bool = False,
                ticket: int | None = None) -> None: ...

    def status_fields(self, fields: dict[str, Any]) -> None:
        """What the retained status says besides online/version/since (the clerk)."""

    def stop(self, timeout: float = 2.0) -> None: ...


log = logging.getLogger("hcp.drivers")


class _Closable(Protocol):
    def close(self) -> None: ...


@dataclass
class Drivers:
    keys: KeyInput
    display: Display
    indicators: Indicators
    serial: SerialLink | None
    control: ControlSocket | None = None
    voice: Voice | None = None

    def __post_init__(self) -> None:
        self._closed: list[_Closable] = []

    def close_input(self) -> None:
        """Stop taking key presses (first step of a stop); `close()` then skips the keys."""
        self._close(self.keys)

    def close(self) -> None:
        """Close every part once, whatever one of them does."""
        for part in (self.keys, self.serial, self.voice, self.indicators, self.display):
            if part is not None:
                self._close(part)

    def _close(self, part: _Closable) -> None:
        if any(part is done for done in self._closed):
            return
        self._closed.append(part)
        try:
            part.close()
        except Exception:  # closing must go on whatever one driver does
            log.exception("closing %s failed", type(part).__name__)
