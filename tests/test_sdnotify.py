"""Both daemons speak the systemd notify protocol to a fake systemd: the test binds the
datagram socket named by NOTIFY_SOCKET, starts the real `hcp-device` / `hcp-bridge`
with WATCHDOG_USEC set, and reads what arrives — READY=1, WATCHDOG=1 often enough that
systemd would never kill a healthy daemon, STOPPING=1 and a clean exit on SIGTERM.

WATCHDOG_PID is left empty: the daemon's pid is not known before it starts, and an
empty WATCHDOG_PID means "no restriction" to both daemons (as to sd_watchdog_enabled).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.bridge import BridgeProcess
from tests.support.device import DeviceProcess
from tests.support.mosquitto import Mosquitto
from tests.support.platform import RunningPlatform

ROOT = Path(__file__).resolve().parents[1]
# systemd kills a service whose pings are WATCHDOG_USEC apart; the daemons ping every
# WATCHDOG_USEC/2. Small enough for a quick test; large enough that a loaded 2-core
# machine's scheduling delays do not look like a missed ping (at 300 ms a CI run under
# extra load saw a 395 ms gap).
WATCHDOG_USEC = 1_000_000
WATCHDOG_S = WATCHDOG_USEC / 1e6
STOP_LIMIT_S = 5.0  # SPEC §2: stop cleanly within 5 s of SIGTERM


@dataclass
class FakeSystemd:
    """The receiving end of NOTIFY_SOCKET: every datagram, with its arrival time."""

    address: str  # as the daemon sees it: a path, or "@name" for the abstract namespace
    sock: socket.socket
    received: list[tuple[float, dict[str, str]]] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {"NOTIFY_SOCKET": self.address, "WATCHDOG_USEC": str(WATCHDOG_USEC),
                "WATCHDOG_PID": ""}

    def wait_for(self, key: str, value: str, timeout: float) -> float:
        """Read until a message with key=value arrives; return its arrival time."""
        deadline = time.monotonic() + timeout
        while True:
            for at, fields in self.received:
                if fields.get(key) == value:
                    return at
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {key}={value} within {timeout} s; got "
                                     f"{[f for _, f in self.received]}")
            self._read(remaining)

    def collect(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            self._read(remaining)

    def _read(self, timeout: float) -> None:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096)
        except TimeoutError:
            return
        fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
        self.received.append((time.monotonic(), fields))

    def pings_after(self, start: float) -> list[float]:
        return [at for at, f in self.received if f.get("WATCHDOG") == "1" and at >= start]


@pytest.fixture(params=["path", "abstract"])
def fake_systemd(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FakeSystemd]:
    """systemd uses a path (/run/systemd/notify); containers and tests often use an
    abstract socket ("@…"). Both daemons must handle both."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        address = str(tmp_path / "notify.sock")
        sock.bind(address)
    else:
        address = f"@hcp-test-notify-{uuid.uuid4().hex}"
        sock.bind("\0" + address[1:])
    yield FakeSystemd(address, sock)
    sock.close()


def assert_watchdog_kept(systemd: FakeSystemd, ready_at: float) -> None:
    """Between READY=1 and now, no gap in the pings would have let systemd's watchdog
    fire, and the pings come about every WATCHDOG_USEC/2 (not a busy loop)."""
    pings = systemd.pings_after(ready_at)
    span = time.monotonic() - ready_at
    assert len(pings) >= span / WATCHDOG_S, f"only {len(pings)} pings in {span:.2f} s"
    assert len(pings) <= 3 * span / (WATCHDOG_S / 2) + 2, f"{len(pings)} pings: a busy loop"
    times = [ready_at, *pings, time.monotonic()]
    worst = max(b - a for a, b in zip(times, times[1:], strict=False))
    assert worst < WATCHDOG_S, f"{worst:.3f} s without a ping: systemd would kill it"


def test_device_notifies_ready_pings_watchdog_and_stops(tmp_path: Path,
                                                        fake_systemd: FakeSystemd) -> None:
    device = DeviceProcess(tmp_path / "device", env=fake_systemd.env)
    try:
        device.start()
        ready_at = fake_systemd.wait_for("READY", "1", timeout=10)
        # Pings keep coming while the broker is unreachable (the device config points at
        # a port nobody listens on) and while a citizen rates: neither blocks the loop.
        fake_systemd.collect(3 * WATCHDOG_S)
        assert device.sim is not None
        device.sim.press(5)
        assert device.sim.wait_screen("thanks"), device.log()
        fake_systemd.collect(3 * WATCHDOG_S)
        assert_watchdog_kept(fake_systemd, ready_at)
        assert not any("STOPPING" in f for _, f in fake_systemd.received)

        assert device.proc is not None
        sent = time.monotonic()
        device.proc.send_signal(signal.SIGTERM)
        fake_systemd.wait_for("STOPPING", "1", timeout=STOP_LIMIT_S)
        assert device.proc.wait(STOP_LIMIT_S) == 0, device.log()
        assert time.monotonic() - sent < STOP_LIMIT_S
    finally:
        device.close()


def test_bridge_notifies_ready_pings_watchdog_and_stops(
        tmp_path: Path, fake_systemd: FakeSystemd, mosquitto: Mosquitto,
        platform: RunningPlatform) -> None:
    with BridgeProcess(tmp_path / "bridge", mosquitto, platform.url,
                       env=fake_systemd.env) as bridge:
        bridge.start(wait_healthy=False)
        ready_at = fake_systemd.wait_for("READY", "1", timeout=10)
        fake_systemd.collect(6 * WATCHDOG_S)
        assert_watchdog_kept(fake_systemd, ready_at)

        took = bridge.terminate(timeout=STOP_LIMIT_S)
        fake_systemd.wait_for("STOPPING", "1", timeout=0.1)
        assert bridge.returncode == 0, bridge.log_text()
        assert took < STOP_LIMIT_S


def test_no_watchdog_pings_for_another_process() -> None:
    """WATCHDOG_PID names the process systemd watches; a child that inherits the
    variables (a helper the daemon starts, or a shell) must not ping for it."""
    code = "from common.sdnotify import watchdog_interval; print(watchdog_interval())"
    def interval(pid: str) -> str:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "WATCHDOG_USEC": "30000000",
               "WATCHDOG_PID": pid}
        done = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT,
                              capture_output=True, text=True, check=True)
        return done.stdout.strip()
    assert interval(str(os.getpid())) == "None"  # the test runner is not the daemon
    assert interval("") == "15.0"
