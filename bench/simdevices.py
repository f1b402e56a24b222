"""Sim devices for the issue-13 benchmarks: `hcp-device run` as bench/devices.py runs it,
with a colour sim display (`[display] size`), the sim voice, and optionally started inside
a cgroup v1 CPU quota (a stand-in for a slower CPU); and an event log of the sim socket
that stamps screen and voice events as they arrive."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import tomllib
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.context import REPO
from bench.devices import DeviceProcess, ScreenWatch
from simulator.children import die_with_parent
from simulator.simclient import SimClient
from simulator.tomlfile import toml_text

COLOUR = "800x480"


class EventLog:
    """Every screen and voice event of one sim socket as (kind, name, perf_counter time
    of arrival), stamped in the reader thread."""

    def __init__(self, sim: SimClient) -> None:
        self._cond = threading.Condition()
        self.events: list[tuple[str, str, float]] = []
        sim.listeners.append(self._on_event)

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("ev")
        if kind not in ("screen", "voice"):
            return
        at = time.perf_counter()
        name = str(event.get("screen" if kind == "screen" else "clip"))
        with self._cond:
            self.events.append((str(kind), name, at))
            self._cond.notify_all()

    def mark(self) -> int:
        with self._cond:
            return len(self.events)

    def wait(self, kind: str, name: str, after: int, timeout: float = 10.0) -> float:
        """Arrival time of the first `kind` event named `name` at index ≥ `after`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for k, n, at in self.events[after:]:
                    if k == kind and n == name:
                        return at
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"no {kind} event {name!r} within {timeout} s")
                self._cond.wait(left)


class CpuCgroup:
    """A cgroup v1 `cpu` controller group of our own with a CFS quota: the processes in it
    get `quota_us` of CPU time every `period_us`, whatever the machine has free. Created
    by `create()`, removed by `remove()` (its processes moved back to the root group)."""

    def __init__(self, label: str, quota_us: int = 25_000, period_us: int = 100_000) -> None:
        root = cpu_controller()
        if root is None:
            raise RuntimeError(unavailable() or "no cgroup v1 cpu controller")
        self.root = root
        self.path = root / f"hcp-bench-{os.getpid()}-{label}-{uuid.uuid4().hex[:6]}"
        self.quota_us, self.period_us = quota_us, period_us

    def create(self) -> CpuCgroup:
        self.path.mkdir()
        (self.path / "cpu.cfs_period_us").write_text(str(self.period_us))
        (self.path / "cpu.cfs_quota_us").write_text(str(self.quota_us))
        return self

    def joiner(self) -> Callable[[], None]:
        """A `preexec_fn`: the child joins the group before it execs, so its start-up is
        under the quota too (and then dies with its parent, like every benchmark child)."""
        procs = str(self.path / "cgroup.procs")

        def join() -> None:
            fd = os.open(procs, os.O_WRONLY)
            try:
                os.write(fd, str(os.getpid()).encode())
            finally:
                os.close(fd)
            die_with_parent()

        return join

    def stat(self) -> dict[str, int]:
        """cpu.stat: nr_periods, nr_throttled, throttled_time (ns)."""
        out: dict[str, int] = {}
        with contextlib.suppress(OSError):
            for line in (self.path / "cpu.stat").read_text().splitlines():
                key, _, value = line.partition(" ")
                with contextlib.suppress(ValueError):
                    out[key] = int(value)
        return out

    def remove(self) -> None:
        if not self.path.exists():
            return
        for _ in range(50):
            try:
                pids = (self.path / "cgroup.procs").read_text().split()
            except OSError:
                pids = []
            for pid in pids:   # whatever is left (normally nothing): back to the root
                with contextlib.suppress(OSError):
                    (self.root / "cgroup.procs").write_text(pid)
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"could not remove the cgroup {self.path}")


def cpu_controller() -> Path | None:
    """Where the cgroup v1 `cpu` controller is mounted, if it is."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    for line in mounts:
        fields = line.split()
        if len(fields) >= 4 and fields[2] == "cgroup" and "cpu" in fields[3].split(","):
            path = Path(fields[1])
            if (path / "cpu.cfs_quota_us").exists():
                return path
    return None


def unavailable() -> str | None:
    """Why a CPU quota cannot be set here, or None."""
    if os.geteuid() != 0:
        return "not root: creating a cgroup needs root"
    root = cpu_controller()
    if root is None:
        return ("no cgroup v1 `cpu` controller is mounted (`mount | grep cgroup` shows no "
                "cgroup with the cpu option)")
    if not os.access(root, os.W_OK):
        return f"{root} is not writable (a read-only cgroup mount)"
    return None


class SimDevice(DeviceProcess):
    """bench/devices.py's `hcp-device run` with more config (a colour size, the sim voice,
    other `[ui]` keys) and optionally started inside a CPU cgroup."""

    def __init__(self, workdir: Path, size: str | None = None, voice: bool = False,
                 ui: dict[str, Any] | None = None, cgroup: CpuCgroup | None = None) -> None:
        super().__init__(workdir)
        config = tomllib.loads(self.config_path.read_text(encoding="utf-8"))
        if size is not None:
            config["display"]["size"] = size
        if voice:
            config["voice"] = {"kind": "sim"}
        config["ui"].update(ui or {})
        self.config_path.write_text(toml_text(config), encoding="utf-8")
        self.cgroup = cgroup
        self.events: EventLog | None = None

    def start(self, timeout: float = 60.0) -> float:
        """Start the daemon (inside the cgroup, from before its exec); seconds from the
        exec to its READY=1 notification."""
        notify_path = self.workdir / "notify.sock"
        notify_path.unlink(missing_ok=True)
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.bind(str(notify_path))
        env = {**os.environ, "PYTHONPATH": str(REPO), "NOTIFY_SOCKET": str(notify_path)}
        env.pop("WATCHDOG_USEC", None)
        preexec = self.cgroup.joiner() if self.cgroup is not None else die_with_parent
        with self.log_path.open("ab") as log:
            started = time.monotonic()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "device.cli", "run", "--config", str(self.config_path),
                 "--log-level", self.log_level],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, cwd=REPO,
                preexec_fn=preexec)
        ready = self._wait_ready(started + timeout)
        self.sim = SimClient(self.data_dir / "sim.sock", timeout=5.0)
        self.screens = ScreenWatch(self.sim)
        self.events = EventLog(self.sim)
        if not self.window.wait_connected(10.0):
            raise RuntimeError(f"hcp-device did not open its serial link:\n{self.log()}")
        # pyserial flushes its input when it opens the port: a frame sent before the
        # device's `hello` may be discarded (a case that never prompts).
        if self.window.wait_for(lambda f: f.get("type") == "hello", 10.0) is None:
            raise RuntimeError(f"hcp-device sent no hello on its serial link:\n{self.log()}")
        return ready - started

