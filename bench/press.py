"""Benchmark 2: press-to-thanks through the running daemon (sim socket: key press → the
thanks screen back on the socket, the fsync included), with an empty outbox and with
10,000 ratings pending."""

from __future__ import annotations

import time
from collections.abc import Sequence

from bench.context import Context
from bench.devices import DeviceProcess
from bench.measure import Latency, fmt_ms
from bench.report import Section, Table

BAR_MS = 30.0
PERIOD_S = 0.125      # per device: 0.1 s of thanks, then idle again before the next press
LEVELS = (5, 4, 3)    # keys that go straight to thanks (1 and 2 ask for a reason first)


def run(ctx: Context) -> Section:
    presses = 30 if ctx.quick else 1000
    backlog = ctx.backlog
    section = Section(
        "press", "2. Press to thanks through the running daemon",
        f"Two `hcp-device run` processes with sim keys and screen, a window system on their "
        f"serial link and no broker (offline, so nothing drains): one with an empty outbox, "
        f"one started with {backlog:,} ratings pending. Each press is a spontaneous rating "
        f"(keys 5, 4, 3 in turn): the time from writing `press` to the sim socket until the "
        f"`thanks` screen event arrives back includes the core, the fsync'ed outbox write, "
        f"drawing the frame and both socket hops. {presses:,} presses per device. To halve "
        f"the wall time the two devices take turns, half a period ({PERIOD_S * 500:.0f} ms) "
        f"apart: a press is always timed alone, while the other device sits on its thanks "
        f"screen. Baseline: a `status` request on the same socket, answered by the socket's "
        f"thread without the daemon's loop, disk or display — the transport's floor.")
    empty = DeviceProcess(ctx.scratch("press-empty"))
    loaded = DeviceProcess(ctx.scratch("press-backlog"))
    ctx.outbox_with_backlog(loaded.data_dir, backlog)
    try:
        empty.start()
        loaded.start()
        samples, floor = take_turns((empty, loaded), presses, PERIOD_S)
        loaded_status = loaded.status()
    finally:
        empty.close()
        loaded.close()

    base = Latency.of_seconds(floor)
    table = Table(["outbox", "presses", "p50", "p99", "mean", "max"],
                  title="Press → thanks screen")
    for index, label in ((0, "empty"), (1, f"{backlog:,} pending")):
        lat = Latency.of_seconds(samples[index])
        table.add(label, lat.n, fmt_ms(lat.p50), fmt_ms(lat.p99), fmt_ms(lat.mean),
                  fmt_ms(lat.max))
        section.check(f"press → thanks, {label} outbox, p99", f"{fmt_ms(lat.p99)} "
                      f"(p50 {fmt_ms(lat.p50)})", f"{fmt_ms(base.p99)} (p50 "
                      f"{fmt_ms(base.p50)}; socket round trip)", f"p99 ≤ {BAR_MS:.0f} ms",
                      lat.p99 <= BAR_MS)
    table.add("(baseline: status round trip)", base.n, fmt_ms(base.p50), fmt_ms(base.p99),
              fmt_ms(base.mean), fmt_ms(base.max))
    section.tables.append(table)
    section.notes.append(
        f"The loaded device ended with {loaded_status.get('backlog')} ratings pending "
        f"({backlog:,} + its {presses:,} presses).")
    return section


def take_turns(devices: Sequence[DeviceProcess], presses: int, period_s: float,
               ) -> tuple[dict[int, list[float]], list[float]]:
    """Press each started device `presses` times (keys 5, 4, 3 in turn), the devices
    taking turns `period_s / len(devices)` apart so that a press is always timed alone;
    ({device index: [press → thanks seconds]}, [status round trips, the transport's
    floor, one every few presses])."""
    samples: dict[int, list[float]] = {i: [] for i in range(len(devices))}
    floor: list[float] = []
    for device in devices:
        device.wait_idle()
    count = len(devices)
    started = time.perf_counter()
    for k in range(count * presses):
        index = k % count
        device = devices[index]
        device.wait_idle()
        due = started + k * period_s / count
        now = time.perf_counter()
        if now < due:
            time.sleep(due - now)
        else:
            started += now - due   # running late: keep the others their share of a period
        samples[index].append(device.press(LEVELS[(k // count) % len(LEVELS)]))
        if k % 10 == 1:
            floor.append(device.status_round_trip())
    return samples, floor
