"""Benchmark 5: the footprint of `hcp-device run` with sim drivers — time from start to
READY, resident memory after start and after 10,000 ratings, CPU while idle."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

from bench.chain import Bridge, Platform, start_broker
from bench.context import Context
from bench.devices import DeviceProcess
from bench.measure import fmt_bytes, sample_process
from bench.report import Section, Table

READY_BAR_S = 2.0
RSS_BAR = 60 * 1024 * 1024
IDLE_BAR_PCT = 1.0
STARTS = 3


def _bare_python() -> tuple[float, int]:
    """A bare interpreter, for scale: seconds to run `pass`, and its resident memory."""
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    took = time.monotonic() - started
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.5)
        rss = sample_process(sleeper.pid).rss_bytes
    finally:
        sleeper.kill()
        sleeper.wait()
    return took, rss


def _wait_drained(device: DeviceProcess, limit_s: float) -> bool:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        status = device.status()
        if status.get("broker") == "connected" and status.get("backlog") == 0:
            return True
        time.sleep(0.25)
    return False


def run(ctx: Context) -> Section:
    idle_s = 5.0 if ctx.quick else 60.0
    backlog = ctx.backlog
    section = Section(
        "footprint", "5. Footprint of `hcp-device run`",
        f"`hcp-device run` with sim keys and screen, a window system on its serial link and "
        f"connected to mosquitto with a bridge and the reference platform (as in "
        f"production: idle means connected). READY = the `READY=1` sd_notify datagram "
        f"(the daemon was given a `NOTIFY_SOCKET`), timed from the exec. RSS is `VmRSS`. "
        f"Idle CPU: user + system time over {idle_s:g} s with nothing happening, from "
        f"`/proc/<pid>/stat`; wake-ups are voluntary context switches of all its threads "
        f"(a busy poll would show as hundreds a second). After 10,000 ratings: the daemon "
        f"is started with {backlog:,} ratings in its outbox (written by the outbox itself, "
        f"one fsync'ed append each), publishes them all and removes them as receipts come; "
        f"10,000 presses through the sim socket would take 20 minutes (the thanks screen "
        f"lasts at least 0.1 s). Baseline: a bare `{sys.executable.rsplit('/', 1)[-1]}` "
        f"running `pass` (start) or sleeping (RSS).")
    bare_start, bare_rss = _bare_python()
    broker = start_broker(ctx.scratch("footprint-broker"))
    platform = Platform(ctx.scratch("footprint-platform"))
    bridge = Bridge(ctx.scratch("footprint-bridge"), broker, platform.url, "fp-bridge",
                    "bridge").start()
    readies: list[float] = []
    try:
        for i in range(STARTS):
            device = DeviceProcess(ctx.scratch(f"footprint-device-{i}"), mqtt_port=broker.port)
            try:
                readies.append(device.start())
                if i < STARTS - 1:
                    continue
                if not _wait_drained(device, 15):
                    raise RuntimeError("the idle device did not connect to the broker")
                time.sleep(2)  # let start-up work (first telemetry, retained config) settle
                rss_start = sample_process(device.pid).rss_bytes
                first = sample_process(device.pid)
                bridge_first = sample_process(bridge.pid)
                time.sleep(idle_s)
                last = sample_process(device.pid)
                bridge_last = sample_process(bridge.pid)
            finally:
                device.close()
        loaded: dict[int, tuple[float, int, int]] = {}   # pending -> ready, RSS, RSS after
        for pending in (backlog // 10, backlog):
            device = DeviceProcess(ctx.scratch(f"footprint-pending-{pending}"),
                                   mqtt_port=broker.port)
            ctx.outbox_with_backlog(device.data_dir, pending)
            try:
                ready = device.start()
                rss = sample_process(device.pid).rss_bytes
                if not _wait_drained(device, 120):
                    raise RuntimeError(f"the device with {pending:,} pending did not drain")
                time.sleep(1)
                loaded[pending] = (ready, rss, sample_process(device.pid).rss_bytes)
            finally:
                device.close()
    finally:
        bridge.stop()
        platform.stop()
        broker.stop()

    span = last.at - first.at
    cpu_pct = (last.cpu_s - first.cpu_s) / span * 100
    wakeups = (last.wakeups - first.wakeups) / span
    bridge_pct = (bridge_last.cpu_s - bridge_first.cpu_s) / span * 100
    bridge_wakeups = (bridge_last.wakeups - bridge_first.wakeups) / span
    worst_ready = max(*readies, *(r for r, _, _ in loaded.values()))
    worst_rss = max(rss_start, *(max(a, b) for _, a, b in loaded.values()))
    section.check("start → READY (worst of all starts)", f"{worst_ready:.2f} s",
                  f"{bare_start:.2f} s (bare interpreter)", f"≤ {READY_BAR_S:g} s",
                  worst_ready <= READY_BAR_S)
    section.check("RSS (largest seen)", fmt_bytes(worst_rss), f"{fmt_bytes(bare_rss)} "
                  "(bare interpreter)", "≤ 60 MiB", worst_rss <= RSS_BAR)
    section.check(f"CPU while idle ({idle_s:g} s)", f"{cpu_pct:.2f} % ({wakeups:.1f} "
                  f"wake-ups/s)", f"{bridge_pct:.2f} % ({bridge_wakeups:.1f} wake-ups/s; "
                  "the bridge, idle alongside)", f"≤ {IDLE_BAR_PCT:g} %",
                  cpu_pct <= IDLE_BAR_PCT)
    table = Table(["outbox at start", "start → READY", "RSS after start",
                   "RSS after all were published and receipted"], title="Details")
    table.add("empty", " / ".join(f"{r:.2f} s" for r in readies)
              + f" (median {statistics.median(readies):.2f} s)", fmt_bytes(rss_start), "—")
    for pending, (ready, rss, after) in loaded.items():
        table.add(f"{pending:,} pending", f"{ready:.2f} s", fmt_bytes(rss), fmt_bytes(after))
    section.tables.append(table)
    return section
