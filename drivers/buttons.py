"""Five physical keys on GPIO pins (gpiozero), reported as clean, debounced KeyDown/KeyUp.

The first edge of a key acts at once (no debounce delay before a KeyDown); edges of that
key within `bounce_ms` afterwards are contact bounce and are ignored, and when the window
closes the pin is read again so a release that happened during the bounce is not lost.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from gpiozero import DigitalInputDevice
from gpiozero.exc import BadPinFactory, GPIOPinInUse, GPIOZeroError, PinInvalidPin

from device.core.model import KeyDown, KeyUp
from device.ports import DriverStatus, Emit, HardwareNotFound, MonotonicClock
from drivers.gpio import factory_fallbacks, tried_text

log = logging.getLogger(__name__)

# A re-check that finds the injected clock still inside the window (a test's fake clock)
# tries again after at least this long, so it never spins.
_MIN_RECHECK_S = 0.001


class DebouncedKey:
    """Debounce state of one key, driven by observations stamped with clock time.

    `observe(pressed, t)` is fed both by edge callbacks and by the re-check when the bounce
    window closes; it returns the new state to report (True = down, False = up) or None.
    """

    def __init__(self, bounce_s: float) -> None:
        self.bounce_s = bounce_s
        self.pressed = False               # the state last reported
        self.quiet_until = float("-inf")   # edges before this are bounce

    def in_window(self, t: float) -> bool:
        return t < self.quiet_until

    def observe(self, pressed: bool, t: float) -> bool | None:
        if self.in_window(t) or pressed == self.pressed:
            return None
        self.pressed = pressed
        self.quiet_until = t + self.bounce_s
        return pressed


class GpioButtons:
    """Implements device.ports.KeyInput for keys wired from a BCM pin to GND (or to 3V3
    with `pull_up=False`). `pins` maps level -> BCM pin number."""

    def __init__(self, pins: dict[int, int], pull_up: bool = True, bounce_ms: int = 20,
                 pin_factory: object | None = None) -> None:
        if bounce_ms < 0:
            raise ValueError("bounce_ms must be >= 0")
        self._bounce_s = bounce_ms / 1000.0
        self._lock = threading.Lock()
        self._emit: Emit | None = None
        self._clock: MonotonicClock | None = None
        self._closed = False
        self._read_failing = False   # a pin could not be read: reported as a fault
        self._keys = {level: DebouncedKey(self._bounce_s) for level in pins}
        self._timers: dict[int, threading.Timer] = {}
        self._generation = dict.fromkeys(pins, 0)
        self._buttons: dict[int, DigitalInputDevice] = {}
        try:
            with factory_fallbacks() as tried:
                for level, pin in sorted(pins.items(), reverse=True):
                    # Not gpiozero's Button: its hold thread polls ten times a second and
                    # makes close() wait up to hold_time, while holds are the core's job.
                    # Nor its bounce_time, which can drop the release of a quick tap.
                    self._buttons[level] = DigitalInputDevice(
                        pin, pull_up=pull_up, bounce_time=None, pin_factory=pin_factory)
        except (GPIOZeroError, OSError, ImportError, RuntimeError) as e:
            self._close_buttons()
            raise HardwareNotFound(_explain(pins, e) + tried_text(tried)) from e

    def start(self, emit: Emit, clock: MonotonicClock) -> None:
        with self._lock:
            self._emit = emit
            self._clock = clock
            for level, button in self._buttons.items():
                if button.is_active:
                    # Held, not pressed: it rates nothing, but the core times it like any
                    # held key (button_stuck after 10 s) and its release is a KeyUp. The
                    # key counts once it has been released and pressed again.
                    log.warning("key %d (GPIO%s) is already down at start: stuck or held",
                                level, button.pin)
                    self._keys[level].pressed = True
                    emit(KeyDown(level, clock.monotonic(), input="button", already_down=True))
        for level, button in self._buttons.items():
            button.when_activated = self._edge_callback(level, True)
            button.when_deactivated = self._edge_callback(level, False)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            timers = list(self._timers.values())
            self._timers.clear()
        for timer in timers:
            timer.cancel()
        self._close_buttons()

    # Internals ---------------------------------------------------------------

    def _edge_callback(self, level: int, pressed: bool) -> Callable[[], None]:
        def on_edge() -> None:
            with self._lock:
                if self._closed or self._clock is None:
                    return
                self._observe(level, pressed, self._clock.monotonic())
        return on_edge

    def _observe(self, level: int, pressed: bool, t: float) -> None:
        """Under the lock: report an accepted change and watch the end of its window."""
        key = self._keys[level]
        if key.observe(pressed, t) is None:
            return
        assert self._emit is not None
        self._emit(KeyDown(level, t, input="button") if pressed else KeyUp(level, t))
        if self._bounce_s > 0:
            self._schedule_check(level, self._bounce_s)

    def _schedule_check(self, level: int, delay_s: float) -> None:
        """Under the lock: read the settled pin state once the bounce window has passed."""
        self._generation[level] += 1
        old = self._timers.pop(level, None)
        if old is not None:
            old.cancel()
        timer = threading.Timer(max(delay_s, _MIN_RECHECK_S), self._check,
                                args=(level, self._generation[level]))
        timer.daemon = True
        self._timers[level] = timer
        timer.start()

    def _check(self, level: int, generation: int) -> None:
        with self._lock:
            if self._closed or generation != self._generation[level] or self._clock is None:
                return
            self._timers.pop(level, None)
            key = self._keys[level]
            t = self._clock.monotonic()
            if key.in_window(t):
                self._schedule_check(level, key.quiet_until - t)
                return
            try:
                pressed = bool(self._buttons[level].is_active)
            except (GPIOZeroError, OSError) as e:
                log.error("cannot read key %d: %s", level, e)
                if not self._read_failing and self._emit is not None:
                    self._read_failing = True
                    self._emit(DriverStatus("keys", f"cannot read key {level}: {e}", t))
                return
            if self._read_failing and self._emit is not None:
                self._read_failing = False
                self._emit(DriverStatus("keys", None, t))
            self._observe(level, pressed, t)

    def _close_buttons(self) -> None:
        for button in self._buttons.values():
            try:
                button.close()
            except GPIOZeroError as e:
                log.debug("closing %r: %s", button, e)
        self._buttons.clear()


def _explain(pins: dict[int, int], error: Exception) -> str:
    where = ", ".join(f"{level}→GPIO{pin}" for level, pin in sorted(pins.items(), reverse=True))
    if isinstance(error, BadPinFactory | ImportError):
        hint = ("no GPIO here: run on a Raspberry Pi with lgpio (on a Pi 5 set "
                "GPIOZERO_PIN_FACTORY=lgpio), or set [input] kind = \"sim\"")
    elif isinstance(error, GPIOPinInUse):
        hint = "a pin is already in use by another key, LED or program"
    elif isinstance(error, PinInvalidPin):
        hint = "check the BCM pin numbers in [input] pins"
    else:
        hint = "check the wiring, the BCM pin numbers and access to /dev/gpiochip*"
    return f"cannot open the keys ({where}): {error}; {hint}"
