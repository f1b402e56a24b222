"""A NATS node restart during a run (SPEC §12, docs/brokers.md): a three-node NATS cluster
with JetStream and MQTT 3.1.1, fleet devices on one node, the bridge (`[mqtt] protocol =
"3.1.1"`, no shared group) on another, the reference platform. At 200 ratings/s the
devices' node is SIGKILLed and started again; what a device confirmed and never reached
the platform (lost), what the platform received more than once, and the longest delay of
a rating from press to platform, next to the same run without the restart.

    python -m bench.natsrestart [--quick]

`run(ctx)` is the `python -m bench` entry ("natsrestart" in bench/__main__.py).
"""

from __future__ import annotations

import logging
import sqlite3
import sys
import threading
import time
import tomllib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from bench.chain import Bridge, Platform
from bench.context import Context
from bench.measure import Latency, fmt_ms
from bench.report import Section, Table
from bench.standalone import standalone
from simulator.fleet_run import Fleet, FleetOptions, FleetResult
from simulator.fleet_stats import FleetStats
from simulator.localbroker import Mosquitto
from simulator.natscluster import NATS_SERVER, NatsCluster, NatsNode, nats_available
from simulator.platform import PlatformControl
from simulator.tomlfile import toml_text

DOWN_S = 3.0        # how long the killed node stays down
ACK_WAIT_S = 30.0   # the docs/brokers.md sample's: un-acknowledged messages come again after


@dataclass(frozen=True)
class Size:
    devices: int
    rate: float
    duration_s: float

    @property
    def kill_after(self) -> int:
        """Ratings the devices have confirmed when the node is killed: a third of the run."""
        return int(self.rate * self.duration_s / 3)


FULL = Size(devices=100, rate=200.0, duration_s=30.0)
QUICK = Size(devices=10, rate=40.0, duration_s=5.0)


@dataclass(frozen=True)
class Outcome:
    """One run, as the devices and the platform saw it."""

    label: str
    result: FleetResult
    confirmed: int             # ratings stored (thanks shown) by the devices
    lost: int                  # … never at the platform
    phantom: int               # at the platform, never confirmed by a device
    received_twice: int        # ratings the platform received more than once
    extra_copies: int          # copies beyond the first, over all ratings
    to_platform: Latency
    backlog_s: float | None    # the outage's last rating at the platform, after the return
    down_s: float | None       # how long the node was down


def _nats_bridge(workdir: Path, node: NatsNode, platform: Platform) -> Bridge:
    """bench.chain's bridge (production defaults, no shared group) speaking MQTT 3.1.1."""
    bridge = Bridge(workdir, cast(Mosquitto, node), platform.url, "nats-bridge", "")
    config = tomllib.loads(bridge.config.read_text(encoding="utf-8"))
    config["mqtt"]["protocol"] = "3.1.1"
    bridge.config.write_text(toml_text(config), encoding="utf-8")
    return bridge


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _stamps(platform: Platform) -> list[tuple[float, float]]:
    """(rated_at, received_at) of every stored rating, epoch seconds."""
    db = sqlite3.connect(f"file:{platform.db_path}?mode=ro", uri=True, timeout=10)
    try:
        rows = db.execute("SELECT rated_at, received_at FROM ratings").fetchall()
    finally:
        db.close()
    return [(_epoch(rated), _epoch(received)) for rated, received in rows]


def _one_run(ctx: Context, size: Size, restart: bool) -> Outcome:
    label = "node restarted" if restart else "no restart"
    tag = "restart" if restart else "steady"
    cluster = NatsCluster(ctx.scratch(f"nats-{tag}-cluster"), ack_wait_s=ACK_WAIT_S,
                          die_with_parent=True)
    platform: Platform | None = None
    bridge: Bridge | None = None
    log_handler = logging.FileHandler(ctx.scratch(f"nats-{tag}-fleet") / "fleet.log")
    log_handler.setLevel(logging.WARNING)
    root = logging.getLogger()
    root.addHandler(log_handler)
    try:
        cluster.start()
        devices_node, bridge_node, _third = cluster.nodes
        platform = Platform(ctx.scratch(f"nats-{tag}-platform"))
        bridge = _nats_bridge(ctx.scratch(f"nats-{tag}-bridge"), bridge_node, platform)
        bridge.start(wait=False)
        _wait_healthy(bridge)
        stats = FleetStats(keep_ids=True)
        options = FleetOptions(
            devices=size.devices, rate=size.rate, duration_s=size.duration_s,
            host=devices_node.host, port=devices_node.mqtt_port, device_prefix="NATS",
            region_code="421100", hall_id="HG01", protocol="3.1.1", drain_timeout_s=120,
            seed=16, data_dir=ctx.scratch(f"nats-{tag}-outboxes"))
        results: list[FleetResult] = []
        runner = threading.Thread(
            target=lambda: results.append(Fleet(options, stats=stats).run()),
            name="nats-fleet", daemon=True)
        runner.start()
        returned_at = down_s = None
        if restart:
            deadline = time.monotonic() + size.duration_s + 60
            while stats.progress().sent < size.kill_after:
                if not runner.is_alive() or time.monotonic() > deadline:
                    raise RuntimeError("the fleet never got a third of the way: "
                                       f"{stats.progress()}\n{cluster.log_text()}")
                time.sleep(0.02)
            killed = time.monotonic()
            devices_node.kill()
            time.sleep(DOWN_S)
            devices_node.start()
            returned_at, down_s = time.time(), time.monotonic() - killed
        runner.join(size.duration_s + 300)
        if runner.is_alive() or not results:
            raise RuntimeError(f"the fleet did not finish\n{cluster.log_text()}")
        result = results[0]
        ids = set(stats.rating_ids or [])
        seen = PlatformControl(platform.base_url).times_seen()
        copies = {rating: n for per_device in seen.values() for rating, n in per_device.items()}
        stamps = _stamps(platform)
    finally:
        root.removeHandler(log_handler)
        log_handler.close()
        if bridge is not None:
            bridge.stop()
        if platform is not None:
            platform.stop()
        cluster.close()
    if not stamps:
        raise RuntimeError(f"{label}: no rating reached the platform")
    backlog_s = None
    if returned_at is not None:
        during = [received for rated, received in stamps if rated < returned_at]
        backlog_s = max(during) - returned_at if during else None
    return Outcome(
        label, result, len(ids), len(ids - copies.keys()), len(copies.keys() - ids),
        sum(n > 1 for n in copies.values()), sum(n - 1 for n in copies.values() if n > 1),
        Latency.of_seconds([received - rated for rated, received in stamps]), backlog_s,
        down_s)


