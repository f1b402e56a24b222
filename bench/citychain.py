"""The city platform with the bridge in front (issue 14's "figure with the bridge in
front"): devices of `hcp-sim fleet` → a private mosquitto → `hcp-bridge run` (production
defaults) → `hcp-platform run`, into PostgreSQL and into SQLite in the same run. Part of
bench/cityplatform.py's section; a figure, not a bar.

Two measures, as in benchmark 3 (bench/endtoend.py):

- **Throughput** (the drain): while the fleets run, the broker queues every rating for
  two stopped bridge sessions, one per store; each bridge is then started alone and
  drains its queue into its own platform flat out, so the load generator does not
  compete for the CPU. Rate = ratings stored ÷ time from the platform's first to its
  last storing batch (`received_at`).
- **Latency** at the fleet's rate: one fleet run per store, its live bridge posting to a
  platform on that store; press → platform is the platform's `received_at` minus the
  record's `rated_at` (same host clock), press → receipt the fleet's own figure.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.chain import Arrivals, Bridge, Child, run_fleet, start_broker
from bench.context import Context
from bench.measure import Latency, fmt_ms, sample_process
from bench.report import Table
from simulator.localbroker import Mosquitto, free_port
from simulator.localpostgres import PostgresServer

BATCH = 100
STALL_S = 5.0   # a drain that stores nothing new for this long has finished (or stuck)


class CityPlatform:
    """`hcp-platform run` on `store_url`, in its own process."""

    def __init__(self, workdir: Path, store_url: str) -> None:
        self.port = free_port()
        self.store_url = store_url
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.url = self.base_url + "/api/ratings"
        config = workdir / "platform.toml"
        config.write_text(f'[store]\nurl = "{store_url}"\n[http]\n'
                          f'listen = "127.0.0.1:{self.port}"\nmax_batch = {BATCH}\n',
                          encoding="utf-8")
        self.child = Child([sys.executable, "-m", "city_platform", "run", "--config",
                            str(config)], workdir / "platform.log")
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{self.base_url}/healthz", timeout=1):
                    return
            except OSError:
                if not self.child.alive() or time.monotonic() > deadline:
                    raise RuntimeError("hcp-platform did not start: "
                                       + self.child.log()) from None
                time.sleep(0.1)

    def counts(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.base_url}/api/counts", timeout=30) as r:
            answer: dict[str, Any] = json.loads(r.read())
            return answer

    def stop(self) -> None:
        self.child.stop(30)


class _StoreReader:
    """The platform's store read directly (read-only): what the HTTP counts would cost
    the platform itself on every poll."""

    def __init__(self, url: str) -> None:
        from city_platform.store import Store

        self.store = Store.open(url, read_only=True)

    def count(self) -> int:
        return int(self.store.db.execute("SELECT COUNT(*) FROM ratings").fetchone()[0])

    def arrivals(self) -> Arrivals:
        """Ratings by the batch that stored them (`received_at` is per batch)."""
        from city_platform.store.db import as_time

        rows = self.store.db.execute("SELECT received_at, COUNT(*) FROM ratings "
                                     "GROUP BY received_at ORDER BY received_at").fetchall()
        if not rows:
            return Arrivals(0, 0.0, 0.0, 0)
        return Arrivals(sum(int(n) for _, n in rows), as_time(rows[0][0]).timestamp(),
                        as_time(rows[-1][0]).timestamp(), int(rows[0][1]))

    def press_to_platform(self) -> list[float]:
        """Seconds from each rating's `rated_at` (the device's clock when the key was
        handled) to its batch reaching the platform's store (`received_at`, taken as
        the batch's transaction begins: its commit comes a few ms later)."""
        from city_platform.store.db import as_time

        return [as_time(received).timestamp() - as_time(rated).timestamp()
                for rated, received in self.store.db.execute(
                    "SELECT rated_at, received_at FROM ratings").fetchall()]

    def close(self) -> None:
        self.store.close()


@dataclass(frozen=True)
class Drain:
    arrivals: Arrivals
    expected: int
    bridge_cpu_s: float
    platform_cpu_s: float


@dataclass(frozen=True)
class Live:
    achieved: float            # ratings/s the fleet achieved
    receipted: int
    to_platform: Latency | None
    to_receipt_p99: float | None


@dataclass(frozen=True)
class Chain:
    store: str
    live: Live
    drain: Drain


def _drain(bridge: Bridge, platform: CityPlatform, expected: int, limit_s: float) -> Drain:
    """Start the bridge alone; wait until its platform holds `expected` ratings, nothing
    new arrives for STALL_S, or `limit_s` passes; stop it."""
    reader = _StoreReader(platform.store_url)
    try:
        started = time.monotonic()
        bridge.start()
        bridge_before = sample_process(bridge.pid).cpu_s
        platform_before = sample_process(platform.child.pid).cpu_s
        _settle(reader.count, expected, limit_s - (time.monotonic() - started))
        bridge_cpu = sample_process(bridge.pid).cpu_s - bridge_before
        platform_cpu = sample_process(platform.child.pid).cpu_s - platform_before
        bridge.stop()
        return Drain(reader.arrivals(), expected, bridge_cpu, platform_cpu)
    finally:
        reader.close()


def _settle(count: Callable[[], int], expected: int, limit_s: float) -> None:
    """Poll `count` until it reaches `expected`, stays the same for STALL_S, or
    `limit_s` passes."""
    deadline = time.monotonic() + limit_s
    seen, since = count(), time.monotonic()
    while seen < expected and time.monotonic() < min(deadline, since + STALL_S):
        time.sleep(0.1)
        now = count()
        if now != seen:
            seen, since = now, time.monotonic()


