"""Small measuring tools shared by the benchmarks: percentiles, bytes written by this
process, and the CPU time, memory and wake-ups of another process, all read from /proc."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list: a value that was seen."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Latency:
    """A latency sample summarised, in milliseconds."""

    n: int
    p50: float
    p99: float
    mean: float
    max: float

    @classmethod
    def of_seconds(cls, samples: list[float]) -> Latency:
        ms = [s * 1000 for s in samples]
        return cls(len(ms), percentile(ms, 50), percentile(ms, 99), sum(ms) / len(ms), max(ms))

    def __str__(self) -> str:
        return f"p50 {fmt_ms(self.p50)}, p99 {fmt_ms(self.p99)} (n={self.n})"


def fmt_ms(ms: float) -> str:
    """Milliseconds with about three significant digits."""
    if ms >= 100:
        return f"{ms:.0f} ms"
    if ms >= 10:
        return f"{ms:.1f} ms"
    return f"{ms:.2f} ms"


def fmt_bytes(n: float) -> str:
    if n >= 10 * 1024 * 1024:
        return f"{n / (1024 * 1024):.0f} MiB"
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.1f} MiB"
    if n >= 10 * 1024:
        return f"{n / 1024:.0f} KiB"
    if n >= 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n:.0f} B"


def write_bytes(pid: int | str = "self") -> int:
    """Bytes this process caused to be sent to the storage layer (`/proc/<pid>/io`): what
    really reaches the disk, page by page, unlike the bytes handed to write()."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/io has no write_bytes")


@dataclass(frozen=True)
class ProcSample:
    """One look at a process: CPU seconds so far, resident memory, and how often its
    threads went to sleep voluntarily (each sleep ends in a wake-up)."""

    at: float            # monotonic time of the sample
    cpu_s: float
    rss_bytes: int
    wakeups: int


def sample_process(pid: int) -> ProcSample:
    at = time.monotonic()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # after the command name: state is field 3, utime 14 and stime 15 (1-based, man proc)
    cpu_s = (int(fields[11]) + int(fields[12])) / CLK_TCK
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    wakeups = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "status").read_text()
        except OSError:
            continue  # the thread ended meanwhile
        for line in text.splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                wakeups += int(line.split()[1])
    return ProcSample(at, cpu_s, rss, wakeups)


@dataclass(frozen=True)
class MachineSample:
    """Busy and total CPU time of the whole machine so far (all cores, `/proc/stat`)."""

    busy: float
    total: float


def sample_machine() -> MachineSample:
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]          # idle + iowait
    total = sum(fields[:8])               # up to steal; guest time is inside user
    return MachineSample((total - idle) / CLK_TCK, total / CLK_TCK)


def machine_busy(first: MachineSample, last: MachineSample) -> float:
    """Fraction of all cores' time spent busy between two samples (0..1)."""
    span = last.total - first.total
    return (last.busy - first.busy) / span if span > 0 else 0.0
