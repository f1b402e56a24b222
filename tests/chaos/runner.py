"""One chaos run: start the chain, play the windows, inject faults for `minutes`, then
turn the faults off, drain, and hold the platform against the ledger.

    result = ChaosRun(ChaosOptions(minutes=2, seed=7, workdir=path)).run()
    print(result.text()); sys.exit(0 if result.ok else 1)
"""

from __future__ import annotations

import json
import logging
import random
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.chaos.chain import PREFIX, Chain, Crash
from tests.chaos.faults import KINDS, NET_KINDS, FaultInjector
from tests.chaos.ledger import Ledger, Verdict, read_platform
from tests.chaos.netns import NetLab, unavailable_reason
from tests.chaos.report import Report
from tests.chaos.window import WindowWorker

log = logging.getLogger("chaos")

STATUS_EVERY_S = 1.0


@dataclass
class ChaosOptions:
    minutes: float = 2.0
    devices: int = 3
    seed: int | None = None
    mean_fault_gap_s: float = 3.0
    resend_after_s: float = 5.0
    drain_timeout_s: float = 90.0
    workdir: Path | None = None
    disks: bool = True
    netns: bool = True           # devices in namespaces of their own (network faults)
    kinds: tuple[str, ...] = KINDS
    overtime_s: float = 60.0     # at most this much longer until every kind was injected
    progress: bool = False       # a line every 10 s on stderr


