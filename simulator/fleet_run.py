"""The fleet itself: N virtual evaluators in this process, pressed at a total rate, then
drained until every rating is receipted (or a timeout), then stopped cleanly."""

from __future__ import annotations

import logging
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device.config import MqttSection
from device.core.machine import REASON_KEYS, SKIP_KEY
from simulator.fleet_device import FleetDevice, fleet_config, fleet_ui
from simulator.fleet_stats import STATUSES, FleetStats, LatencyHistogram, Progress

log = logging.getLogger("hcp.fleet")

LEVELS = (5, 4, 3, 2, 1)
CALLED_OFF = "called off before sending"
STOP_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class FleetOptions:
    devices: int = 10
    first_device: int = 0              # ids count from first_device + 1 (worker processes)
    rate: float = 10.0                 # ratings per second, across the whole fleet
    count: int | None = None           # stop sending after this many ratings …
    duration_s: float | None = None    # … or after this long, whichever comes first
    host: str = "127.0.0.1"
    port: int = 1883
    prefix: str = "hcp/v1"
    device_prefix: str = "FLEET"
    region_code: str = "000000"
    hall_id: str = "FLEET"
    data_dir: Path | None = None       # None: a temporary directory, removed at the end
    drain_timeout_s: float = 60.0
    connect_timeout_s: float = 30.0
    resend_after_s: float = 300.0
    max_inflight: int = 20
    keepalive_s: int = 30
    telemetry_s: float = 60.0
    thanks_s: float = 0.1
    poisson: bool = False
    seed: int | None = None
    username: str = ""
    password_file: str = ""
    protocol: str = "5"                # the devices' [mqtt] protocol: "5" or "3.1.1"


@dataclass
class FleetResult:
    """What the run ended with; `summary()` is the machine-readable form (`--json`)."""

    options: FleetOptions
    connected: int = 0
    connect_s: float = 0.0
    send_s: float = 0.0
    drain_s: float = 0.0
    sent: int = 0
    receipted: int = 0
    pending: int = 0
    carried_over: int = 0
    statuses: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    ignored_presses: int = 0
    device_errors: list[str] = field(default_factory=list)
    backlog_left: int = 0
    interrupted: bool = False
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return (self.problem is None and not self.interrupted and self.pending == 0
                and self.backlog_left == 0 and not self.device_errors
                and self.statuses.get("rejected", 0) == 0)

    @property
    def achieved_rate(self) -> float:
        return self.sent / self.send_s if self.send_s > 0 else 0.0

    @property
    def latency_ms(self) -> dict[str, float | None]:
        """p50, p90, p99, max and mean of key press → receipt, in milliseconds."""
        return self.latency.summary()

    def summary(self) -> dict[str, Any]:
        o = self.options
        return {
            "ok": self.ok,
            "devices": o.devices,
            "connected": self.connected,
            "rate_asked": o.rate,
            "rate_achieved": round(self.achieved_rate, 1),
            "sent": self.sent,
            "receipted": self.receipted,
            "pending": self.pending,
            "statuses": self.statuses,
            "latency_ms": self.latency_ms,
            "ignored_presses": self.ignored_presses,
            "carried_over": self.carried_over,
            "backlog_left": self.backlog_left,
            "connect_s": round(self.connect_s, 2),
            "send_s": round(self.send_s, 2),
            "drain_s": round(self.drain_s, 2),
            "device_errors": self.device_errors,
            "interrupted": self.interrupted,
            "problem": self.problem,
        }


ProgressSink = Callable[[str, Progress, float, int], None]  # phase, counts, rate, connected


