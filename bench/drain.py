"""Benchmark 4: a device with 10,000 pending ratings reconnects; how long until every one
is receipted, while a citizen keeps pressing and must still be thanked within the bar of
benchmark 2."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field

from bench.chain import Bridge, Child, Platform, start_broker
from bench.context import Context
from bench.devices import DeviceProcess
from bench.measure import Latency, fmt_ms
from bench.press import BAR_MS, LEVELS
from bench.report import Section, Table
from simulator.localbroker import free_port

SOCAT = shutil.which("socat") or "socat"

BAR_S = 30.0
OFFLINE_S = 1.5   # the device runs (and is pressed) offline this long before its network returns


@dataclass
class Round:
    ready_s: float = 0.0
    reconnect_s: float = 0.0       # network back → the device says it is connected
    drain_s: float = 0.0           # connected → outbox empty
    at_platform: int = 0
    offline: list[float] = field(default_factory=list)   # press → thanks, before
    during: list[float] = field(default_factory=list)    # … while draining


def one_round(ctx: Context, n: int, backlog: int, limit_s: float) -> Round:
    result = Round()
    broker = start_broker(ctx.scratch(f"drain-broker-{n}"))
    platform = Platform(ctx.scratch(f"drain-platform-{n}"))
    bridge = Bridge(ctx.scratch(f"drain-bridge-{n}"), broker, platform.url, "drain-bridge",
                    "bridge").start()
    # The device reaches the broker through socat on a port of its own: nothing listens
    # there while its "network" is down, so it runs offline and retries with its backoff.
    proxy_dir = ctx.scratch(f"drain-network-{n}")
    proxy_port = free_port()
    proxy: Child | None = None
    device = DeviceProcess(ctx.scratch(f"drain-device-{n}"), mqtt_port=proxy_port)
    ctx.outbox_with_backlog(device.data_dir, backlog)
    try:
        result.ready_s = device.start()
        offline_since = time.monotonic()
        back_at = connected_at = None
        k = 0
        while True:
            device.wait_idle()
            status = device.status()
            now = time.monotonic()
            if back_at is None and now - offline_since >= OFFLINE_S:
                proxy = Child([SOCAT, f"TCP-LISTEN:{proxy_port},bind=127.0.0.1,reuseaddr,fork",
                               f"TCP:{broker.host}:{broker.port}"], proxy_dir / "socat.log")
                back_at = time.monotonic()
            if back_at is not None and connected_at is None and \
                    status.get("broker") == "connected":
                connected_at = now
                result.reconnect_s = now - back_at
            if connected_at is not None and status.get("backlog") == 0:
                result.drain_s = now - connected_at
                break
            if back_at is not None and now - back_at > limit_s:
                raise RuntimeError(f"not drained {limit_s:g} s after the network came back: "
                                   f"{status.get('backlog')} pending, broker "
                                   f"{status.get('broker')}")
            latency = device.press(LEVELS[k % len(LEVELS)])
            (result.during if connected_at is not None else result.offline).append(latency)
            k += 1
        result.at_platform = platform.count()
    finally:
        device.close()
        if proxy is not None:
            proxy.stop()
        bridge.stop()
        platform.stop()
        broker.stop()
    return result


def run(ctx: Context) -> Section:
    backlog = ctx.backlog
    rounds = 1 if ctx.quick else 3
    limit_s = 60.0 if ctx.quick else 120.0
    section = Section(
        "drain", "4. Drain: a device reconnects with 10,000 pending",
        f"mosquitto, the reference platform and one bridge (production defaults) run. "
        f"`hcp-device run` (sim drivers) starts with {backlog:,} ratings in its outbox and "
        f"its broker address pointing at a port where nothing listens yet: its network is "
        f"down. A citizen "
        f"presses a key every time the idle screen is back (about 9 presses a second, each "
        f"timed to its thanks screen as in benchmark 2); before each press the device's "
        f"status is read from the sim socket. After {OFFLINE_S:g} s the network comes back: "
        f"`socat` starts listening there and forwards to mosquitto; the device reconnects "
        f"at its next backoff attempt. "
        f"Drained = the first status showing an empty outbox (the backlog and every press "
        f"receipted), timed from the first status showing the device connected. The "
        f"device's in-flight window is its default (`max_inflight` 20 publishes awaiting "
        f"PUBACK). {rounds} round(s), each with a fresh broker, platform and bridge (so no "
        f"round is answered from the bridge's cache of the one before), presses pooled.")
    results = [one_round(ctx, n, backlog, limit_s) for n in range(rounds)]

    drain_s = max(r.drain_s for r in results)
    during = Latency.of_seconds([x for r in results for x in r.during])
    offline = Latency.of_seconds([x for r in results for x in r.offline])
    section.check(f"{backlog:,} pending: connected → all receipted (worst round)",
                  f"{drain_s:.1f} s ({backlog / drain_s:,.0f} ratings/s)", "—",
                  f"≤ {BAR_S:.0f} s", drain_s <= BAR_S)
    section.check("press → thanks while draining, p99", f"{fmt_ms(during.p99)} (p50 "
                  f"{fmt_ms(during.p50)}, n={during.n})", f"{fmt_ms(offline.p99)} (p50 "
                  f"{fmt_ms(offline.p50)}; the same device offline, before its network came "
                  f"back)", f"p99 ≤ {BAR_MS:.0f} ms", during.p99 <= BAR_MS)
    table = Table(["round", "start → READY", "network back → connected",
                   "connected → all receipted", "presses while draining: p50 / max",
                   "at the platform"], title="Rounds")
    for n, r in enumerate(results, 1):
        lat = Latency.of_seconds(r.during)
        table.add(n, f"{r.ready_s:.2f} s", f"{r.reconnect_s:.2f} s", f"{r.drain_s:.2f} s",
                  f"{fmt_ms(lat.p50)} / {fmt_ms(lat.max)} (n={lat.n})",
                  f"{r.at_platform:,} ({backlog:,} + {len(r.offline) + len(r.during)} "
                  f"presses)")
    section.tables.append(table)
    if during.n < 100:
        section.notes.append(f"With {during.n} presses while draining, the p99 is close to "
                             "the maximum.")
    return section
