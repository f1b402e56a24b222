"""GPIO keys: one clean KeyDown/KeyUp per press, at once, through contact bounce."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from gpiozero import Button, Device
from gpiozero.exc import GPIOZeroError
from gpiozero.pins.mock import MockFactory

from device.clock import FakeClock, SystemClock
from device.core.model import Event, KeyDown, KeyUp
from device.ports import DriverStatus, HardwareNotFound
from drivers.buttons import DebouncedKey, GpioButtons
from tests.support.device import ROOT, device_config

PINS = {5: 17, 4: 27, 3: 22, 2: 23, 1: 24}


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    f = MockFactory()
    yield f
    f.reset()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


class Keys:
    """A started GpioButtons on mock pins, with the events it emitted."""

    def __init__(self, factory: MockFactory, clock: FakeClock,
                 bounce_ms: int = 20, pull_up: bool = True) -> None:
        self.factory = factory
        self.clock = clock
        self.events: list[Event | DriverStatus] = []
        self.driver = GpioButtons(PINS, pull_up=pull_up, bounce_ms=bounce_ms,
                                  pin_factory=factory)
        self.driver.start(self.events.append, clock)

    def pin(self, level: int):  # type: ignore[no-untyped-def]
        return self.factory.pin(PINS[level])

    def wait_for(self, pred: Callable[[list[Event | DriverStatus]], bool],
                 timeout: float = 2.0) -> None:
        deadline = time.monotonic() + timeout
        while not pred(self.events):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; events so far: {self.events}")
            time.sleep(0.002)


def summary(events: list[Event | DriverStatus]) -> list[tuple[str, int, float, str]]:
    """What the core would see: kind, level, time (rounded: the fake clock adds floats)."""
    return [(type(e).__name__, e.level, round(e.t, 6),  # type: ignore[union-attr]
             getattr(e, "input", "")) for e in events]


def down(level: int, t: float) -> tuple[str, int, float, str]:
    return ("KeyDown", level, t, "button")


def up(level: int, t: float) -> tuple[str, int, float, str]:
    return ("KeyUp", level, t, "")


@pytest.fixture
def keys(factory: MockFactory, clock: FakeClock) -> Iterator[Keys]:
    k = Keys(factory, clock)
    yield k
    k.driver.close()


# The pure debounce rule, with explicit timestamps ------------------------------

def test_first_edge_counts_and_bounce_inside_the_window_is_ignored() -> None:
    key = DebouncedKey(bounce_s=0.020)
    assert key.observe(True, 10.000) is True
    for i, pressed in enumerate([False, True, False, True]):
        assert key.observe(pressed, 10.002 + 0.003 * i) is None
    # The window is over and the key is still down: nothing new to say.
    assert key.observe(True, 10.021) is None
    assert key.observe(False, 10.500) is False
    assert key.observe(True, 10.505) is None   # release bounce
    assert key.observe(False, 10.600) is None  # same state again


def test_release_during_the_window_is_reported_when_it_closes() -> None:
    key = DebouncedKey(bounce_s=0.020)
    assert key.observe(True, 5.000) is True
    assert key.observe(False, 5.008) is None  # a very quick tap: inside the window
    # The re-check at the end of the window reads the pin and finds the key up.
    assert key.observe(False, 5.020) is False


def test_zero_bounce_reports_every_change() -> None:
    key = DebouncedKey(bounce_s=0.0)
    assert key.observe(True, 1.0) is True
    assert key.observe(False, 1.0) is False
    assert key.observe(True, 1.0) is True


# GpioButtons on gpiozero's mock pins ------------------------------------------

def test_a_press_gives_one_keydown_and_one_keyup(keys: Keys) -> None:
    keys.pin(3).drive_low()
    keys.clock.advance(0.2)
    keys.pin(3).drive_high()
    keys.clock.advance(0.2)
    time.sleep(0.1)  # let the end-of-window re-checks run: they must add nothing
    assert summary(keys.events) == [down(3, 1000.0), up(3, 1000.2)]


def test_keydown_is_emitted_at_the_edge_without_waiting_for_the_debounce(
        factory: MockFactory) -> None:
    events: list[Event | DriverStatus] = []
    driver = GpioButtons(PINS, bounce_ms=200, pin_factory=factory)
    driver.start(events.append, SystemClock())
    try:
        before = time.monotonic()
        factory.pin(PINS[5]).drive_low()
        # MockPin calls back synchronously: the event is there already, stamped now.
        assert len(events) == 1
        event = events[0]
        assert isinstance(event, KeyDown) and event.level == 5
        assert before <= event.t <= time.monotonic()
    finally:
        driver.close()


def test_bouncing_press_and_release_give_one_event_each(keys: Keys) -> None:
    pin = keys.pin(4)
    for _ in range(3):  # down, up, down, up, down, up — then settles down
        pin.drive_low()
        keys.clock.advance(0.003)
        pin.drive_high()
        keys.clock.advance(0.003)
    pin.drive_low()
    keys.clock.advance(0.5)
    time.sleep(0.05)
    for _ in range(3):
        pin.drive_high()
        keys.clock.advance(0.002)
        pin.drive_low()
        keys.clock.advance(0.002)
    pin.drive_high()
    keys.clock.advance(0.5)
    time.sleep(0.05)
    assert summary(keys.events) == [down(4, 1000.0), up(4, 1000.518)]


def test_a_tap_shorter_than_the_bounce_window_still_ends_with_a_keyup(keys: Keys) -> None:
    keys.pin(2).drive_low()
    keys.clock.advance(0.005)
    keys.pin(2).drive_high()          # inside the window: not reported yet
    assert summary(keys.events) == [down(2, 1000.0)]
    keys.clock.advance(0.030)         # the window is over by the driver's clock
    keys.wait_for(lambda ev: len(ev) == 2)
    assert summary(keys.events)[1] == up(2, 1000.035)


def test_key_that_bounced_up_but_stays_down_reports_nothing_more(keys: Keys) -> None:
    pin = keys.pin(2)
    pin.drive_low()
    keys.clock.advance(0.004)
    pin.drive_high()
    keys.clock.advance(0.004)
    pin.drive_low()
    keys.clock.advance(0.100)
    time.sleep(0.1)
    assert summary(keys.events) == [down(2, 1000.0)]


def test_two_keys_report_their_own_events(keys: Keys) -> None:
    keys.pin(5).drive_low()
    keys.clock.advance(0.05)
    keys.pin(1).drive_low()
    keys.clock.advance(0.05)
    keys.pin(5).drive_high()
    keys.clock.advance(0.05)
    keys.pin(1).drive_high()
    assert summary(keys.events) == [
        down(5, 1000.0),
        down(1, 1000.05),
        up(5, 1000.1),
        up(1, 1000.15),
    ]


def test_every_level_is_wired_to_its_own_pin(keys: Keys) -> None:
    for level in (5, 4, 3, 2, 1):
        keys.pin(level).drive_low()
        keys.clock.advance(0.1)
        keys.pin(level).drive_high()
        keys.clock.advance(0.1)
    downs = [e.level for e in keys.events if isinstance(e, KeyDown)]
    ups = [e.level for e in keys.events if isinstance(e, KeyUp)]
    assert downs == ups == [5, 4, 3, 2, 1]


def test_active_high_keys_with_pull_down(factory: MockFactory, clock: FakeClock) -> None:
    keys = Keys(factory, clock, pull_up=False)
    try:
        keys.pin(3).drive_high()
        clock.advance(0.1)
        keys.pin(3).drive_low()
        assert summary(keys.events) == [down(3, 1000.0), up(3, 1000.1)]
    finally:
        keys.driver.close()


def test_key_held_at_start_counts_only_after_release(factory: MockFactory,
                                                     clock: FakeClock) -> None:
    pin = factory.pin(PINS[1])
    driver = GpioButtons(PINS, pin_factory=factory)
    pin.drive_low()  # held (or stuck) before the daemon starts listening
    events: list[Event | DriverStatus] = []
    driver.start(events.append, clock)
    try:
        clock.advance(1)
        pin.drive_high()
        clock.advance(1)
        pin.drive_low()
        # Reported as held (no rating; the core times it for button_stuck), its release
        # as a KeyUp, and only the next press as a press.
        assert summary(events) == [down(1, 1000.0), up(1, 1001.0), down(1, 1002.0)]
        assert [getattr(e, "already_down", None) for e in events] == [True, None, False]
    finally:
        driver.close()


def test_close_stops_events_and_frees_the_pins(factory: MockFactory,
                                               clock: FakeClock) -> None:
    keys = Keys(factory, clock)
    keys.driver.close()
    keys.pin(5).drive_low()
    assert keys.events == []
    again = GpioButtons(PINS, pin_factory=factory)  # the pins were released
    again.close()


def test_pin_in_use_is_a_clear_hardware_error(factory: MockFactory) -> None:
    other = Button(22, pin_factory=factory)
    try:
        with pytest.raises(HardwareNotFound, match="GPIO22.*in use"):
            GpioButtons(PINS, pin_factory=factory)
    finally:
        other.close()
    # The keys opened before the failure were released again.
    GpioButtons(PINS, pin_factory=factory).close()


def test_no_gpio_on_this_machine_is_a_clear_hardware_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GPIOZERO_PIN_FACTORY", raising=False)
    monkeypatch.setattr(Device, "pin_factory", None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # gpiozero warns once per factory it tries
        with pytest.raises(HardwareNotFound, match="no GPIO here"):
            GpioButtons(PINS)


def test_a_key_that_cannot_be_read_is_a_fault_until_it_reads_again(
        keys: Keys, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """The re-check after the bounce window reads the pin: when that read fails (a GPIO
    chip gone away) the daemon hears of it as a `keys` fault, and of the recovery."""
    button = keys.driver._buttons[3]
    broken = True
    real = type(button).is_active

    def is_active(self: object) -> bool:
        if broken and self is button:
            raise GPIOZeroError("pin 13 read failed")
        return bool(real.fget(self))

    monkeypatch.setattr(type(button), "is_active", property(is_active))
    keys.pin(3).drive_low()
    clock.advance(0.030)              # the bounce window is over: the pin is read again
    keys.wait_for(lambda ev: any(isinstance(e, DriverStatus) for e in ev))
    (fault,) = [e for e in keys.events if isinstance(e, DriverStatus)]
    assert fault.part == "keys" and fault.error is not None and "key 3" in fault.error
    broken = False
    keys.pin(3).drive_high()
    clock.advance(0.030)
    keys.wait_for(lambda ev: [e.error for e in ev if isinstance(e, DriverStatus)][-1:] == [None])


def test_no_gpio_here_is_one_line_naming_the_factories_tried(tmp_path: Path) -> None:
    """On a machine without GPIO the technician reads one line, not gpiozero's warning
    per pin factory before it (issue 15)."""
    config = tmp_path / "device.toml"
    config.write_text(device_config(tmp_path / "data", "loop://",
                                    input={"kind": "gpio",
                                           "pins": {5: 17, 4: 27, 3: 22, 2: 23, 1: 24}},
                                    display={"kind": "none"}), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "GPIOZERO_PIN_FACTORY"}
    done = subprocess.run([sys.executable, "-m", "device.cli", "run", "--config", str(config)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 69, done.stderr
    lines = [line for line in done.stderr.splitlines() if "WARNING" not in line
             and " INFO " not in line]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("hcp-device: cannot open the keys") and "kind = \"sim\"" in lines[0]
    assert "Falling back" not in done.stderr and "warnings.warn" not in done.stderr