class Fleet:
    def __init__(self, options: FleetOptions, on_progress: ProgressSink | None = None,
                 stats: FleetStats | None = None) -> None:
        if options.devices < 1:
            raise ValueError("a fleet needs at least one device")
        if options.rate <= 0:
            raise ValueError("the rate must be above 0")
        self.options = options
        self.on_progress = on_progress
        self.stats = stats or FleetStats()
        self.devices: list[FleetDevice] = []
        self._random = random.Random(options.seed)
        self._next_device = 0
        self._temp_dir: Path | None = None
        self._last_progress = 0.0
        self._last_sent = 0

    # --- building -------------------------------------------------------------------

    def device_id(self, index: int) -> str:
        return f"{self.options.device_prefix}-{index + 1:04d}"

    def _build(self, data_dir: Path) -> None:
        o = self.options
        mqtt = MqttSection(
            host=o.host, port=o.port, prefix=o.prefix, keepalive_s=o.keepalive_s,
            resend_after_s=o.resend_after_s, telemetry_s=o.telemetry_s, protocol=o.protocol,
            session_expiry_s=86400, max_inflight=o.max_inflight, tls=False, ca_file="",
            client_cert="", client_key="", username=o.username,
            password_file=o.password_file)
        for i in range(o.first_device, o.first_device + o.devices):
            device_id = self.device_id(i)
            ui = fleet_ui(f"{i + 1:02d}号窗口 压力测试", o.thanks_s)
            config = fleet_config(device_id, o.region_code, o.hall_id, f"W{i + 1:04d}",
                                  data_dir / device_id, mqtt, ui)
            self.devices.append(FleetDevice(config, self._stored, self._receipted))

    def _stored(self, _device: FleetDevice, rating_id: str, pressed_at: float | None) -> None:
        self.stats.stored(rating_id, pressed_at)

    def _receipted(self, _device: FleetDevice, receipts: dict[str, str]) -> None:
        self.stats.receipted_now(receipts, time.monotonic())

    # --- running --------------------------------------------------------------------

    def run(self, gate: Callable[[FleetResult], bool] | None = None) -> FleetResult:
        """Start every device, wait until they are connected, then — if `gate` (given
        the result so far) agrees — press at the rate and drain; stop them all."""
        o = self.options
        result = FleetResult(o)
        data_dir = o.data_dir
        if data_dir is None:
            data_dir = self._temp_dir = Path(tempfile.mkdtemp(prefix="hcp-fleet-"))
        try:
            self._build(data_dir)
            try:
                self._start(result)
                if result.problem is None and gate is not None and not gate(result):
                    result.problem = CALLED_OFF
                if result.problem is None:
                    self._send(result)
                    self._drain(result)
            except KeyboardInterrupt:
                result.interrupted = True
            finally:
                self._stop(result)
        finally:
            if self._temp_dir is not None:
                shutil.rmtree(self._temp_dir, ignore_errors=True)
        p = self.stats.progress()
        result.sent, result.receipted, result.pending = p.sent, p.receipted, p.pending
        result.carried_over = p.carried_over
        result.statuses = self.stats.statuses()
        result.latency = self.stats.latency_copy()
        result.ignored_presses = sum(d.ignored for d in self.devices)
        result.device_errors = [f"{d.device_id}: {d.error!r}" for d in self.devices
                                if d.error is not None]
        return result

    def _start(self, result: FleetResult) -> None:
        o = self.options
        started = time.monotonic()
        for device in self.devices:
            device.start()
        deadline = started + o.connect_timeout_s
        for device in self.devices:
            device.wait_ready(max(0.0, deadline - time.monotonic()))
        while time.monotonic() < deadline:
            result.connected = sum(d.connected for d in self.devices)
            if result.connected == len(self.devices):
                break
            self._maybe_report("connecting", time.monotonic())
            time.sleep(0.05)
        result.connected = sum(d.connected for d in self.devices)
        result.connect_s = time.monotonic() - started
        broken = [d for d in self.devices if d.error is not None]
        if broken:
            result.problem = f"{len(broken)} device(s) failed to start"
        elif result.connected < len(self.devices):
            result.problem = (f"only {result.connected} of {len(self.devices)} devices "
                              f"connected to {o.host}:{o.port} within {o.connect_timeout_s:g} s")

    def _send(self, result: FleetResult) -> None:
        o = self.options
        started = time.monotonic()
        end = started + o.duration_s if o.duration_s is not None else None
        total = o.count
        if total is None and end is None:
            total = 0
        sent = 0
        next_at = started
        try:
            while total is None or sent < total:
                now = time.monotonic()
                if end is not None and now >= end:
                    break
                self._maybe_report("sending", now)
                if now < next_at:
                    time.sleep(min(next_at - now, 0.05))
                    continue
                device = self._ready_device(now)
                if device is None:
                    time.sleep(0.001)   # every device busy: the rate is beyond the fleet
                    continue
                level = self._random.choice(LEVELS)
                reason = self._random.choice(REASON_KEYS + (SKIP_KEY,))
                if device.rate(level, reason) is not None:
                    sent += 1
                next_at += (self._random.expovariate(o.rate) if o.poisson else 1.0 / o.rate)
        finally:
            result.send_s = time.monotonic() - started

    def _ready_device(self, now: float) -> FleetDevice | None:
        """The next device in turn that can take a press: round robin spreads the rate."""
        n = len(self.devices)
        for step in range(n):
            device = self.devices[(self._next_device + step) % n]
            if device.ready_for_press(now):
                self._next_device = (self._next_device + step + 1) % n
                return device
        return None

    def _drain(self, result: FleetResult) -> None:
        started = time.monotonic()
        deadline = started + self.options.drain_timeout_s
        try:
            while True:
                now = time.monotonic()
                if self._settled() or now >= deadline:
                    break
                self._maybe_report("draining", now)
                time.sleep(0.02)
        finally:
            result.drain_s = time.monotonic() - started

    def _settled(self) -> bool:
        """Every press stored, every stored rating receipted, every outbox empty."""
        now = time.monotonic()
        if self.stats.progress().pending:
            return False
        for device in self.devices:
            if device.backlog or not device.ready_for_press(now):
                return False
        return True

    def _stop(self, result: FleetResult) -> None:
        for device in self.devices:
            device.request_stop()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for device in self.devices:
            if not device.join(max(0.0, deadline - time.monotonic())):
                log.warning("device %s did not stop in time", device.device_id)
        result.backlog_left = sum(d.backlog for d in self.devices)

    # --- progress ---------------------------------------------------------------------

    def _maybe_report(self, phase: str, now: float) -> None:
        if now - self._last_progress >= 1.0:
            self._report(phase, sum(d.connected for d in self.devices), now)

    def _report(self, phase: str, connected: int, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        progress = self.stats.progress()
        elapsed = now - self._last_progress if self._last_progress else 0.0
        rate = (progress.sent - self._last_sent) / elapsed if elapsed > 0 else 0.0
        self._last_progress, self._last_sent = now, progress.sent
        if self.on_progress is not None:
            self.on_progress(phase, progress, rate, connected)
