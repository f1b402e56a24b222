"""The watcher keeps state for at most `[watch] max_devices` device ids. Beyond it (only
possible if the broker's ACL lets a client publish under other devices' ids) messages
from new ids are ignored, with one rate-limited WARNING naming the limit; the devices
already known are watched as before. 20,000 invented ids made each tick take 0.9 s."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from broker_bridge.watch.config import parse_watch_config
from broker_bridge.watch.model import BAD_BURST, EventSeen, StatusSeen, TelemetrySeen
from broker_bridge.watch.rules import DEFAULT_MAX_DEVICES, Watcher
from broker_bridge.watch.settings import Rules
from common.configschema import ConfigError
from tests.test_audit_watch_service import MONDAY_10, Clock, Running
from tests.test_watch_rules import DEVICE, OTHER, Hall, only


def test_new_ids_beyond_the_default_bound_are_ignored_and_ticks_stay_bounded() -> None:
    hall = Hall(Rules())
    for i in range(DEFAULT_MAX_DEVICES + 1000):
        hall.feed(TelemetrySeen(f"invented-{i}", 0, None, True, hall.now))
    assert len(hall.watcher.devices) == DEFAULT_MAX_DEVICES
    assert hall.watcher.devices_ignored == 1000
    started = time.perf_counter()
    hall.advance(1, step=1)
    assert time.perf_counter() - started < 2.0


def test_known_devices_keep_working_at_the_bound() -> None:
    hall = Hall(only(Rules(), "bad_burst"))
    hall.watcher.max_devices = 2
    hall.telemetry(DEVICE)
    hall.telemetry(OTHER)
    for i in range(50):
        hall.feed(EventSeen(f"invented-{i}", "serial_error", hall.now))
        hall.rate(1, device=f"invented-x{i}")
    assert sorted(hall.watcher.devices) == sorted([DEVICE, OTHER])
    assert hall.watcher.devices_ignored == 100
    for _ in range(3):
        hall.rate(1, device=DEVICE)
    assert [a.device_id for a in hall.raised(BAD_BURST)] == [DEVICE]
    # A device that leaves the fleet (retained status cleared) frees its place.
    hall.feed(StatusSeen(OTHER, None, hall.now))
    hall.telemetry("newcomer")
    assert "newcomer" in hall.watcher.devices


def test_a_state_with_more_devices_than_the_bound_keeps_the_first(tmp_path: Path) -> None:
    hall = Hall(only(Rules(), "bad_burst"))
    for device in ("a", "b", "c", "d"):
        for _ in range(3):
            hall.rate(1, device=device)
    assert len(hall.watcher.open) == 4
    snapshot = hall.watcher.snapshot()
    restored = Watcher(hall.watcher.rules, hall.calendar, snapshot=snapshot, max_devices=2)
    assert sorted(restored.devices) == ["a", "b"]
    assert sorted(a.device_id for a in restored.open.values()) == ["a", "b"]
    assert all(k.split("|")[1] in ("a", "b") for k in restored.snapshot()["last_raised"])
    assert restored.devices_ignored == 2


@pytest.mark.parametrize("value", [0, -1, 1_000_001, "many", 2.5])
def test_max_devices_is_validated(tmp_path: Path, value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_watch_config(tmp_path / "watch.toml", {"watch": {
            "state_file": str(tmp_path / "state.json"), "max_devices": value}})
    assert "[watch] max_devices" in str(caught.value)


def test_max_devices_default_and_setting(tmp_path: Path) -> None:
    def parsed(**watch: object) -> int:
        return parse_watch_config(tmp_path / "watch.toml", {"watch": {
            "state_file": str(tmp_path / "state.json"), **watch}}).watch.max_devices
    assert parsed() == DEFAULT_MAX_DEVICES == 5000
    assert parsed(max_devices=20000) == 20000


def test_the_service_warns_once_naming_the_limit(tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="hcp.watch")
    running = Running(tmp_path, Clock(MONDAY_10), max_devices=3)
    try:
        for device in ("W01", "W02", "W03"):
            running.link.deliver("telemetry", {"backlog": 0}, device=device)
        for i in range(200):
            running.link.deliver("telemetry", {"backlog": 0}, device=f"invented-{i}")
        running.link.deliver("telemetry", {"backlog": 99}, device="W02")
        running.settle()
        assert sorted(running.service.watcher.devices) == ["W01", "W02", "W03"]
        assert running.service.watcher.devices["W02"].backlog == 99
    finally:
        running.stop()
    warnings = [r.getMessage() for r in caplog.records if "max_devices" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "max_devices = 3" in warnings[0]
