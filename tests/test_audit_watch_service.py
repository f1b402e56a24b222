"""Audit of the watcher's service loop (broker_bridge/watch/service.py) with a fake
broker link: what a damaged state file, a stepped clock or a failing publish do to it."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from broker_bridge.mqtt_link import Incoming, LinkEvent, LinkUp
from broker_bridge.watch.config import parse_watch_config
from broker_bridge.watch.service import WatchService
from tests.test_watch_rules import DEVICE, local

MONDAY_10 = local(23, 10)


class FakeLink:
    def __init__(self, mqtt: Any, subscriptions: Sequence[tuple[str, int]],
                 sink: Callable[[LinkEvent], None], _acks: Any) -> None:
        self.sink = sink
        self.published: list[dict[str, Any]] = []
        self.healthy = False

    def start(self) -> None:
        self.healthy = True
        self.sink(LinkUp(1, False))

    def stop(self, timeout: float = 1.5) -> None:
        self.healthy = False

    def ack(self, generation: int, mid: int, qos: int) -> bool:
        return True

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False
                ) -> None:
        self.published.append(json.loads(payload))

    def deliver(self, kind: str, body: Any, device: str = DEVICE) -> None:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.sink(Incoming(1, f"hcp/v1/{device}/{kind}", payload, 0, 0, False))


class Clock:
    """A wall clock and a monotonic one that move together, unless the wall is stepped."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.mono = 1000.0

    def __call__(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.mono


def config(tmp_path: Path, **watch: Any) -> Any:
    return parse_watch_config(tmp_path / "watch.toml", {
        "watch": {"state_file": str(tmp_path / "state.json"), **watch},
        "rules": {"silent": {"after_min": 15.0}},
        "halls": {"HG01": {"open": ["mon-fri 08:30-17:30"]}},
    })


class Running:
    def __init__(self, tmp_path: Path, clock: Clock, steps: bool = False,
                 **watch: Any) -> None:
        self.clock = clock
        self.service = WatchService(config(tmp_path, **watch), clock=clock,
                                    link_factory=FakeLink, tick_s=0.01,
                                    monotonic=clock.monotonic if steps else None)
        self.link: FakeLink = self.service.link  # type: ignore[assignment]
        self.thread = threading.Thread(target=self.service.run, daemon=True)
        self.thread.start()
        self.settle()

    def settle(self) -> None:
        ticks = self.service.ticks
        deadline = time.monotonic() + 5
        while self.service.ticks < ticks + 2:
            assert self.thread.is_alive(), "the watcher's loop ended"
            assert time.monotonic() < deadline, "no ticks"
            time.sleep(0.005)

    def advance(self, seconds: float, step: float = 60.0) -> None:
        end = self.clock.now + seconds
        while self.clock.now < end:
            moved = min(end, self.clock.now + step) - self.clock.now
            self.clock.now += moved
            self.clock.mono += moved
            self.settle()

    def telemetry(self) -> None:
        """Telemetry from the device, handled at the current time."""
        self.link.deliver("telemetry", {"backlog": 0, "clock_synced": True})
        self.settle()

    def step_clock(self, seconds: float) -> None:
        """NTP steps the wall clock; a second passes."""
        self.clock.now += seconds + 1
        self.clock.mono += 1
        self.settle()

    def alerts(self, kind: str, resolved: bool) -> list[dict[str, Any]]:
        return [a for a in self.link.published
                if a["kind"] == kind and a["resolved"] is resolved]

    def stop(self) -> None:
        self.service.request_stop()
        self.thread.join(5)


def test_a_state_file_with_times_out_of_range_does_not_stop_the_watcher(
        tmp_path: Path) -> None:
    """pending_since, last_raised and an open alert's times far beyond 2100 (a hand
    edit, a damaged file): alert_payload of them raised at the tick, which is not
    contained, so the loop ended, and the state saved on the way out did it again at
    the next start."""
    key = f"device_silent|{DEVICE}|"
    (tmp_path / "state.json").write_text(json.dumps({
        "version": 1, "devices": {DEVICE: {"first_heard": MONDAY_10 - 60}},
        "open": {f"backlog|{DEVICE}|": {
            "alert_id": "a" * 32, "kind": "backlog", "condition": "", "severity": "warning",
            "device_id": DEVICE, "hall_id": "HG01", "window_id": "W03",
            "region_code": "421100", "evidence": {}, "first_seen": 1e300,
            "raised_at": 1e300, "resolved_at": None}},
        "last_raised": {}, "pending_since": {key: 1e300}}))
    running = Running(tmp_path, Clock(MONDAY_10))
    try:
        assert running.service.watcher.open == {}  # the damaged alert is not kept
        running.advance(60)
        running.telemetry()
        running.advance(20 * 60)  # silent, pending since 1e300, is raised
        assert running.thread.is_alive()
        kinds = {(a["kind"], a["resolved"]) for a in running.link.published}
        assert kinds == {("device_silent", False)}
    finally:
        running.stop()


def test_a_tick_that_raises_does_not_end_the_loop(tmp_path: Path,
                                                  monkeypatch: Any) -> None:
    from broker_bridge.watch.model import Tick
    from broker_bridge.watch.rules import Watcher

    real = Watcher.handle
    failures = [3]

    def handle(self: Watcher, event: Any) -> Any:
        if isinstance(event, Tick) and failures[0]:
            failures[0] -= 1
            raise ArithmeticError("injected")
        return real(self, event)

    monkeypatch.setattr(Watcher, "handle", handle)
    running = Running(tmp_path, Clock(MONDAY_10))
    try:
        running.telemetry()
        running.advance(20 * 60)
        assert running.thread.is_alive() and running.service.failures == 3
        assert [a["kind"] for a in running.link.published] == ["device_silent"]
    finally:
        running.stop()


def test_a_clock_stepped_forward_is_no_silence(tmp_path: Path) -> None:
    """The watcher started before NTP had set the clock (a PC whose RTC is behind):
    when NTP steps it forward by two hours, every device's last telemetry looked two
    hours old, and all of them were reported silent at once (then resolved)."""
    running = Running(tmp_path, Clock(MONDAY_10 - 2 * 3600), steps=True)
    try:
        for _ in range(3):
            running.telemetry()
            running.advance(60, step=20)
        running.step_clock(2 * 3600)  # 08:03 -> 10:03 (open since 08:30)
        for _ in range(5):
            running.telemetry()
            running.advance(60, step=20)
        assert running.alerts("device_silent", False) == []
        running.advance(16 * 60)  # now it really is silent
        assert len(running.alerts("device_silent", False)) == 1
    finally:
        running.stop()


def test_a_clock_stepped_back_does_not_stretch_a_cooldown(tmp_path: Path) -> None:
    """The clock was a day ahead when an alert was raised; NTP steps it back. The
    cooldown measured against the raise "tomorrow" held the next alert back for a day
    and an hour instead of an hour."""
    running = Running(tmp_path, Clock(MONDAY_10 + 86400), steps=True)  # Tuesday
    try:
        running.telemetry()
        running.advance(16 * 60)
        assert len(running.alerts("device_silent", False)) == 1
        running.telemetry()
        running.advance(60)
        assert len(running.alerts("device_silent", True)) == 1
        running.step_clock(-86400)  # back to Monday
        running.telemetry()
        running.advance(80 * 60)  # silent again, and the hour's cooldown is over
        assert len(running.alerts("device_silent", False)) == 2
    finally:
        running.stop()
