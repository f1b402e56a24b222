"""`[input] touch_device` with a character no path can hold: refused by the config, and a
touch driver given one anyway reports the fault instead of its reader thread dying."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from common.configschema import ConfigError
from device.config import load_device_config
from device.ports import DriverStatus
from drivers.touch import TouchInput
from tests.support.device import device_config


class Clock:
    def monotonic(self) -> float:
        return time.monotonic()


def test_a_nul_in_the_touch_device_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "device.toml"
    path.write_text(device_config(tmp_path / "data", "loop://", input={
        "kind": "touch", "touch_device": "/dev/input/event0\x00",
        "zones": {str(level): [0, 0, 10, 10 + level] for level in range(1, 6)}}),
        encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_device_config(path)
    assert any("[input] touch_device" in p for p in caught.value.problems), caught.value


def test_a_touch_device_path_os_open_refuses_is_a_fault_not_a_dead_reader() -> None:
    """os.open raises ValueError (not OSError) for an embedded NUL: the reader thread
    died at once, silently: no key ever again, and no `driver_fault` to say so."""
    events: list[object] = []
    touch = TouchInput("/dev/input/event0\x00", {5: (0, 0, 10, 10)}, retry_s=0.05)
    touch.start(events.append, Clock())
    try:
        deadline = time.monotonic() + 5
        while not events and time.monotonic() < deadline:
            time.sleep(0.01)
        assert events and isinstance(events[0], DriverStatus)
        assert events[0].part == "keys" and events[0].error is not None
        assert touch._thread is not None and touch._thread.is_alive()   # still retrying
    finally:
        touch.close()
