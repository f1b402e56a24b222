"""One virtual evaluator of `hcp-sim fleet`: the real daemon (core, outbox, delivery, MQTT
link) with in-memory keys and display, run on its own thread inside the fleet's process.

Nothing of the device is re-implemented here: a press goes through the daemon's queue
and core like a key on the GPIO, the rating is fsync'ed to its own outbox, published by
its own MQTT link and removed by a receipt, as on a real evaluator.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from device.clock import SystemClock
from device.config import (
    ClockSection,
    DeviceConfig,
    DeviceSection,
    DisplaySection,
    IndicatorsSection,
    InputSection,
    MqttSection,
    SerialSection,
)
from device.core.machine import REASON_KEYS, SKIP_KEY
from device.core.model import KeyDown, KeyUp, Screen
from device.core.settings import DEFAULT_REASONS, UiSettings
from device.daemon import Daemon
from device.ports import Drivers, Emit, MonotonicClock
from drivers.indicators import NullIndicators

log = logging.getLogger("hcp.fleet")

# A press the device has not turned into a rating after this long was ignored (a device
# busy for some reason we did not foresee): the fleet stops waiting for it.
PRESS_GIVE_UP_S = 10.0


def fleet_ui(window_name: str, thanks_s: float = 0.1) -> UiSettings:
    """UI settings that let a device take a spontaneous rating as often as the thanks
    screen allows — the real core, with the rate limits a load test does not want off."""
    return UiSettings(window_name=window_name, thanks_s=thanks_s, lockout_s=0.0,
                      allow_spontaneous=True, spontaneous_min_interval_s=0.0,
                      reasons=DEFAULT_REASONS)


def fleet_config(device_id: str, region_code: str, hall_id: str, window_id: str,
                 data_dir: Path, mqtt: MqttSection, ui: UiSettings) -> DeviceConfig:
    """The config a virtual device runs with: no serial link, keys and display in memory."""
    return DeviceConfig(
        path=Path("<hcp-sim fleet>"),
        device=DeviceSection(device_id, region_code, hall_id, window_id, ui.window_name,
                             data_dir),
        serial=SerialSection(port="", baudrate=115200, require_crc=True, reopen_s=2.0),
        input=InputSection(kind="sim", pins={}, pull_up=True, bounce_ms=0, touch_device="",
                           zones={}),
        display=DisplaySection(kind="none", font="", i2c_port=1, i2c_address=0x3C, rotate=0,
                               contrast=255),
        indicators=IndicatorsSection(kind="none", leds={}, buzzer=None),
        mqtt=mqtt,
        ui=ui,
        clock=ClockSection(sync_file="", assume_synced=True),
    )


class FleetKeys:
    """The device's key input, pressed by the fleet's scheduler (any thread)."""

    def __init__(self) -> None:
        self._emit: Emit | None = None
        self._clock: MonotonicClock | None = None

    def start(self, emit: Emit, clock: MonotonicClock) -> None:
        self._clock, self._emit = clock, emit

    def close(self) -> None:
        self._emit = None

    def tap(self, *levels: int) -> float | None:
        """Press and release each key in turn, at once; the time of the first key-down,
        or None when the device is not taking input (not started, or stopped)."""
        emit, clock = self._emit, self._clock
        if emit is None or clock is None:
            return None
        t = clock.monotonic()
        for level in levels:
            emit(KeyDown(level, t, "sim"))
            emit(KeyUp(level, t))
        return t


class FleetDisplay:
    """Remembers which screen is up: the scheduler presses only an idle device."""

    def __init__(self) -> None:
        self.screen = "idle"

    def show(self, screen: Screen) -> None:
        self.screen = screen.name

    def close(self) -> None:
        pass


class FleetDevice:
    """A `Daemon` on its own thread, with a key input the fleet presses.

    `on_stored(device, rating_id, pressed_at)` and `on_receipted(device, {rating_id:
    status})` are called on the device's loop thread; `pressed_at` is the monotonic time
    of the key press that made the rating, or None when no press of the fleet was
    waiting (a press given up on, whose rating came later after all).
    """

    def __init__(self, config: DeviceConfig,
                 on_stored: Callable[[FleetDevice, str, float | None], None],
                 on_receipted: Callable[[FleetDevice, dict[str, str]], None]) -> None:
        self.config = config
        self.device_id = config.device.id
        self.keys = FleetKeys()
        self.display = FleetDisplay()
        drivers = Drivers(keys=self.keys, display=self.display, indicators=NullIndicators(),
                          serial=None)
        clock = SystemClock(sync_file="", assume_synced=True)
        self.daemon = Daemon(config, drivers, clock=clock)
        self.daemon.on_stored = self._stored
        self.daemon.on_receipted = lambda done: on_receipted(self, done)
        self._on_stored = on_stored
        self._ready = threading.Event()
        self.daemon.on_ready = self._ready.set
        self._press_lock = threading.Lock()
        self._pressed_at: float | None = None   # a press not yet turned into a rating
        self.ignored = 0                        # presses given up on (PRESS_GIVE_UP_S)
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"fleet-{self.device_id}",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # Signals belong to the fleet's main thread (Ctrl-C stops the whole fleet).
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        try:
            self.daemon.run()
        except BaseException as e:  # one broken device must not take the fleet down
            log.exception("device %s stopped with an error", self.device_id)
            self.error = e
            self._ready.set()

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout)

    def request_stop(self) -> None:
        self.daemon.request_stop("fleet finished")

    def join(self, timeout: float) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    # --- state, read from other threads --------------------------------------------

    @property
    def connected(self) -> bool:
        link = self.daemon.link
        return link is not None and link.connected

    @property
    def backlog(self) -> int:
        return self.daemon.stats.backlog

    def ready_for_press(self, now: float) -> bool:
        """Idle on screen and no press of ours still on its way to the outbox."""
        if self.error is not None or self.display.screen != "idle":
            return False
        with self._press_lock:
            if self._pressed_at is None:
                return True
            if now - self._pressed_at < PRESS_GIVE_UP_S:
                return False
            self._pressed_at = None
            self.ignored += 1
            return True

    def rate(self, level: int, reason_key: int = SKIP_KEY) -> float | None:
        """A citizen rates the window: the level key, then for a bad level the key of a
        reason (or skip) on the reasons screen. Returns the press time, None if the
        device is not taking input."""
        keys = [level]
        if level <= 2 and self.config.ui.reasons:
            keys.append(reason_key if reason_key in REASON_KEYS[:len(self.config.ui.reasons)]
                        else SKIP_KEY)
        with self._press_lock:
            t = self.keys.tap(*keys)
            self._pressed_at = t
        return t

    # --- daemon hooks (loop thread) -------------------------------------------------

    def _stored(self, rating: dict[str, Any]) -> None:
        with self._press_lock:
            pressed_at, self._pressed_at = self._pressed_at, None
        self._on_stored(self, rating["rating_id"], pressed_at)
