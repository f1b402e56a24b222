"""Key LEDs and buzzer: the right pins light up and beep, and the caller never waits."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from gpiozero import Button
from gpiozero.pins.mock import MockFactory, MockPin

from device.core.model import Feedback
from device.ports import HardwareNotFound, Indicators
from drivers.indicators import PRESS_ON_S, GpioIndicators, NullIndicators

LEDS = {5: 5, 4: 6, 3: 13, 2: 19, 1: 26}
BUZZER = 12


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    f = MockFactory()
    yield f
    f.reset()


@pytest.fixture
def indicators(factory: MockFactory) -> Iterator[GpioIndicators]:
    ind = GpioIndicators(LEDS, BUZZER, pin_factory=factory)
    yield ind
    ind.close()


def history(pin: MockPin) -> list[bool]:
    return [bool(s.state) for s in pin.states]


def wait_until(pred: Callable[[], object], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.005)


def test_press_lights_that_keys_led_briefly(factory: MockFactory,
                                            indicators: GpioIndicators) -> None:
    led3 = factory.pin(LEDS[3])
    started = time.monotonic()
    indicators.feedback(Feedback("press", level=3))
    wait_until(lambda: led3.state)
    wait_until(lambda: not led3.state)
    lit_for = time.monotonic() - started
    assert history(led3) == [False, True, False]
    assert PRESS_ON_S * 0.8 <= lit_for < PRESS_ON_S + 0.5
    for level in (5, 4, 2, 1):
        assert history(factory.pin(LEDS[level])) == [False]
    assert history(factory.pin(BUZZER)) == [False]


def test_thanks_beeps_and_blinks_the_chosen_key(factory: MockFactory,
                                                indicators: GpioIndicators) -> None:
    buzzer, led1 = factory.pin(BUZZER), factory.pin(LEDS[1])
    indicators.feedback(Feedback("thanks", level=1))
    wait_until(lambda: history(buzzer) == [False, True, False])
    wait_until(lambda: history(led1).count(True) == 3 and not led1.state)
    assert history(led1) == [False, True, False, True, False, True, False]
    assert history(factory.pin(LEDS[5])) == [False]


def test_error_beeps_long_and_blinks_every_led(factory: MockFactory,
                                               indicators: GpioIndicators) -> None:
    buzzer = factory.pin(BUZZER)
    indicators.feedback(Feedback("error"))
    leds = [factory.pin(pin) for pin in LEDS.values()]
    wait_until(lambda: all(led.state for led in leds))
    wait_until(lambda: buzzer.state)
    time.sleep(0.3)
    assert buzzer.state, "the error beep is long (longer than a thanks beep)"


def test_ignored_press_gives_no_feedback(factory: MockFactory,
                                         indicators: GpioIndicators) -> None:
    indicators.feedback(Feedback("ignored", level=2))
    indicators.feedback(Feedback("something-new", level=2))
    time.sleep(0.1)
    for pin in [*LEDS.values(), BUZZER]:
        assert history(factory.pin(pin)) == [False]


def test_feedback_never_waits_for_the_pattern(indicators: GpioIndicators) -> None:
    started = time.monotonic()
    for kind, level in [("press", 4), ("thanks", 4), ("error", None), ("press", 2)]:
        indicators.feedback(Feedback(kind, level))
    assert time.monotonic() - started < 0.1  # the patterns take seconds


def test_missing_led_or_buzzer_is_fine(factory: MockFactory) -> None:
    ind = GpioIndicators({3: 13}, None, pin_factory=factory)
    try:
        ind.feedback(Feedback("press", level=5))   # no LED on key 5
        ind.feedback(Feedback("thanks", level=3))  # no buzzer
        wait_until(lambda: factory.pin(13).state)
    finally:
        ind.close()


def test_close_stops_patterns_and_frees_the_pins(factory: MockFactory) -> None:
    ind = GpioIndicators(LEDS, BUZZER, pin_factory=factory)
    ind.feedback(Feedback("error"))
    wait_until(lambda: factory.pin(BUZZER).state)
    started = time.monotonic()
    ind.close()
    assert time.monotonic() - started < 0.5
    GpioIndicators(LEDS, BUZZER, pin_factory=factory).close()


def test_pin_in_use_is_a_clear_hardware_error(factory: MockFactory) -> None:
    key = Button(BUZZER, pin_factory=factory)
    try:
        with pytest.raises(HardwareNotFound, match="buzzer→GPIO12.*already in use"):
            GpioIndicators(LEDS, BUZZER, pin_factory=factory)
    finally:
        key.close()
    GpioIndicators(LEDS, BUZZER, pin_factory=factory).close()  # nothing left claimed


def test_both_implement_the_interface(factory: MockFactory) -> None:
    null: Indicators = NullIndicators()
    null.feedback(Feedback("thanks", 5))
    null.close()
    real: Indicators = GpioIndicators(LEDS, None, pin_factory=factory)
    real.close()


def test_failing_pins_raise_driver_error_for_the_daemon_to_report(
        indicators: GpioIndicators, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pattern that cannot start is the daemon's to report as a fault (it goes on
    rating): the driver says so with DriverError, not a log line only it can see."""
    from gpiozero.exc import GPIOZeroError

    from device.ports import DriverError

    def broken(*_: object, **__: object) -> None:
        raise GPIOZeroError("pin 12 stopped responding")
    monkeypatch.setattr(indicators, "_beep", broken)
    with pytest.raises(DriverError, match="thanks pattern failed: pin 12"):
        indicators.feedback(Feedback("thanks", 5))
    indicators.feedback(Feedback("press", 5))   # a pattern without the buzzer still works


def test_after_a_failure_the_pins_are_opened_afresh(factory: MockFactory) -> None:
    """Issue 17: a failing part is re-opened, not only reported. The LED of key 5 fails
    once; the next pattern opens the pins again and lights it."""
    from gpiozero.exc import GPIOZeroError

    from device.ports import DriverError

    indicators = GpioIndicators(LEDS, BUZZER, pin_factory=factory)
    broken_led = indicators._leds[5]

    def broken(*_: object, **__: object) -> None:
        raise GPIOZeroError("pin 5 stopped responding")
    broken_led.blink = broken
    with pytest.raises(DriverError, match="press pattern failed"):
        indicators.feedback(Feedback("press", 5))
    indicators.feedback(Feedback("press", 5))
    assert indicators._leds[5] is not broken_led, "the pins were opened afresh"
    wait_until(lambda: True in history(factory.pin(LEDS[5])))
    indicators.close()
