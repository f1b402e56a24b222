"""Run `hcp-bridge run` as a real subprocess in tests (so it can be SIGKILLed), with a
config written from keyword arguments, and read its /metrics and /healthz.

    bridge = BridgeProcess(tmp_path / "b1", mosquitto, platform.url,
                           overrides={"platform": {"batch_max": 50}}).start()
    bridge.metric("hcp_bridge_ratings_forwarded_total")
    bridge.kill(); bridge.start()          # same config, same client id, same port
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from simulator.tomlfile import toml_text
from tests.support.mosquitto import Mosquitto, free_port

__all__ = ["toml_text"]

REPO = Path(__file__).resolve().parents[2]




class BridgeProcess:
    """One bridge process; `overrides` = {section: {key: value}} on top of test defaults
    (short batch wait, retry cap 2 s so recovery tests finish quickly)."""

    def __init__(self, workdir: Path, broker: Mosquitto, platform_url: str,
                 client_id: str = "bridge-1", env: dict[str, str] | None = None,
                 overrides: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.http_port = free_port()
        config: dict[str, dict[str, Any]] = {
            "mqtt": {"host": broker.host, "port": broker.port, "client_id": client_id,
                     "shared_group": "bridge"},
            "platform": {"url": platform_url, "batch_wait_ms": 20, "retry_cap_s": 2.0},
            "http": {"listen": f"127.0.0.1:{self.http_port}"},
            "log": {"level": "info"},
        }
        for name, keys in (overrides or {}).items():
            config.setdefault(name, {}).update(keys)
        self.config_file = workdir / "bridge.toml"
        self.config_file.write_text(toml_text(config))
        self.log_file = workdir / "bridge.log"
        self.env = env or {}
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, wait_healthy: bool = True, timeout: float = 10.0) -> BridgeProcess:
        self.starts += 1
        env = {**os.environ, "PYTHONPATH": str(REPO), **self.env}
        with self.log_file.open("ab") as log:
            log.write(f"--- start {self.starts} ---\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "broker_bridge", "run", "--config", str(self.config_file)],
                cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        # Not die_with_parent: the kernel's parent-death signal follows the *thread* that
        # started the process, and the chaos run restarts bridges from threads that end.
        if wait_healthy:
            self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"bridge exited with {self.process.returncode}:\n"
                                   + self.log_text()[-3000:])
            if self.healthz() == 200:
                return
            time.sleep(0.05)
        raise TimeoutError("bridge not healthy in time:\n" + self.log_text()[-3000:])

    def healthz(self) -> int | None:
        try:
            with urllib.request.urlopen(self.base_url + "/healthz", timeout=2) as response:
                status: int = response.status
                return status
        except urllib.error.HTTPError as e:
            return e.code
        except OSError:
            return None

    def metrics_text(self) -> str:
        with urllib.request.urlopen(self.base_url + "/metrics", timeout=2) as response:
            text: str = response.read().decode("utf-8")
            return text

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample, keyed by (name, sorted labels), parsed by prometheus_client."""
        samples = {}
        for family in text_string_to_metric_families(self.metrics_text()):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return samples

    def metric(self, name: str, **labels: str) -> float:
        """One sample's value; summed over the other labels of a labelled metric."""
        total = 0.0
        found = False
        for (sample_name, sample_labels), value in self.metrics().items():
            if sample_name == name and set(labels.items()) <= set(sample_labels):
                total += value
                found = True
        if not found:
            raise KeyError(name)
        return total

    def kill(self) -> None:
        """SIGKILL: no goodbye, no flush."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)

    def terminate(self, timeout: float = 10.0) -> float:
        """SIGTERM; return how long the bridge took to exit."""
        assert self.process is not None
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout)
        return time.monotonic() - started

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def log_text(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> BridgeProcess:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.kill()