def _live(ctx: Context, name: str, broker: Mosquitto, url: str, size: dict[str, Any]
          ) -> Live:
    """One fleet run with a live bridge posting to a platform on `url`."""
    platform = CityPlatform(ctx.scratch(f"chain-{name}-live-platform"), url)
    try:
        bridge = Bridge(ctx.scratch(f"chain-{name}-live-bridge"), broker, platform.url,
                        f"live-{name}", f"live-{name}").start()
        try:
            fleet = run_fleet(ctx.scratch(f"chain-{name}-fleet"), broker,
                              device_prefix=f"CITY{name.upper()}", **size)
        finally:
            bridge.stop()
    finally:
        platform.stop()
    reader = _StoreReader(url)
    try:
        seconds = reader.press_to_platform()
    finally:
        reader.close()
    p99 = (fleet.get("latency_ms") or {}).get("p99")
    return Live(float(fleet["rate_achieved"]), int(fleet["receipted"]),
                Latency.of_seconds(seconds) if seconds else None,
                float(p99) if isinstance(p99, int | float) else None)


def run_chain(ctx: Context, pg: PostgresServer) -> list[Chain]:
    """The chain into PostgreSQL and into SQLite: live latency, then the drains."""
    if ctx.quick:
        size = {"devices": 20, "rate": 40.0, "duration_s": 3.0, "workers": 1}
    else:
        size = {"devices": 500, "rate": 500.0, "duration_s": 20.0, "workers": 2}
    stores = {"PostgreSQL": ("pg", pg.create_database, pg.create_database),
              "SQLite": ("lite", lambda: _sqlite_url(ctx, "live"),
                         lambda: _sqlite_url(ctx, "drain"))}
    broker = start_broker(ctx.scratch("chain-broker"))
    platforms: list[CityPlatform] = []
    try:
        drains: dict[str, tuple[Bridge, CityPlatform]] = {}
        for store, (name, _, drain_url) in stores.items():
            platforms.append(CityPlatform(ctx.scratch(f"chain-{name}-drain-platform"),
                                          drain_url()))
            bridge = Bridge(ctx.scratch(f"chain-{name}-drain-bridge"), broker,
                            platforms[-1].url, f"drain-{name}", f"drain-{name}")
            bridge.start()
            bridge.stop()   # its session queues every rating from now on
            drains[store] = (bridge, platforms[-1])
        lives = {store: _live(ctx, name, broker, live_url(), size)
                 for store, (name, live_url, _) in stores.items()}
        expected = sum(live.receipted for live in lives.values())
        limit = 30.0 if ctx.quick else 120.0
        return [Chain(store, lives[store], _drain(bridge, platform, expected, limit))
                for store, (bridge, platform) in drains.items()]
    finally:
        for platform in platforms:
            platform.stop()
        broker.stop()


def _sqlite_url(ctx: Context, name: str) -> str:
    return f"sqlite:///{ctx.scratch(f'chain-sqlite-{name}') / 'ratings.db'}"


def chain_table(chains: list[Chain]) -> Table:
    table = Table(["store", "drained, one bridge", "ratings stored",
                   "CPU per rating (bridge / platform)", "press → platform p50 / p99",
                   "press → receipt p99 (fleet)", "fleet rate"],
                  title="With the bridge in front: hcp-sim fleet → mosquitto → hcp-bridge "
                        "→ hcp-platform")
    for c in chains:
        d, live = c.drain, c.live
        stored = max(d.arrivals.count, 1)
        latency = (f"{fmt_ms(live.to_platform.p50)} / {fmt_ms(live.to_platform.p99)}"
                   if live.to_platform else "—")
        # CPU time comes in clock ticks (10 ms): a drain too short to use a few says
        # nothing per rating.
        cpu = (f"{d.bridge_cpu_s / stored * 1e6:.0f} / "
               f"{d.platform_cpu_s / stored * 1e6:.0f} µs"
               if min(d.bridge_cpu_s, d.platform_cpu_s) >= 0.05 else "too short to measure")
        table.add(c.store, f"{d.arrivals.rate:,.0f} ratings/s",
                  f"{d.arrivals.count:,} of {d.expected:,}", cpu, latency,
                  fmt_ms(live.to_receipt_p99) if live.to_receipt_p99 else "—",
                  f"{live.achieved:g}/s, {live.receipted:,} ratings")
    return table


def chain_method(quick: bool) -> str:
    devices, rate, duration = (20, 40, 3) if quick else (500, 500, 20)
    return (
        f"With the bridge in front: a private mosquitto (as benchmark 3), `hcp-bridge run` "
        f"with the production defaults (`batch_max` 100, `batch_wait_ms` 50, `concurrency` "
        f"2) and `hcp-platform run`, each its own process. For each store, `hcp-sim fleet "
        f"--devices {devices} --rate {rate} --duration {duration}` runs with a live bridge "
        f"into a platform on that store (latency: press → platform is `received_at`, taken "
        f"as the batch's transaction begins, minus the record's `rated_at`; press → receipt "
        f"the fleet's figure, an upper bound that includes the way back). Meanwhile the "
        f"broker queues every rating of both fleet runs for two stopped bridge sessions, one "
        f"per store; each is then started alone against its own fresh platform and drains "
        f"flat out (rate = ratings stored ÷ time from the first to the last storing batch).")
