"""The delivery chain the end-to-end benchmarks run against, each part a real process: a
private mosquitto (simulator/localbroker.py), the reference platform (`hcp-sim
platform`), bridges (`hcp-bridge run`), the naive baseline forwarder and the fleet."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Protocol

from bench.context import REPO
from simulator.children import die_with_parent
from simulator.localbroker import Mosquitto, free_port
from simulator.tomlfile import toml_text


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}


class Child:
    """A child process of the benchmark, logging to a file, SIGTERMed on stop."""

    def __init__(self, argv: list[str], log_path: Path, stdout: int | IO[Any] | None = None
                 ) -> None:
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                argv, cwd=REPO, env=_env(), stdin=subprocess.DEVNULL,
                stdout=log if stdout is None else stdout, stderr=log,
                preexec_fn=die_with_parent)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def _http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def _wait_http_ok(child: Child, url: str, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError(f"{what} exited with {child.proc.returncode}:\n{child.log()}")
        if _http_status(url) == 200:
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} not healthy within {timeout} s:\n{child.log()}")


def start_broker(workdir: Path) -> Mosquitto:
    """A private mosquitto with the queue limit and autosave interval of the sample
    production config (systemd/examples/mosquitto.conf)."""
    return Mosquitto(workdir, max_queued_messages=250_000, autosave_interval=10).start()


@dataclass(frozen=True)
class Arrivals:
    """When the platform stored ratings: how many, and the span of their arrival."""

    count: int
    first: float        # epoch seconds of the first request that stored ratings
    last: float
    in_first: int       # ratings stored by that first request

    @property
    def rate(self) -> float:
        """Ratings per second between the first request and the last: the ratings of the
        first request arrived at its start, so they are not counted in the span."""
        span = self.last - self.first
        return (self.count - self.in_first) / span if span > 0 else 0.0


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


class Platform:
    """The reference platform as a process (`hcp-sim platform`), its SQLite file read
    directly."""

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.db_path = workdir / "platform.db"
        self.child = Child([sys.executable, "-m", "simulator.cli", "platform", "--listen",
                            f"127.0.0.1:{self.port}", "--db", str(self.db_path)],
                           workdir / "platform.log")
        try:
            _wait_http_ok(self.child, f"{self.base_url}/healthz", "the platform")
        except BaseException:
            self.child.stop()   # never healthy: nobody else would stop it
            raise

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base_url}/api/ratings"

    def _query(self, sql: str) -> list[tuple[Any, ...]]:
        db = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)
        try:
            return db.execute(sql).fetchall()
        finally:
            db.close()

    def count(self) -> int:
        rows = self._query("SELECT COUNT(*) FROM ratings")
        return int(rows[0][0])

    def arrivals(self) -> Arrivals:
        rows = self._query("SELECT received_at, COUNT(*) FROM ratings GROUP BY received_at "
                           "ORDER BY received_at")
        if not rows:
            return Arrivals(0, 0.0, 0.0, 0)
        return Arrivals(sum(n for _, n in rows), _epoch(rows[0][0]), _epoch(rows[-1][0]),
                        rows[0][1])

    def press_to_platform(self) -> list[float]:
        """Seconds from each rating's `rated_at` (the device's clock when the key was
        handled) to the platform storing it; same host, same clock, millisecond stamps."""
        return [_epoch(received) - _epoch(rated) for rated, received in
                self._query("SELECT rated_at, received_at FROM ratings")]

    def stop(self) -> None:
        self.child.stop()


class Bridge:
    """`hcp-bridge run` with the production defaults (batch_max 100, batch_wait_ms 50,
    concurrency 2) and a persistent session named `client_id`."""

    def __init__(self, workdir: Path, broker: Mosquitto, platform_url: str, client_id: str,
                 group: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.http_port = free_port()
        self.config = workdir / "bridge.toml"
        self.config.write_text(toml_text({
            "mqtt": {"host": broker.host, "port": broker.port, "client_id": client_id,
                     "shared_group": group},
            "platform": {"url": platform_url},
            "http": {"listen": f"127.0.0.1:{self.http_port}"},
            "log": {"level": "warning"},
        }), encoding="utf-8")
        self.child: Child | None = None

    def start(self, wait: bool = True) -> Bridge:
        self.child = Child([sys.executable, "-m", "broker_bridge", "run", "--config",
                            str(self.config)], self.workdir / "bridge.log")
        if wait:
            try:
                self.wait_healthy()
            except BaseException:
                self.child.stop()   # never healthy: nobody else would stop it
                raise
        return self

    def wait_healthy(self) -> None:
        """Connected with its subscriptions granted (its /healthz)."""
        assert self.child is not None
        _wait_http_ok(self.child, f"http://127.0.0.1:{self.http_port}/healthz", "the bridge")

    @property
    def pid(self) -> int:
        assert self.child is not None
        return self.child.pid

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()


class _Subscriber:
    """A `python -m MODULE` subscriber process (bench/naive_forwarder.py,
    bench/paho_floor.py) that prints `subscribed` once the broker granted its
    subscription; start() returns then."""

    module = ""
    what = ""

    def __init__(self, workdir: Path, broker: Mosquitto, client_id: str,
                 *args: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.argv = [sys.executable, "-m", self.module, "--broker",
                     f"{broker.host}:{broker.port}", "--client-id", client_id, *args]
        self.child: Child | None = None

    def start(self, wait: bool = True) -> _Subscriber:
        self.child = Child(self.argv, self.workdir / "subscriber.log", stdout=subprocess.PIPE)
        if wait:
            self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float = 15.0) -> None:
        self.wait_for("subscribed", timeout)

    def wait_for(self, said: str, timeout: float) -> None:
        """Until the process prints the line `said`."""
        assert self.child is not None
        stdout = self.child.proc.stdout
        assert stdout is not None
        os.set_blocking(stdout.fileno(), False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = stdout.readline()
            if line.strip() == said.encode():
                return
            if not line:
                if not self.child.alive():
                    break
                time.sleep(0.02)
        raise RuntimeError(f"{self.what} did not say {said!r} within {timeout:g} s:\n"
                           f"{self.child.log()}")

    @property
    def pid(self) -> int:
        assert self.child is not None
        return self.child.pid

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()


class NaiveForwarder(_Subscriber):
    """bench/naive_forwarder.py as a process."""

    module, what = "bench.naive_forwarder", "the naive forwarder"

    def __init__(self, workdir: Path, broker: Mosquitto, platform_url: str,
                 client_id: str) -> None:
        super().__init__(workdir, broker, client_id, "--url", platform_url)


class PahoFloor(_Subscriber):
    """bench/paho_floor.py as a process: takes and acknowledges `expect` ratings, then
    says `done`."""

    module, what = "bench.paho_floor", "the paho floor"

    def __init__(self, workdir: Path, broker: Mosquitto, client_id: str,
                 expect: int = 0) -> None:
        super().__init__(workdir, broker, client_id, "--expect", str(expect))


class Consumer(Protocol):
    """What drains ratings from the broker: a bridge or the naive forwarder."""

    @property
    def pid(self) -> int: ...

    def start(self, wait: bool = True) -> Consumer: ...

    def wait_healthy(self) -> None: ...

    def stop(self) -> None: ...


def run_fleet(workdir: Path, broker: Mosquitto, *, devices: int, rate: float,
              duration_s: float, workers: int, drain_timeout_s: float = 60.0,
              device_prefix: str = "BENCH") -> dict[str, Any]:
    """`hcp-sim fleet … --json`; its summary (see docs/fleet.md)."""
    workdir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "simulator.cli", "fleet", "--devices", str(devices),
            "--rate", str(rate), "--duration", str(duration_s), "--workers", str(workers),
            "--broker", f"{broker.host}:{broker.port}", "--device-prefix", device_prefix,
            "--drain-timeout", str(drain_timeout_s), "--seed", "7", "--json", "--quiet",
            "--data-dir", str(workdir / "outboxes")]
    with (workdir / "fleet.log").open("ab") as log:
        done = subprocess.run(argv, cwd=REPO, env=_env(), stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=log, check=False,
                              timeout=duration_s + drain_timeout_s + 120,
                              preexec_fn=die_with_parent)
    try:
        summary: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        tail = ""
        with contextlib.suppress(OSError):
            tail = (workdir / "fleet.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"hcp-sim fleet exited {done.returncode} without a summary:\n"
                           f"{tail}") from None
    return summary
