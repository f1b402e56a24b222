"""The machine a run happened on, for the report: CPU, cores, RAM, kernel, Python, the
file system the benchmarks wrote to, and the versions of the parts that matter."""

from __future__ import annotations

import os
import platform
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from simulator.localbroker import MOSQUITTO


def _first(path: str, key: str) -> str:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _mount_of(path: Path) -> tuple[str, str, str]:
    """(device, mount point, file system type) holding `path`: the longest matching mount."""
    best = ("unknown", "/", "unknown")
    target = str(path.resolve())
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return best
    for line in mounts:
        device, mount_point, fs_type = line.split()[:3]
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best[1]):
            best = (device, mount_point, fs_type)
    return best


def _disk_kind(device: str) -> str:
    name = Path(device).name.rstrip("0123456789") if device.startswith("/dev/") else ""
    rotational = Path(f"/sys/block/{name}/queue/rotational")
    if not name or not rotational.exists():
        return ""
    kind = "rotational" if rotational.read_text().strip() == "1" else "non-rotational"
    return f", {name} reports {kind}"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _mosquitto_version() -> str:
    try:
        done = subprocess.run([MOSQUITTO, "-h"], capture_output=True, text=True, timeout=5,
                              check=False)
    except OSError:
        return "not found"
    words = (done.stdout or done.stderr).split()
    return words[2] if len(words) > 2 and words[0] == "mosquitto" else "unknown"


def _git_commit(repo: Path) -> str:
    try:
        done = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=5, check=False)
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--",
                                "device", "drivers", "broker_bridge", "simulator", "bench"],
                               capture_output=True, text=True, timeout=5, check=False)
    except OSError:
        return "unknown"
    commit = done.stdout.strip() or "unknown"
    return commit + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


def load_average() -> str:
    """1, 5 and 15 minute load averages: other work on a shared machine shows here."""
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def describe(workdir: Path, repo: Path) -> list[tuple[str, str]]:
    """Rows of (what, value) describing this machine and run."""
    mem_kib = int(_first("/proc/meminfo", "MemTotal").split()[0] or 0)
    device, mount_point, fs_type = _mount_of(workdir)
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return [
        ("date", datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")),
        ("CPU", _first("/proc/cpuinfo", "model name")),
        ("cores", f"{os.cpu_count()} (usable by this run: {usable})"),
        ("RAM", f"{mem_kib / (1024 * 1024):.1f} GiB"),
        ("kernel", f"{platform.system()} {platform.release()}"),
        ("Python", f"{platform.python_implementation()} {sys.version.split()[0]}"),
        ("disk", f"{fs_type} on {device} (mounted at {mount_point}{_disk_kind(device)}); "
                 f"benchmark files in {workdir}"),
        ("load average at the start", load_average()),
        ("versions", f"mosquitto {_mosquitto_version()}, paho-mqtt {_version('paho-mqtt')}, "
                     f"tinydb {_version('tinydb')}, SQLite {sqlite3.sqlite_version}"),
        ("commit", _git_commit(repo)),
    ]
