"""Key LEDs and a buzzer (gpiozero) giving the citizen feedback; every pattern runs in
gpiozero's background threads, so feedback() returns at once.

Patterns: "press" lights that key's LED for 0.3 s; "thanks" beeps once shortly and blinks
the chosen key's LED three times; "ignored" does nothing (a tick would tell the citizen
the press counted, which it did not; the screen already says what is going on); "error"
beeps for 0.8 s and blinks every LED four times.
"""

from __future__ import annotations

import logging

from gpiozero import LED, Buzzer
from gpiozero.exc import BadPinFactory, GPIOPinInUse, GPIOZeroError, PinInvalidPin

from device.core.model import Feedback
from device.ports import DriverError, HardwareNotFound
from drivers.gpio import factory_fallbacks, tried_text

log = logging.getLogger(__name__)

PRESS_ON_S = 0.3
THANKS_BEEP_S = 0.08
THANKS_BLINK_S = 0.15
THANKS_BLINKS = 3
ERROR_BEEP_S = 0.8
ERROR_BLINK_S = 0.25
ERROR_BLINKS = 4


class GpioIndicators:
    """Implements device.ports.Indicators. `leds` maps level -> BCM pin (LEDs driven
    active-high); `buzzer` is the BCM pin of an active buzzer, or None."""

    def __init__(self, leds: dict[int, int], buzzer: int | None,
                 pin_factory: object | None = None) -> None:
        self._pins, self._buzzer_pin, self._factory = dict(leds), buzzer, pin_factory
        self._leds: dict[int, LED] = {}
        self._buzzer: Buzzer | None = None
        self._reopen = False   # a pattern failed: open the pins afresh before the next
        self._open()

    def _open(self) -> None:
        leds, buzzer, pin_factory = self._pins, self._buzzer_pin, self._factory
        try:
            with factory_fallbacks() as tried:
                for level, pin in sorted(leds.items(), reverse=True):
                    self._leds[level] = LED(pin, pin_factory=pin_factory)
                if buzzer is not None:
                    self._buzzer = Buzzer(buzzer, pin_factory=pin_factory)
        except (GPIOZeroError, OSError, ImportError, RuntimeError) as e:
            self.close()
            raise HardwareNotFound(_explain(leds, buzzer, e) + tried_text(tried)) from e

    def feedback(self, feedback: Feedback) -> None:
        """Start the pattern; DriverError if the pins fail (the daemon reports the fault
        and goes on: feedback never stops a rating). After a failure the pins are opened
        afresh before the next pattern, so a part that came back works again."""
        if self._reopen:
            self.close()
            try:
                self._open()
            except HardwareNotFound as e:
                raise DriverError(f"indicators: re-opening failed: {e}") from None
            self._reopen = False
        try:
            self._play(feedback)
        except (GPIOZeroError, OSError) as e:
            self._reopen = True
            raise DriverError(f"indicators: {feedback.kind} pattern failed: {e}") from None

    def close(self) -> None:
        devices: list[LED | Buzzer] = [*self._leds.values()]
        if self._buzzer is not None:
            devices.append(self._buzzer)
        for device in devices:
            try:
                device.close()
            except GPIOZeroError as e:
                log.debug("closing %r: %s", device, e)
        self._leds.clear()
        self._buzzer = None

    def _play(self, feedback: Feedback) -> None:
        kind, level = feedback.kind, feedback.level
        if kind == "press":
            led = self._leds.get(level) if level is not None else None
            if led is not None:
                led.blink(on_time=PRESS_ON_S, off_time=0, n=1, background=True)
        elif kind == "thanks":
            self._beep(THANKS_BEEP_S)
            chosen = self._leds.get(level) if level is not None else None
            for led in [chosen] if chosen is not None else self._leds.values():
                led.blink(on_time=THANKS_BLINK_S, off_time=THANKS_BLINK_S,
                          n=THANKS_BLINKS, background=True)
        elif kind == "error":
            self._beep(ERROR_BEEP_S)
            for led in self._leds.values():
                led.blink(on_time=ERROR_BLINK_S, off_time=ERROR_BLINK_S,
                          n=ERROR_BLINKS, background=True)
        elif kind != "ignored":
            log.debug("indicators: no pattern for feedback %r", kind)

    def _beep(self, seconds: float) -> None:
        if self._buzzer is not None:
            self._buzzer.beep(on_time=seconds, off_time=0, n=1, background=True)


class NullIndicators:
    """No LEDs and no buzzer ([indicators] kind = "none" or nothing configured)."""

    def feedback(self, feedback: Feedback) -> None:
        pass

    def close(self) -> None:
        pass


def _explain(leds: dict[int, int], buzzer: int | None, error: Exception) -> str:
    where = [f"LED {level}→GPIO{pin}" for level, pin in sorted(leds.items(), reverse=True)]
    if buzzer is not None:
        where.append(f"buzzer→GPIO{buzzer}")
    if isinstance(error, BadPinFactory | ImportError):
        hint = ("no GPIO here: run on a Raspberry Pi with lgpio (on a Pi 5 set "
                "GPIOZERO_PIN_FACTORY=lgpio), or set [indicators] kind = \"none\"")
    elif isinstance(error, GPIOPinInUse):
        hint = "a pin is already in use by a key, another LED or another program"
    elif isinstance(error, PinInvalidPin):
        hint = "check the BCM pin numbers in [indicators]"
    else:
        hint = "check the wiring, the BCM pin numbers and access to /dev/gpiochip*"
    return f"cannot open the indicators ({', '.join(where)}): {error}; {hint}"
