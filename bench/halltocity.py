"""End to end through the hall → city topology (SPEC §12, docs/hall-broker.md): hall
mosquittos, each bridged to one city mosquitto with the sample
systemd/examples/hall-bridge.conf, the bridge and the platform at the city; press →
platform at 500 ratings/s from 500 devices, next to the same fleets against a single
broker in the same run.

    python -m bench.halltocity [--quick]

`run(ctx)` is the `python -m bench` entry ("halltocity" in bench/__main__.py).
"""

from __future__ import annotations

import functools
import resource
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from bench.chain import Bridge, Platform, run_fleet, start_broker
from bench.context import Context
from bench.measure import Latency, fmt_ms, sample_process
from bench.report import Section, Table
from bench.standalone import standalone
from simulator.hallbroker import bridge_connected, hall_broker
from simulator.localbroker import Mosquitto

REGION = "421100"
BAR_MS = 250.0   # the single broker's bar (benchmark 3), kept through the extra hop


@dataclass(frozen=True)
class Size:
    halls: int
    devices_per_hall: int
    rate: float          # ratings per second across all halls
    duration_s: float

    @property
    def devices(self) -> int:
        return self.halls * self.devices_per_hall


FULL = Size(halls=5, devices_per_hall=100, rate=500.0, duration_s=20.0)
QUICK = Size(halls=2, devices_per_hall=10, rate=40.0, duration_s=3.0)


def hall_ids(size: Size) -> list[str]:
    return [f"{REGION}-HG{n:02d}" for n in range(1, size.halls + 1)]


def device_ids(hall: str, size: Size) -> list[str]:
    """What `hcp-sim fleet --device-prefix HALL` calls its devices."""
    return [f"{hall}-{n:04d}" for n in range(1, size.devices_per_hall + 1)]


@dataclass(frozen=True)
class Run:
    """One topology's run: the platform's view and the fleets' summaries."""

    label: str
    to_platform: Latency
    stored: int
    rate_at_platform: float
    fleets: list[dict[str, Any]]
    broker_cpu_s: float     # every mosquitto of the topology, during the fleets' run
    bridge_cpu_s: float
    fleet_cpu_s: float      # the load generator: every `hcp-sim fleet` process

    @property
    def sent(self) -> int:
        return sum(int(f["sent"]) for f in self.fleets)

    @property
    def receipted(self) -> int:
        return sum(int(f["receipted"]) for f in self.fleets)

    @property
    def complete(self) -> bool:
        """Every rating a device stored reached the platform and was receipted."""
        return self.stored == self.sent == self.receipted

    def worst(self, key: str) -> float | None:
        """The highest of the fleets' press → receipt `key` (p99, max), in ms."""
        values = [f["latency_ms"].get(key) for f in self.fleets]
        numbers = [float(v) for v in values if isinstance(v, int | float)]
        return max(numbers) if numbers else None


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)


def _cpu(pids: list[int]) -> float:
    return sum(sample_process(pid).cpu_s for pid in pids)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _measure(ctx: Context, label: str, size: Size, city: Mosquitto,
             device_brokers: list[Mosquitto], stack: ExitStack) -> Run:
    """A platform and one bridge at `city`; one `hcp-sim fleet` per hall, all at once,
    hall k's devices on `device_brokers[k]`."""
    platform = Platform(ctx.scratch(f"h2c-{label}-platform"))
    stack.callback(platform.stop)
    # A plain subscription (no shared group), as docs/hall-broker.md says for a city
    # mosquitto; the same in both topologies so only the brokers differ.
    bridge = Bridge(ctx.scratch(f"h2c-{label}-bridge"), city, platform.url,
                    f"h2c-{label}", "")
    stack.callback(bridge.stop)   # before start: a bridge that never gets healthy too
    bridge.start()
    brokers = [city, *[b for b in device_brokers if b is not city]]
    pids = [b.pid for b in brokers if b.pid is not None]
    broker_before, bridge_before = _cpu(pids), _cpu([bridge.pid])
    halls = hall_ids(size)

    workdirs = [ctx.scratch(f"h2c-{label}-fleet{k + 1}") for k in range(len(halls))]

    def fleet(k: int) -> dict[str, Any]:
        return run_fleet(workdirs[k], device_brokers[k], devices=size.devices_per_hall,
                         rate=size.rate / size.halls, duration_s=size.duration_s, workers=1,
                         device_prefix=halls[k])

    # The fleets are the only children that end (and are waited for) meanwhile.
    children_before = _children_cpu()
    with ThreadPoolExecutor(len(halls)) as pool:
        fleets = list(pool.map(fleet, range(len(halls))))
    fleet_cpu = _children_cpu() - children_before
    broker_cpu, bridge_cpu = _cpu(pids) - broker_before, _cpu([bridge.pid]) - bridge_before
    expected = sum(int(f["receipted"]) for f in fleets)
    _wait(lambda: platform.count() >= expected, 30, f"{expected} ratings at the platform")
    samples = platform.press_to_platform()
    if not samples:
        raise RuntimeError(f"{label}: no rating reached the platform\n{bridge_log(bridge)}")
    run = Run(label, Latency.of_seconds(samples), len(samples), platform.arrivals().rate,
              fleets, broker_cpu, bridge_cpu, fleet_cpu)
    if not run.complete:
        # What a reader of the report needs to look further (the scratch directory is
        # gone unless --keep).
        print(f"== halltocity, {label}: {run.stored:,} of {run.sent:,} ratings at the "
              f"platform\n{bridge_log(bridge)}\n--- city broker ---\n"
              f"{city.log_text()[-3000:]}", file=sys.stderr)
    return run


