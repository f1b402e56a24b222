"""The real daemon built in-process with fake drivers, a fake broker link and a FakeClock:
the loop runs in virtual time (the clock jumps to the next deadline when nothing is
queued, like trio's MockClock), with no subprocess, thread or sleep.

The fakes record what they were given (screens shown, frames written, messages
published) and fail on demand (`fail = "reason"` makes the next calls raise
DriverError), so a test asserts on what a citizen, the window system or the platform
would have seen.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.serial_codec import encode_frame
from device.clock import FakeClock
from device.config import load_device_config
from device.core.model import Feedback, KeyDown, KeyUp, Screen
from device.daemon import Daemon
from device.mqtt_events import MqttDown, MqttMessage, MqttPubAck, MqttUp
from device.outbox import Outbox
from device.ports import DriverError, Drivers, Emit, LineSink, MonotonicClock
from tests.support.device import device_config


class FakeDisplay:
    def __init__(self) -> None:
        self.screens: list[Screen] = []   # screens the panel accepted
        self.attempts = 0
        self.fail: str | None = None       # set: every show() raises DriverError
        self.closed = 0

    def show(self, screen: Screen) -> None:
        self.attempts += 1
        if self.fail is not None:
            raise DriverError(self.fail)
        self.screens.append(screen)

    @property
    def current(self) -> str | None:
        return self.screens[-1].name if self.screens else None

    def close(self) -> None:
        self.closed += 1


class FakeIndicators:
    def __init__(self) -> None:
        self.played: list[Feedback] = []
        self.fail: str | None = None
        self.closed = 0

    def feedback(self, feedback: Feedback) -> None:
        if self.fail is not None:
            raise DriverError(self.fail)
        self.played.append(feedback)

    def close(self) -> None:
        self.closed += 1


class FakeKeys:
    def __init__(self) -> None:
        self.emit: Emit | None = None
        self.clock: MonotonicClock | None = None
        self.closed = 0

    def start(self, emit: Emit, clock: MonotonicClock) -> None:
        self.emit, self.clock = emit, clock

    def press(self, level: int) -> None:
        assert self.emit is not None and self.clock is not None
        t = self.clock.monotonic()
        self.emit(KeyDown(level, t, input="sim"))
        self.emit(KeyUp(level, t))

    def close(self) -> None:
        self.closed += 1


class FakeSerial:
    """The window system's end of the serial link."""

    def __init__(self) -> None:
        self.on_line: LineSink | None = None
        self.on_open: Callable[[bool], None] | None = None
        self.is_open = False
        self.fail: str | None = None
        self.written: list[dict[str, Any]] = []
        self.seq = 0
        self.closed = 0

    def start(self, on_line: LineSink, on_open: Callable[[bool], None]) -> None:
        self.on_line, self.on_open = on_line, on_open

    def send(self, data: bytes) -> bool:
        if not self.is_open:
            return False
        if self.fail is not None:
            raise DriverError(self.fail)
        body = data.rstrip(b"\n").rsplit(b"*", 1)[0]
        self.written.append(json.loads(body))
        return True

    def close(self) -> None:
        self.closed += 1

    # the window system's side

    def plug(self, is_open: bool = True) -> None:
        assert self.on_open is not None
        self.is_open = is_open
        self.on_open(is_open)

    def send_frame(self, type: str, **fields: Any) -> int:
        assert self.on_line is not None
        self.seq += 1
        self.on_line(encode_frame({"type": type, "seq": self.seq, **fields}).rstrip(b"\n"))
        return self.seq

    def send_raw(self, line: bytes) -> None:
        assert self.on_line is not None
        self.on_line(line)

    def frames(self, type: str) -> list[dict[str, Any]]:
        return [f for f in self.written if f.get("type") == type]