def _wait_healthy(bridge: Bridge, tries: int = 3) -> None:
    """The bridge on NATS may take longer than bench.chain's 15 s to have its
    subscriptions granted (each a JetStream consumer)."""
    for attempt in range(tries):
        try:
            bridge.wait_healthy()
            return
        except RuntimeError:
            if attempt == tries - 1:
                raise


def run(ctx: Context) -> Section:
    size = QUICK if ctx.quick else FULL
    section = Section(
        "natsrestart", "NATS: a node killed and restarted during a run",
        f"A three-node NATS cluster (`{NATS_SERVER}`, JetStream, MQTT 3.1.1; each node's "
        f"config as in docs/brokers.md: `stream_replicas: 3`, `consumer_replicas: 1`, "
        f"`ack_wait: \"{ACK_WAIT_S:g}s\"`) on loopback ports, started afresh for each run. "
        f"{size.devices} fleet devices (the real daemon each, fsync'ed outboxes, "
        f"`[mqtt] protocol = \"3.1.1\"`, run in the benchmark's process as "
        f"tests/test_broker_nats.py does, to know every rating id a device confirmed) on "
        f"node 1 press {size.rate:g} ratings/s for {size.duration_s:g} s; `hcp-bridge run` "
        f"(production defaults, `protocol = \"3.1.1\"`, `shared_group = \"\"`) on node 2 "
        f"forwards to the reference platform (`hcp-sim platform`). **Restart:** once the "
        f"devices have confirmed {size.kill_after:,} ratings, node 1 (the devices' node) is "
        f"SIGKILLed and started again {DOWN_S:g} s later; the devices keep rating "
        f"meanwhile. **Baseline, same run:** the same without the restart. Lost: confirmed "
        f"by a device (its thanks shown), never at the platform. Duplicated: received by "
        f"the platform more than once (its `times_seen`; stored once either way). Delay: "
        f"the platform's `received_at` minus the record's `rated_at`.")
    if not nats_available():
        section.notes.append(f"**Skipped:** {NATS_SERVER} is not installed (`./hcp test` "
                             f"installs nats-server).")
        return section
    steady = _one_run(ctx, size, restart=False)
    restarted = _one_run(ctx, size, restart=True)

    section.check("ratings lost (confirmed by a device, never at the platform), node "
                  "restarted", f"{restarted.lost} of {restarted.confirmed:,}",
                  f"{steady.lost} of {steady.confirmed:,} (no restart)", "0",
                  restarted.lost == 0)
    section.check("ratings the platform received more than once, node restarted",
                  f"{restarted.received_twice}", f"{steady.received_twice} (no restart)",
                  "0", restarted.received_twice == 0)
    section.check("longest delay of a rating, press → platform, node restarted",
                  _ms(restarted.to_platform.max),
                  f"{_ms(steady.to_platform.max)} (no restart)", "reported", None)

    table = Table(["run", "confirmed", "lost", "received twice (extra copies)",
                   "not from a device", "press → platform p50 / p99 / max",
                   "press → receipt p99 / max (fleet)", "achieved rate"],
                  title=f"{size.devices} devices at {size.rate:g} ratings/s asked")
    for o in (steady, restarted):
        lat, fleet = o.to_platform, o.result.latency_ms
        table.add(o.label, f"{o.confirmed:,}", o.lost, f"{o.received_twice} "
                  f"({o.extra_copies})", o.phantom,
                  f"{_ms(lat.p50)} / {_ms(lat.p99)} / {_ms(lat.max)}",
                  f"{_ms(fleet.get('p99'))} / {_ms(fleet.get('max'))}",
                  f"{o.result.achieved_rate:,.0f}/s")
    section.tables.append(table)
    if restarted.down_s is not None:
        section.notes.append(
            f"Node 1 was down {restarted.down_s:.1f} s"
            + (f"; the last rating pressed before its return was at the platform "
               f"{restarted.backlog_s:.1f} s after it (SPEC §12: within 60 s)."
               if restarted.backlog_s is not None else "."))
    for o in (steady, restarted):
        if not o.result.ok:
            summary: dict[str, Any] = o.result.summary()
            section.notes.append(
                f"{o.label}: the fleet did not finish cleanly: pending {summary['pending']}, "
                f"backlog left {summary['backlog_left']}, problem {summary['problem']}, "
                f"device errors {len(summary['device_errors'])}.")
    return section


def _ms(value: float | None) -> str:
    """A delay that may run to seconds (an outage's), or "—"."""
    if value is None:
        return "—"
    return f"{value / 1000:.1f} s" if value >= 10_000 else fmt_ms(value)


def main(argv: list[str] | None = None) -> int:
    return standalone("python -m bench.natsrestart", run, argv)


if __name__ == "__main__":
    sys.exit(main())