def bridge_log(bridge: Bridge) -> str:
    return "--- bridge ---\n" + (bridge.child.log() if bridge.child is not None else "")


def _single(ctx: Context, size: Size) -> Run:
    with ExitStack() as stack:
        broker = start_broker(ctx.scratch("h2c-single-broker"))
        stack.callback(broker.stop)
        return _measure(ctx, "single", size, broker, [broker] * size.halls, stack)


def _hall_to_city(ctx: Context, size: Size) -> Run:
    with ExitStack() as stack:
        city = start_broker(ctx.scratch("h2c-city-broker"))
        stack.callback(city.stop)
        halls = []
        for hall in hall_ids(size):
            # The queue limit and autosave of the sample production config, as the city's.
            broker = hall_broker(ctx.scratch(f"h2c-hall-{hall}"), city, hall,
                                 device_ids(hall, size), max_queued_messages=250_000,
                                 autosave_interval=10).start()
            stack.callback(broker.stop)
            halls.append(broker)
        for hall in hall_ids(size):
            _wait(functools.partial(bridge_connected, city, hall), 30,
                  f"hall {hall} bridged to the city")
        return _measure(ctx, "halls", size, city, halls, stack)


def run(ctx: Context) -> Section:
    size = QUICK if ctx.quick else FULL
    per_hall = size.rate / size.halls
    section = Section(
        "halltocity", "Hall → city: end to end through hall brokers",
        f"{size.halls} hall mosquittos, each bridged to one city mosquitto with the sample "
        f"`systemd/examples/hall-bridge.conf` (only the address, the hall id and one "
        f"receipt and one config line per device replaced; MQTT 5, persistent on both "
        f"sides), queue limit and autosave as in the sample production config; "
        f"`hcp-bridge run` (production defaults, `shared_group = \"\"` as "
        f"docs/hall-broker.md says) and the reference platform (`hcp-sim platform`) at the "
        f"city. One `hcp-sim fleet --devices {size.devices_per_hall} --rate {per_hall:g} "
        f"--duration {size.duration_s:g}` per hall, all started at once ({size.devices} "
        f"devices, {size.rate:g} ratings/s in all; the real daemon per device, fsync'ed "
        f"outboxes), each on its hall's broker. **Baseline, same run, run first:** the same "
        f"fleets, bridge and platform against a single mosquitto (all devices on it). Press "
        f"→ platform is the platform's `received_at` minus the record's `rated_at`, as in "
        f"benchmark 3; the bar is benchmark 3's, through one more broker hop.")
    single = _single(ctx, size)
    halls = _hall_to_city(ctx, size)

    section.check(
        f"press → platform through {size.halls} halls → city at {size.rate:g}/s from "
        f"{size.devices} devices, p99",
        f"{fmt_ms(halls.to_platform.p99)} (p50 {fmt_ms(halls.to_platform.p50)}; "
        f"{halls.stored:,} of {halls.sent:,} at the platform)",
        f"{fmt_ms(single.to_platform.p99)} (single broker; {single.stored:,} of "
        f"{single.sent:,})",
        f"p99 ≤ {BAR_MS:g} ms, every rating at the platform",
        halls.to_platform.p99 <= BAR_MS and halls.complete)

    table = Table(["topology", "press → platform p50", "p99", "max", "ratings stored",
                   "sent / receipted", "rate at the platform",
                   "press → receipt p99 / max (worst fleet)",
                   "CPU: mosquittos / bridge / fleets"],
                  title=f"Latency at {size.rate:g} ratings/s asked from {size.devices} "
                        f"devices")
    for r, name in ((single, "one mosquitto"),
                    (halls, f"{size.halls} hall mosquittos → city mosquitto")):
        lat = r.to_platform
        table.add(name, fmt_ms(lat.p50), fmt_ms(lat.p99), fmt_ms(lat.max), f"{r.stored:,}",
                  f"{r.sent:,} / {r.receipted:,}", f"{r.rate_at_platform:,.0f}/s",
                  f"{_ms(r.worst('p99'))} / {_ms(r.worst('max'))}",
                  f"{r.broker_cpu_s:.1f} s / {r.bridge_cpu_s:.1f} s / {r.fleet_cpu_s:.1f} s")
    section.tables.append(table)
    for r in (single, halls):
        pending = sum(int(f["pending"]) for f in r.fleets)
        if not r.complete:
            section.notes.append(
                f"{r.label}: {r.sent:,} ratings sent, {r.stored:,} at the platform, "
                f"{pending} still pending at the fleets' end: the latency is over those "
                f"stored.")
    section.notes.append(
        "Rate at the platform: ratings stored ÷ the span of their arrival; the fleets "
        "start together but each connects its devices first, so the ends of the run "
        "overlap less than the middle. The fleets' CPU (the load generator, "
        f"{size.halls} processes of {size.devices_per_hall} devices) shares the "
        "machine's cores with the chain; the devices press whatever the chain does (each "
        "rating goes to the outbox first), so a rate well below the one asked means the "
        "fleets could not press that fast on this machine at that moment.")
    return section


def _ms(value: float | None) -> str:
    return "—" if value is None else fmt_ms(value)


def main(argv: list[str] | None = None) -> int:
    return standalone("python -m bench.halltocity", run, argv)


if __name__ == "__main__":
    sys.exit(main())
