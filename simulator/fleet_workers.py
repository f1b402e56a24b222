"""`hcp-sim fleet --workers W`: the fleet split over W processes, so that it is not held
to the one core a Python process can use (each rating costs its device about 2 ms of
CPU: core, fsync'ed outbox, paho). The parent starts the workers, lets them all send at
once when every device is connected, adds up their progress and merges their results.

Workers speak JSON lines on stdout (`connected`, `progress`, `result`) and read `go` or
`stop` on stdin; their logs go to the shared stderr.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from typing import IO, Any

from simulator.children import die_with_parent
from simulator.fleet_run import CALLED_OFF, Fleet, FleetOptions, FleetResult, ProgressSink
from simulator.fleet_stats import STATUSES, Progress

log = logging.getLogger("hcp.fleet")

PHASES = ("connecting", "sending", "draining", "done")
RESULT_GRACE_S = 30.0


def share(total: int, index: int, workers: int) -> tuple[int, int]:
    """Worker `index`'s part [start, end) of `total` things; the parts cover it exactly."""
    return total * index // workers, total * (index + 1) // workers


def worker_options(options: FleetOptions, index: int, workers: int) -> FleetOptions:
    """Worker `index`'s devices, with its part of the rate and of the count."""
    start, end = share(options.devices, index, workers)
    count = None
    if options.count is not None:
        count = options.count * end // options.devices - options.count * start // options.devices
    return replace(options, devices=end - start, first_device=options.first_device + start,
                   rate=options.rate * (end - start) / options.devices, count=count,
                   seed=None if options.seed is None else options.seed * 1000 + index)


# --- the worker's side ------------------------------------------------------------------

def run_worker(options: FleetOptions, index: int, workers: int,
               out: IO[str] = sys.stdout, inp: IO[str] = sys.stdin) -> int:
    lock = threading.Lock()

    def say(message: dict[str, Any]) -> None:
        with lock:
            out.write(json.dumps(message) + "\n")
            out.flush()

    def progress(phase: str, p: Progress, _rate: float, connected: int) -> None:
        say({"ev": "progress", "phase": phase, "sent": p.sent, "receipted": p.receipted,
             "pending": p.pending, "carried_over": p.carried_over, "connected": connected})

    def gate(result: FleetResult) -> bool:
        say({"ev": "connected", "connected": result.connected})
        return inp.readline().strip() == "go"

    fleet = Fleet(worker_options(options, index, workers), on_progress=progress)
    result = fleet.run(gate)
    say({"ev": "result", "result": result_to_json(result)})
    return 0


def result_to_json(r: FleetResult) -> dict[str, Any]:
    return {"connected": r.connected, "connect_s": r.connect_s, "send_s": r.send_s,
            "drain_s": r.drain_s, "sent": r.sent, "receipted": r.receipted,
            "pending": r.pending, "carried_over": r.carried_over, "statuses": r.statuses,
            "latency": r.latency.to_json(), "ignored_presses": r.ignored_presses,
            "device_errors": r.device_errors, "backlog_left": r.backlog_left,
            "interrupted": r.interrupted, "problem": r.problem}


def merge_results(options: FleetOptions, parts: list[dict[str, Any]]) -> FleetResult:
    """One result for the whole fleet: counts add up, times are the slowest worker's."""
    total = FleetResult(options)
    for part in parts:
        total.connected += part["connected"]
        for key in ("sent", "receipted", "pending", "carried_over", "ignored_presses",
                    "backlog_left"):
            setattr(total, key, getattr(total, key) + part[key])
        for key in ("connect_s", "send_s", "drain_s"):
            setattr(total, key, max(getattr(total, key), part[key]))
        for status in STATUSES:
            total.statuses[status] += part["statuses"].get(status, 0)
        total.latency.merge_json(part["latency"])
        total.device_errors += part["device_errors"]
        total.interrupted = total.interrupted or part["interrupted"]
        # The worker that had the problem says what it was; the others were called off.
        if part["problem"] and (total.problem is None or total.problem == CALLED_OFF):
            total.problem = part["problem"]
    return total


# --- the parent's side ------------------------------------------------------------------

class Worker:
    """One worker process and what it last said."""

    def __init__(self, argv: list[str], index: int, workers: int) -> None:
        self.index = index
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "simulator.cli", "fleet", *argv,
             "--worker", f"{index}/{workers}"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            preexec_fn=die_with_parent)
        self.connected: int | None = None
        self.progress: dict[str, Any] = {"phase": "connecting", "sent": 0, "receipted": 0,
                                         "pending": 0, "carried_over": 0, "connected": 0}
        self.result: dict[str, Any] | None = None
        self.finished = threading.Event()
        threading.Thread(target=self._read, name=f"worker-{index}", daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            for line in self.proc.stdout:
                try:
                    message = json.loads(line)
                except ValueError:
                    log.warning("worker %d: %s", self.index, line.rstrip()[:200])
                    continue
                if message.get("ev") == "progress":
                    self.progress = message
                elif message.get("ev") == "connected":
                    self.connected = int(message["connected"])
                elif message.get("ev") == "result":
                    self.result = message["result"]
        finally:
            self.proc.wait()
            self.finished.set()

    @property
    def phase(self) -> str:
        phase = "done" if self.finished.is_set() else str(self.progress.get("phase"))
        return phase if phase in PHASES else "connecting"

    def tell(self, word: str) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(word + "\n")
            self.proc.stdin.flush()
        except (OSError, ValueError):
            pass   # it is gone already: its missing result says so

    def interrupt(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)


def run_workers(options: FleetOptions, argv: list[str], workers: int,
                on_progress: ProgressSink | None = None) -> FleetResult:
    """Run the fleet as `workers` processes given the same command line `argv`."""
    pool = [Worker(argv, k, workers) for k in range(workers)]
    reporter = _Reporter(pool, on_progress)
    interrupted = False
    try:
        while not all(w.connected is not None or w.finished.is_set() for w in pool):
            reporter.tick()
            time.sleep(0.05)
        go = all(w.connected is not None for w in pool)
        for w in pool:
            w.tell("go" if go else "stop")
        while not all(w.finished.is_set() for w in pool):
            reporter.tick()
            time.sleep(0.05)
    except KeyboardInterrupt:
        interrupted = True
        for w in pool:
            w.interrupt()
        for w in pool:
            w.finished.wait(RESULT_GRACE_S)
    parts = [w.result for w in pool if w.result is not None]
    total = merge_results(options, parts)
    missing = [w for w in pool if w.result is None]
    if missing and total.problem is None:
        total.problem = ", ".join(f"worker {w.index} ended without a result "
                                  f"(exit status {w.proc.poll()})" for w in missing)
    total.interrupted = total.interrupted or interrupted
    return total


class _Reporter:
    """The workers' progress added up, once a second."""

    def __init__(self, pool: list[Worker], sink: ProgressSink | None) -> None:
        self.pool, self.sink = pool, sink
        self.last, self.last_sent = time.monotonic(), 0

    def tick(self) -> None:
        now = time.monotonic()
        if self.sink is None or now - self.last < 1.0:
            return
        states = [w.progress for w in self.pool]
        p = Progress(*(sum(int(s[k]) for s in states)
                       for k in ("sent", "receipted", "pending", "carried_over")))
        phase = min((w.phase for w in self.pool), key=PHASES.index, default="done")
        rate = (p.sent - self.last_sent) / (now - self.last)
        self.last, self.last_sent = now, p.sent
        self.sink(phase, p, rate, sum(int(s["connected"]) for s in states))