class EventWatch:
    """Counts the devices' `event` messages (storage_error, serial_error, …) for the report;
    reconnects by itself across broker faults (events are information: some are lost
    with a killed device, and that is by design)."""

    def __init__(self, host: str, port: int, ledger: Ledger) -> None:
        self.ledger = ledger
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="chaos-events",
                                  clean_session=True)
        self.client.on_connect = lambda c, *_: c.subscribe(f"{PREFIX}/+/event", qos=1)
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 2)
        self.client.connect_async(host, port, keepalive=5)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            name = json.loads(message.payload)["event"]
        except (ValueError, KeyError, TypeError):
            name = "(malformed)"
        self.ledger.device_event(str(name))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class ChaosRun:
    options: ChaosOptions
    ledger: Ledger = field(default_factory=Ledger)

    def run(self) -> Report:
        o = self.options
        seed = o.seed if o.seed is not None else random.randrange(2**31)
        rng = random.Random(seed)
        workdir = o.workdir or Path(tempfile.mkdtemp(prefix="hcp-chaos-"))
        netns_skip: str | None = None
        if not o.netns:
            netns_skip = "devices not in namespaces (--no-netns)"
        elif any(k in o.kinds for k in NET_KINDS):
            netns_skip = unavailable_reason()
        else:
            netns_skip = "no network fault asked for"
        chain = Chain(workdir, devices=o.devices, resend_after_s=o.resend_after_s,
                      use_disks=o.disks,
                      netlab=NetLab(o.devices) if netns_skip is None else None)
        chain.netns_skip_reason = netns_skip
        workers: list[WindowWorker] = []
        faults: FaultInjector | None = None
        events: EventWatch | None = None
        started = time.monotonic()
        drain_s: float | None = None
        phases: dict[str, float] = {}
        balanced = False
        verdict: Verdict | None = None
        try:
            chain.start()
            phases["start"] = time.monotonic() - started
            events = EventWatch(chain.broker.host, chain.broker.port, self.ledger)
            workers = [WindowWorker(chain, d, self.ledger, random.Random(rng.random()))
                       for d in chain.devices]
            for worker in workers:
                worker.start()
            faults = FaultInjector(chain, self.ledger, random.Random(rng.random()),
                                   o.mean_fault_gap_s, o.kinds)
            faults.start()
            chaos_until = time.monotonic() + o.minutes * 60
            self._watch(chain, until=chaos_until)
            # Kinds that share a part (the four platform faults) wait for it, so a short run
            # can end before the deck has dealt each of them: a little overtime, so that
            # every kind is met once.
            overtime = time.monotonic()
            while faults.missing() and time.monotonic() < overtime + o.overtime_s:
                self._watch(chain, until=time.monotonic() + 1.0)
            phases["overtime"] = time.monotonic() - overtime
            # Faults off, everything repaired; the windows finish what they were doing.
            wind_down = time.monotonic()
            faults.stop_and_heal()
            for worker in workers:
                worker.stop()
            for worker in workers:
                worker.join(60)
            phases["wind_down"] = time.monotonic() - wind_down
            drain_started = time.monotonic()
            balanced = self._drain(chain, drain_started + o.drain_timeout_s)
            drain_s = time.monotonic() - drain_started
            verdict = self.ledger.reconcile(read_platform(chain.workdir / "platform.db"))
        finally:
            network = describe_network(chain)
            stopping = time.monotonic()
            if events is not None:
                events.close()
            for worker in workers:
                worker.stop()
                worker.side.close()
            chain.close()
            phases["stop"] = time.monotonic() - stopping
        return Report(
            seed=seed, workdir=workdir, options=o, ledger=self.ledger, verdict=verdict,
            crashes=chain.crashes, balanced=balanced, drain_s=drain_s, phases=phases,
            duration_s=time.monotonic() - started,
            fault_errors=faults.errors if faults else [],
            skipped=faults.skipped if faults else {},
            worker_errors=[f"{w.device.name}: {e}" for w in workers for e in w.errors],
            log_findings=scan_logs(chain), network=network)

    # While the faults run ---------------------------------------------------------------

    def _watch(self, chain: Chain, until: float) -> None:
        next_status = 0.0
        next_progress = time.monotonic() + 10
        while time.monotonic() < until:
            for crash in chain.check_crashes():
                log.error("%s exited by itself (status %s)", crash.component, crash.returncode)
            now = time.monotonic()
            if now >= next_status:
                self._poll_status(chain)
                next_status = now + STATUS_EVERY_S
            if self.options.progress and now >= next_progress:
                next_progress = now + 10
                self._progress(until - now)
            time.sleep(0.25)

    def _poll_status(self, chain: Chain) -> None:
        for device in chain.devices:
            sim = device.sim
            if device.up.is_set() and sim is not None:
                try:
                    sim.request_status()
                except OSError:
                    pass

    def _progress(self, left_s: float) -> None:
        outcomes = self.ledger.outcomes()
        import sys
        print(f"chaos: {left_s:4.0f} s left; confirmed {len(self.ledger.rated_frames)}, "
              f"faults {sum(self.ledger.faults.values())}, backlog "
              f"{sum(self.ledger.backlog_now.values())}, outcomes {dict(outcomes)}",
              file=sys.stderr, flush=True)

    # The final drain ---------------------------------------------------------------------

    def _drain(self, chain: Chain, deadline: float) -> bool:
        """Wait until every device's outbox is empty and every confirmed rating is at the
        platform. Once all outboxes are empty nothing more can arrive: a rating leaves an
        outbox only on a receipt, which the bridge sends after the platform answered."""
        must = set(self.ledger.must_arrive())
        while time.monotonic() < deadline:
            chain.check_crashes()
            # Fresh answers only: forget what was polled before.
            for device in chain.devices:
                self.ledger.backlog_now.pop(device.name, None)
            self._poll_status(chain)
            time.sleep(1.0)
            assert chain.platform is not None
            stored = set(chain.platform.store.rating_ids())
            empty = (len(self.ledger.backlog_now) == len(chain.devices)
                     and not any(self.ledger.backlog_now.values()))
            if empty and must <= stored:
                return True
        return False


def describe_network(chain: Chain) -> str:
    lab = chain.netlab
    if lab is None:
        return f"loopback ({chain.netns_skip_reason})"
    if not lab.nets:
        return "namespaces (not set up)"
    first = lab.nets[0].host_ip.rsplit(".", 1)[0]
    return (f"a namespace each, veth /30s in {first}.0/24, broker listener "
            f"{first}.x:{chain.netns_port} per device")


LOG_PATTERNS = {
    "traceback": re.compile(r"^Traceback \(most recent call last\)", re.M),
    "outbox damage": re.compile(r"outbox: dropped \d+ damaged record|outbox: recovered", re.M),
}


def scan_logs(chain: Chain) -> list[str]:
    """Lines in the daemons' logs that a clean run should not have."""
    found: list[str] = []
    logs: list[tuple[str, Path]] = [(d.name, d.process.log_path) for d in chain.devices]
    logs += [(b.name, b.process.log_file) for b in chain.bridges]
    for name, path in logs:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            continue
        for what, pattern in LOG_PATTERNS.items():
            for m in pattern.finditer(text):
                excerpt = text[m.start():m.start() + 1500]
                found.append(f"{name}: {what} in {path}:\n{excerpt}")
    return found


__all__ = ["ChaosOptions", "ChaosRun", "Crash", "Report"]
