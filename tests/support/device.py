"""Run the real `hcp-device` daemon as a subprocess, with sim keys and screen, the test
playing the window system over `socket://` and (optionally) a private broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulator.simclient import SimClient
from simulator.tomlfile import toml_text
from simulator.windowlink import WindowServer
from tests.support.mosquitto import free_port

ROOT = Path(__file__).resolve().parents[2]
DEVICE_ID = "421100-HG01-W03"




def device_config(data_dir: Path, serial_url: str, *, device_id: str = DEVICE_ID,
                  mqtt_port: int | None = None, **sections: dict[str, Any]) -> str:
    """A device TOML with sim input and display; `sections` override or add keys."""
    conf: dict[str, dict[str, Any]] = {
        "device": {"id": device_id, "region_code": "421100", "hall_id": "HG01",
                   "window_id": device_id.rsplit("-", 1)[-1],
                   "window_name": "03号窗口 不动产登记", "data_dir": str(data_dir)},
        "serial": {"port": serial_url, "baudrate": 115200, "require_crc": True,
                   "reopen_s": 0.2},
        "input": {"kind": "sim"},
        "display": {"kind": "sim"},
        # A port nobody listens on unless the test brings a broker: the device must
        # work offline, retrying quietly.
        "mqtt": {"host": "127.0.0.1", "port": mqtt_port or free_port()},
        "ui": {"thanks_s": 0.3, "lockout_s": 0.0},
        "clock": {"assume_synced": True},
    }
    for name, keys in sections.items():
        conf.setdefault(name, {}).update(keys)
    return toml_text(conf)


@dataclass
class DeviceProcess:
    """One daemon under test. `start()` waits until its sim socket answers."""

    workdir: Path
    window: WindowServer | None = None
    mqtt_port: int | None = None
    device_id: str = DEVICE_ID
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Extra environment for the daemon (e.g. NOTIFY_SOCKET and WATCHDOG_USEC to play
    # systemd); applied after NOTIFY_SOCKET is removed from the inherited one.
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    sim: SimClient | None = None
    starts: int = 0
    hello: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.window is None:
            self.window = WindowServer()
        self.data_dir = self.workdir / "data"
        self.config_path = self.workdir / "device.toml"
        self.log_path = self.workdir / "device.log"
        self.write_config()

    def write_config(self) -> None:
        assert self.window is not None
        self.config_path.write_text(device_config(
            self.data_dir, self.window.url, device_id=self.device_id, mqtt_port=self.mqtt_port,
            **self.sections), encoding="utf-8")

    @property
    def sock_path(self) -> Path:
        return self.data_dir / "sim.sock"

    def start(self, timeout: float = 15.0, wait_hello: bool = True) -> DeviceProcess:
        assert self.window is not None
        connections = self.window.connections
        if self.sock_path.exists():
            self.sock_path.unlink()
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        env.pop("NOTIFY_SOCKET", None)
        env.update(self.env)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "device.cli", "run", "--config", str(self.config_path)],
            stdout=log, stderr=log, env=env, cwd=ROOT)
        log.close()
        self.starts += 1
        deadline = time.monotonic() + timeout
        while not self.sock_path.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"hcp-device exited {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"hcp-device did not open its sim socket:\n{self.log()}")
            time.sleep(0.02)
        self.sim = SimClient(self.sock_path, timeout=max(0.1, deadline - time.monotonic()))
        # The sim socket sends events only to clients its accept thread has taken in, and
        # connect() returns before that: on a loaded machine an event sent in between (a
        # voice clip; the screen is replayed on accept) went to nobody. A status answer
        # comes only to an accepted client.
        accepted = threading.Event()

        def on_status(event: dict[str, Any]) -> None:
            if event.get("ev") == "status":
                accepted.set()

        self.sim.listeners.append(on_status)
        self.sim.request_status()
        if not accepted.wait(max(0.1, deadline - time.monotonic())):
            raise TimeoutError(f"hcp-device's sim socket did not answer:\n{self.log()}")
        self.sim.listeners.remove(on_status)
        with self.sim.events.mutex:   # that answer is not news to the test
            kept = [e for e in self.sim.events.queue if e.get("ev") != "status"]
            self.sim.events.queue.clear()
            self.sim.events.queue.extend(kept)
        if wait_hello:
            # Wait for `hello`, not just the TCP connection: pyserial flushes its input
            # when it opens the port, so a frame sent before `hello` may be discarded.
            if not self.window.wait_connected(max(0.1, deadline - time.monotonic()),
                                              after=connections):
                raise TimeoutError(f"hcp-device did not connect its serial link:\n{self.log()}")
            self.hello = self.window.wait_for(lambda f: f.get("type") == "hello",
                                              max(0.1, deadline - time.monotonic()))
            if self.hello is None:
                raise TimeoutError(f"hcp-device sent no hello:\n{self.log()}")
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-6000:]
        except FileNotFoundError:
            return ""

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs (a power cut, as far as the process knows)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._drop_sim()

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM and wait; returns the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        finally:
            self._drop_sim()
        return rc

    def _drop_sim(self) -> None:
        if self.sim is not None:
            self.sim.close()
            self.sim = None

    def close(self) -> None:
        self.kill()
        if self.window is not None:
            self.window.close()