class FakeLink:
    """The broker link: records publishes; the test plays the broker's side."""

    def __init__(self) -> None:
        self.connects = 0
        self.connected = False
        self.published: list[tuple[str, dict[str, Any], int, int | None]] = []
        self.statuses: list[dict[str, Any]] = []   # every status_fields call
        self.started = self.stopped = False
        self.acked: set[int] = set()

    def start(self) -> None:
        self.started = True

    def publish(self, kind: str, payload: dict[str, Any], qos: int = 1, retain: bool = False,
                ticket: int | None = None) -> None:
        self.published.append((kind, payload, qos, ticket))

    def status_fields(self, fields: dict[str, Any]) -> None:
        self.statuses.append(dict(fields))

    def stop(self, timeout: float = 2.0) -> None:
        self.stopped = True

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [p for k, p, _, _ in self.published if k == kind]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [p for p in self.of("event") if p["event"] == name]


@dataclass
class Device:
    """One daemon in virtual time. `run(s)` lets `s` virtual seconds pass."""

    workdir: Path
    ui: dict[str, Any] = field(default_factory=dict)
    clock: FakeClock = field(default_factory=FakeClock)
    mqtt: bool = True
    voice: Any = None                 # a Voice (tests/test_voice_daemon.py's recording one)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.workdir / "data"
        path = self.workdir / "device.toml"
        path.write_text(device_config(self.data_dir, "loop://",
                                      ui={"thanks_s": 0.3, "lockout_s": 0.0, **self.ui}),
                        encoding="utf-8")
        self.config = load_device_config(path)
        self.display = FakeDisplay()
        self.indicators = FakeIndicators()
        self.keys = FakeKeys()
        self.serial = FakeSerial()
        self.link = FakeLink()
        self.daemon = Daemon(self.config, Drivers(self.keys, self.display, self.indicators,
                                                  self.serial, voice=self.voice),
                             clock=self.clock, link=self.link if self.mqtt else None,
                             mqtt=self.mqtt)
        self.stopped = False

    def start(self, plug: bool = True) -> Device:
        self.daemon.start()
        if plug:
            self.serial.plug()
        self.run(0)
        return self

    def run(self, seconds: float) -> None:
        assert self.daemon.serve(until=self.clock.now + seconds)

    def stop(self) -> None:
        self.daemon.request_stop("test")
        assert not self.daemon.serve()
        self.daemon.shutdown()
        self.stopped = True

    # the broker's side

    def broker_up(self) -> None:
        self.link.connects += 1
        self.daemon.emit(MqttUp(False, self.clock.now))
        self.run(0)

    def broker_down(self) -> None:
        self.daemon.emit(MqttDown("test", self.clock.now))
        self.run(0)

    def puback(self) -> None:
        """The broker answers every publish made so far (a PUBACK is not a receipt)."""
        for ticket in [t for *_, t in self.link.published if t is not None]:
            if ticket not in self.link.acked:
                self.link.acked.add(ticket)
                self.daemon.emit(MqttPubAck(ticket, True, "Success", self.clock.now))
        self.run(0)

    def message(self, kind: str, payload: bytes | dict[str, Any], retain: bool = False) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.daemon.emit(MqttMessage(kind, data, retain, self.clock.now))
        self.run(0)

    # what happened

    def rate(self, case_id: str, level: int) -> dict[str, Any]:
        """The window completes `case_id`, the citizen presses `level`: its `rated` frame."""
        self.serial.send_frame("case_completed", case_id=case_id, service_name="不动产登记")
        self.run(0.1)
        assert self.display.current == "prompt", self.display.current
        self.keys.press(level)
        if level <= 2:
            self.run(0.1)
            self.keys.press(1)   # skip the reasons
        self.run(0.1)
        assert self.display.current == "thanks", self.display.current
        self.run(0.5)            # thanks_s = 0.3: back to idle
        rated = [f for f in self.serial.frames("rated") if f["case_id"] == case_id]
        assert rated, f"no rated frame for {case_id}: {self.serial.written}"
        return rated[-1]

    def pending(self) -> list[dict[str, Any]]:
        """The ratings in the outbox (the daemon must be stopped)."""
        assert self.stopped
        outbox = Outbox(self.data_dir)
        outbox.open()
        try:
            return list(outbox.pending())
        finally:
            outbox.close()
