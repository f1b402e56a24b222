"""Run the real `hcp-device run` as a subprocess with sim keys and screen (SPEC §8), a
window system on its serial port, and a systemd notify socket to time READY; press keys
and time how long the thanks screen takes to come back."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.context import REPO
from bench.ratings import DEVICE_ID
from simulator.children import die_with_parent
from simulator.localbroker import free_port
from simulator.simclient import SimClient
from simulator.tomlfile import toml_text
from simulator.windowlink import WindowServer

# A device that takes a rating as often as its thanks screen allows: 0.1 s is the
# shortest thanks the config accepts; no lockout, spontaneous ratings at any interval.
FAST_UI = {"thanks_s": 0.1, "lockout_s": 0.0, "allow_spontaneous": True,
           "spontaneous_min_interval_s": 0.0}






class ScreenWatch:
    """Every screen event the sim socket sends, time-stamped on arrival (in the reader
    thread, so the stamp does not include a hand-off to the waiting thread)."""

    def __init__(self, sim: SimClient) -> None:
        self._cond = threading.Condition()
        self.count = 0
        self.name = ""
        self.at = 0.0
        sim.listeners.append(self._on_event)
        if sim.screen is not None:  # the current screen, sent when the client connected
            self._on_event(sim.screen)

    def _on_event(self, event: dict[str, Any]) -> None:
        if event.get("ev") != "screen":
            return
        at = time.perf_counter()
        with self._cond:
            self.count += 1
            self.name, self.at = str(event.get("screen")), at
            self._cond.notify_all()

    def wait(self, name: str, after: int, timeout: float) -> float | None:
        """perf_counter time of the first `name` screen after the `after`-th event."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not (self.count > after and self.name == name):
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            return self.at


class DeviceProcess:
    """One `hcp-device run` with sim drivers, its data in `workdir/data`."""

    def __init__(self, workdir: Path, mqtt_port: int | None = None,
                 device_id: str = DEVICE_ID, log_level: str = "INFO") -> None:
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.window = WindowServer()
        self.config_path = workdir / "device.toml"
        self.log_path = workdir / "device.log"
        self.log_level = log_level
        # Without a broker: a port nobody listens on, so the device works offline and
        # retries quietly, like a device whose network is down.
        self.config_path.write_text(toml_text({
            "device": {"id": device_id, "region_code": "421100", "hall_id": "HG01",
                       "window_id": device_id.rsplit("-", 1)[-1],
                       "window_name": "03号窗口 不动产登记", "data_dir": str(self.data_dir)},
            "serial": {"port": self.window.url, "baudrate": 115200, "require_crc": True},
            "input": {"kind": "sim"},
            "display": {"kind": "sim"},
            "mqtt": {"host": "127.0.0.1", "port": mqtt_port or free_port()},
            "ui": FAST_UI,
            "clock": {"assume_synced": True},
        }), encoding="utf-8")
        self.proc: subprocess.Popen[bytes] | None = None
        self.sim: SimClient | None = None
        self.screens: ScreenWatch | None = None
        self._notify: socket.socket | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 30.0) -> float:
        """Start the daemon; seconds from the exec to its READY=1 notification."""
        notify_path = self.workdir / "notify.sock"
        notify_path.unlink(missing_ok=True)
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.bind(str(notify_path))
        env = {**os.environ, "PYTHONPATH": str(REPO), "NOTIFY_SOCKET": str(notify_path)}
        env.pop("WATCHDOG_USEC", None)
        with self.log_path.open("ab") as log:
            started = time.monotonic()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "device.cli", "run", "--config", str(self.config_path),
                 "--log-level", self.log_level],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, cwd=REPO,
                preexec_fn=die_with_parent)
        ready = self._wait_ready(started + timeout)
        self.sim = SimClient(self.data_dir / "sim.sock", timeout=5.0)
        self.screens = ScreenWatch(self.sim)
        # The serial link must be up too, or the device is not what a window would see.
        if not self.window.wait_connected(10.0):
            raise RuntimeError(f"hcp-device did not open its serial link:\n{self.log()}")
        return ready - started

    def _wait_ready(self, deadline: float) -> float:
        assert self._notify is not None and self.proc is not None
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise RuntimeError(f"hcp-device sent no READY=1 (exit status "
                                   f"{self.proc.poll()}):\n{self.log()}")
            self._notify.settimeout(min(left, 0.5))
            try:
                message = self._notify.recv(4096)
            except TimeoutError:
                continue
            if b"READY=1" in message.split(b"\n"):
                return time.monotonic()

    def press(self, level: int = 5, timeout: float = 5.0) -> float:
        """Press a key on the idle screen (a spontaneous rating); seconds until the thanks
        screen arrived back on the sim socket. Levels 3-5 go straight to thanks."""
        assert self.sim is not None and self.screens is not None
        seen = self.screens.count
        started = time.perf_counter()
        self.sim.press(level)
        thanked = self.screens.wait("thanks", seen, timeout)
        if thanked is None:
            raise RuntimeError(f"no thanks screen within {timeout} s of a press:\n{self.log()}")
        return thanked - started

    def wait_idle(self, timeout: float = 5.0) -> None:
        assert self.screens is not None
        if self.screens.name == "idle":
            return
        if self.screens.wait("idle", self.screens.count - 1, timeout) is None:
            raise RuntimeError(f"the device did not come back to idle:\n{self.log()}")

    def status(self, timeout: float = 5.0) -> dict[str, Any]:
        """The sim socket's status answer (backlog, broker, receipts, …)."""
        return self._status(timeout)[0]

    def status_round_trip(self) -> float:
        """Seconds for a status request and its answer: the sim socket's floor, without
        the daemon's loop, storage or display."""
        started = time.perf_counter()
        return self._status(5.0)[1] - started

    def _status(self, timeout: float) -> tuple[dict[str, Any], float]:
        sim = self.sim
        assert sim is not None
        answered = threading.Event()
        answer: list[tuple[dict[str, Any], float]] = []

        def on_event(event: dict[str, Any]) -> None:
            if event.get("ev") == "status" and not answered.is_set():
                answer.append((event, time.perf_counter()))
                answered.set()

        sim.listeners.append(on_event)
        try:
            sim.request_status()
            if not answered.wait(timeout):
                raise RuntimeError("no status answer from the sim socket")
        finally:
            sim.listeners.remove(on_event)
        return answer[0]

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM and wait (SIGKILL if it does not stop); the exit status."""
        if self.sim is not None:
            self.sim.close()
            self.sim = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._notify is not None:
            self._notify.close()
            self._notify = None
        return None if self.proc is None else self.proc.returncode

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        self.window.close()
