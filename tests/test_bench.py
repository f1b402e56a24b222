"""The benchmarks (bench/) as a smoke test: `python -m bench --quick` runs every benchmark
end to end against the real daemon, mosquitto, bridge and platform and writes a report.
It checks that the benchmarks work, never the numbers (those are for docs/benchmarks.md)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.chain import Arrivals
from bench.measure import Latency, percentile

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("1. Outbox storage", "2. Press to thanks", "3. End to end", "4. Drain",
            "5. Footprint")


@pytest.mark.slow
def test_quick_run_measures_every_benchmark_and_writes_the_report(tmp_path: Path) -> None:
    report = tmp_path / "benchmarks.md"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(report),
         "--workdir", str(tmp_path / "work")],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
        text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    text = report.read_text(encoding="utf-8")
    assert "The benchmark failed" not in text, text
    for title in SECTIONS:
        assert f"## {title}" in text, f"no section {title!r}:\n{text}"
    # the machine it ran on
    for what in ("CPU", "cores", "RAM", "kernel", "Python", "disk"):
        assert re.search(rf"^\| {what} \| .+ \|$", text, re.M), f"no {what} row"
    # every bar is judged: a row with our number, the baseline, the bar and a verdict
    verdicts = re.findall(r"^\|[^\n]*\| (met|\*\*MISSED\*\*) \|$", text, re.M)
    assert len(verdicts) == 16, text
    # nothing it started is left running (every child names its scratch directory)
    assert _processes_mentioning(str(tmp_path)) == []


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # it ended meanwhile
        if text in argv and "pytest" not in argv:
            found.append(argv)
    return found


def test_percentiles_are_values_that_were_seen() -> None:
    samples = [0.001 * i for i in range(1, 101)]          # 1 .. 100 ms
    assert percentile([x * 1000 for x in samples], 50) == 50
    assert percentile([x * 1000 for x in samples], 99) == 99
    assert percentile([7.0], 99) == 7.0
    summary = Latency.of_seconds(samples)
    assert (summary.n, summary.p50, summary.p99, summary.max) == (100, 50, 99, 100)


def test_throughput_leaves_out_the_first_request_whose_ratings_arrived_at_its_start() -> None:
    # 100 ratings in the first request at t=10, then 900 more until t=11.5
    assert Arrivals(count=1000, first=10.0, last=11.5, in_first=100).rate == 600.0
    assert Arrivals(count=0, first=0.0, last=0.0, in_first=0).rate == 0.0
