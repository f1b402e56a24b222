"""The faults a service hall meets, injected on a random schedule into the running chain.

Each kind takes one part down or makes it misbehave and schedules its own repair; a part
already under a fault is not hit again until repaired (a dead bridge cannot be killed
twice). Kinds are dealt from a shuffled deck, so a short run still meets every one.
`heal_all()` repairs everything at once for the final drain.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from simulator.windowlink import LinkError
from tests.chaos.chain import Chain, Device
from tests.chaos.ledger import Ledger
from tests.chaos.netns import Net, NetnsUnavailable

log = logging.getLogger("chaos.faults")

KINDS = (
    "device_kill",        # SIGKILL of a daemon (a power cut as far as it knows), restart
    "bridge_kill",        # SIGKILL of one of the two bridges, restart
    "bridge_pause",       # SIGSTOP / SIGCONT of a bridge: hung with ratings in hand
    "broker_kill",        # SIGKILL of mosquitto, restart with its persistence
    "broker_kill_wipe",   # ... restart with its persistence wiped (disk lost)
    "broker_pause",       # SIGSTOP / SIGCONT: a hung broker or a partition
    "platform_error",     # the platform answers 500 / 503 / 429 + Retry-After
    "platform_hang",      # the platform reads requests and never answers
    "platform_drop",      # the platform stores, then loses its answer
    "platform_slow",      # the platform stores, answers after the bridge gave up
    "serial_unplug",      # the window's serial peer closes and stays away a while
    "serial_garbage",     # junk on the serial line
    "disk_full",          # the device's data directory fills up, then space returns
    "clock_step",         # a device's wall clock steps forward or back
    "net_loss",           # N % of a device's TCP packets dropped at random (nftables numgen)
    "net_slow",           # a device's uplink at 64 kbit/s (tc tbf)
    "net_partition",      # a device's uplink down for a while
    "net_flap",           # a device's uplink down and up every second or two
    "display_fault",      # a device's panel stops answering (sim `fail` op), then returns
    "indicator_fault",    # a device's indicators report a failure, then work again
)
NET_KINDS = ("net_loss", "net_slow", "net_partition", "net_flap")

MAX_CLOCK_STEP_S = 6 * 3600   # below the 24 h duplicate-case memory on purpose

JUNK_LINES = (
    b'{"type":"ping","seq":77}*0000\n',                 # bad CRC
    b'{"type":"case_completed","seq":78,"case_id":"X"}\n',  # no CRC
    b"\xff\xfe\x00 line noise \x1b[2J\n",               # binary
    b'{"type":"ping","seq":79,"nested":' + b"[" * 64 + b"\n",  # broken JSON
    b"Z" * 5000 + b"\n",                               # overlong
    b"\n\r\n",                                         # empty lines
    b"\x00\x13noise",                                   # no newline: spoils the next frame
)


@dataclass(order=True)
class _Repair:
    due: float
    n: int
    what: str = field(compare=False)
    run: Callable[[], None] = field(compare=False)
    part: str = field(compare=False)


class FaultInjector(threading.Thread):
    def __init__(self, chain: Chain, ledger: Ledger, rng: random.Random,
                 mean_gap_s: float = 3.0, kinds: tuple[str, ...] = KINDS) -> None:
        super().__init__(name="faults", daemon=True)
        self.chain = chain
        self.ledger = ledger
        self.rng = rng
        self.mean_gap_s = mean_gap_s
        self.skipped: dict[str, str] = {}
        if "disk_full" in kinds and chain.disk_skip_reason:
            self.skipped["disk_full"] = chain.disk_skip_reason
        if chain.netlab is None:
            for kind in NET_KINDS:
                if kind in kinds:
                    self.skipped[kind] = chain.netns_skip_reason or "devices not in namespaces"
        self.kinds = tuple(k for k in kinds if k not in self.skipped)
        self.errors: list[str] = []
        self._repairs: list[_Repair] = []
        self._busy: set[str] = set()
        self._counter = itertools.count()
        self._deck: list[str] = []
        self._injected: set[str] = set()
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self._working: list[threading.Thread] = []

    # Thread ----------------------------------------------------------------------------

    def run(self) -> None:
        next_fault = time.monotonic() + self.rng.expovariate(1 / self.mean_gap_s)
        while not self._halt.is_set():
            now = time.monotonic()
            self._run_due_repairs(now)
            if now >= next_fault:
                self._inject_one()
                next_fault = now + self.rng.expovariate(1 / self.mean_gap_s)
            with self._lock:
                due = min([next_fault] + [r.due for r in self._repairs])
            self._halt.wait(max(0.0, min(due - time.monotonic(), 0.5)))

    def stop_and_heal(self) -> None:
        """No more faults; repair everything now (for the final drain)."""
        self._halt.set()
        self.join(30)
        while True:
            self._run_due_repairs(float("inf"))
            with self._lock:
                working = [t for t in self._working if t.is_alive()]
                if not working and not self._repairs:
                    break
            for thread in working:
                thread.join(30)
        # Every uplink must be whole again for the drain: a repair that left a fault
        # behind is a bug of this runner, reported (and undone here).
        for device in self.chain.devices:
            net = device.net
            if net is not None and net.applied:
                self.errors.append(f"{device.name}'s uplink still had {sorted(net.applied)} "
                                   "after every repair ran")
                net.heal()

    # Scheduling ------------------------------------------------------------------------

    def _schedule(self, part: str, after_s: float, what: str, run: Callable[[], None]) -> None:
        with self._lock:
            heapq.heappush(self._repairs, _Repair(time.monotonic() + after_s,
                                                  next(self._counter), what, run, part))

    def _run_due_repairs(self, now: float) -> None:
        """Start every repair that is due, each in its own thread: a daemon takes a second
        or two to start, and the next fault must not wait for it."""
        while True:
            with self._lock:
                if not self._repairs or self._repairs[0].due > now:
                    return
                repair = heapq.heappop(self._repairs)
                thread = threading.Thread(target=self._repair, args=(repair,),
                                          name=f"repair {repair.what}", daemon=True)
                self._working = [t for t in self._working if t.is_alive()] + [thread]
            thread.start()

    def _repair(self, repair: _Repair) -> None:
        try:
            repair.run()
        except Exception as e:  # noqa: BLE001 - report it; the run's checks decide
            self.errors.append(f"repair {repair.what}: {type(e).__name__}: {e}")
            log.exception("repair %s failed", repair.what)
        with self._lock:
            if not any(r.part == repair.part for r in self._repairs):  # not rescheduled
                self._busy.discard(repair.part)

    def _deal(self) -> str:
        if not self._deck:
            self._deck = list(self.kinds)
            self.rng.shuffle(self._deck)
        return self._deck.pop()

    def _inject_one(self) -> None:
        """The next kind in the deck that finds something to hit; kinds that found nothing
        (their part is still under a fault) go back under the deck for later."""
        passed: list[str] = []
        for _ in range(len(self.kinds)):
            kind = self._deal()
            try:
                applied = getattr(self, f"_{kind}")()
            except Exception as e:  # noqa: BLE001
                self.errors.append(f"{kind}: {type(e).__name__}: {e}")
                log.exception("fault %s failed", kind)
                applied = True
            if applied:
                self._injected.add(kind)
                break
            passed.append(kind)
        self._deck[:0] = passed

    def missing(self) -> list[str]:
        """The kinds not injected yet."""
        return [k for k in self.kinds if k not in self._injected]

    def _claim(self, part: str) -> bool:
        with self._lock:
            if part in self._busy:
                return False
            self._busy.add(part)
            return True

    def _pick_device(self, prefix: str, need_up: bool = True) -> Device | None:
        devices = [d for d in self.chain.devices if not need_up or d.up.is_set()]
        self.rng.shuffle(devices)
        for device in devices:
            if self._claim(f"{prefix}:{device.name}"):
                return device
        return None

    # The kinds (each returns False when it found nothing to hit) -----------------------

    def _device_kill(self) -> bool:
        device = self._pick_device("device")
        if device is None:
            return False
        down_s = self.rng.uniform(0.3, 3.0)
        self.chain.kill_device(device)
        self.ledger.fault("device_kill", f"{device.name} for {down_s:.1f} s")
        self._schedule(f"device:{device.name}", down_s, f"start {device.name}",
                       lambda: self._start_device(device))
        return True

    def _start_device(self, device: Device, attempt: int = 1) -> None:
        """Start a device again; a start that fails is reported and retried (a daemon that
        cannot come back is exactly what this run is looking for)."""
        try:
            self.chain.start_device(device)
        except Exception as e:  # noqa: BLE001
            self.errors.append(f"start {device.name} (attempt {attempt}): "
                               f"{type(e).__name__}: {str(e)[-800:]}")
            self.chain.kill_device(device)
            if attempt < 5:
                self._schedule(f"device:{device.name}", 1.0, f"start {device.name}",
                               lambda: self._start_device(device, attempt + 1))

    def _bridge_kill(self) -> bool:
        bridges = list(self.chain.bridges)
        self.rng.shuffle(bridges)
        for bridge in bridges:
            if self._claim(f"bridge:{bridge.name}"):
                down_s = self.rng.uniform(0.3, 4.0)
                self.chain.kill_bridge(bridge)
                self.ledger.fault("bridge_kill", f"{bridge.name} for {down_s:.1f} s")
                self._schedule(f"bridge:{bridge.name}", down_s, f"start {bridge.name}",
                               functools.partial(self.chain.start_bridge, bridge))
                return True
        return False

    def _bridge_pause(self) -> bool:
        bridges = [b for b in self.chain.bridges if b.process.returncode is None]
        self.rng.shuffle(bridges)
        for bridge in bridges:
            if self._claim(f"bridge:{bridge.name}"):
                pause_s = self.rng.uniform(1.0, 8.0)
                if not self.chain.pause_bridge(bridge):
                    with self._lock:
                        self._busy.discard(f"bridge:{bridge.name}")
                    return False
                self.ledger.fault("bridge_pause", f"{bridge.name} for {pause_s:.1f} s")
                self._schedule(f"bridge:{bridge.name}", pause_s, f"SIGCONT {bridge.name}",
                               functools.partial(self.chain.resume_bridge, bridge))
                return True
        return False

    def _broker_kill(self, wipe: bool = False) -> bool:
        if not self._claim("broker"):
            return False
        down_s = self.rng.uniform(0.3, 3.0)
        self.chain.kill_broker(wipe)
        self.ledger.fault("broker_kill_wipe" if wipe else "broker_kill", f"for {down_s:.1f} s")
        self._schedule("broker", down_s, "start mosquitto", self.chain.start_broker)
        return True

    def _broker_kill_wipe(self) -> bool:
        return self._broker_kill(wipe=True)

    def _broker_pause(self) -> bool:
        if not self._claim("broker"):
            return False
        pause_s = self.rng.uniform(2.0, 9.0)
        self.chain.broker.pause()
        self.ledger.fault("broker_pause", f"for {pause_s:.1f} s")
        self._schedule("broker", pause_s, "SIGCONT mosquitto", self.chain.broker.resume)
        return True

    def _platform(self, kind: str, spec: dict[str, object], lasts_s: float) -> bool:
        if not self._claim("platform"):
            return False
        assert self.chain.platform is not None
        platform = self.chain.platform
        platform.chaos.set(spec)
        self.ledger.fault(kind, ", ".join(f"{k}={v}" for k, v in spec.items() if k != "mode"))
        self._schedule("platform", lasts_s, "platform back to normal",
                       lambda: _discard(platform.chaos.set({"mode": "normal"})))
        return True

    def _platform_error(self) -> bool:
        status = self.rng.choice((500, 503, 429))
        lasts_s = round(self.rng.uniform(2.0, 10.0), 1)
        spec: dict[str, object] = {"mode": "error", "status": status, "for_s": lasts_s}
        if status == 429:
            spec["retry_after"] = "1"
        return self._platform("platform_error", spec, lasts_s)

    def _platform_hang(self) -> bool:
        lasts_s = round(self.rng.uniform(2.0, 8.0), 1)
        return self._platform("platform_hang", {"mode": "hang", "for_s": lasts_s}, lasts_s)

    def _platform_drop(self) -> bool:
        requests = self.rng.randint(1, 4)
        return self._platform("platform_drop", {"mode": "drop", "requests": requests}, 5.0)

    def _platform_slow(self) -> bool:
        delay_s = round(self.rng.uniform(2.5, 6.0), 1)   # the bridges time out after 2 s
        lasts_s = round(self.rng.uniform(3.0, 8.0), 1)
        return self._platform("platform_slow", {"mode": "slow", "delay_s": delay_s,
                                                "for_s": lasts_s}, lasts_s)

    def _serial_unplug(self) -> bool:
        device = self._pick_device("serial", need_up=False)
        if device is None:
            return False
        away_s = self.rng.uniform(0.3, 5.0)
        unplugged = threading.Event()

        def hold_unplugged() -> None:
            # The adapter is gone: every reconnect the daemon tries is dropped at once.
            while not unplugged.wait(0.05):
                device.window.disconnect()

        device.window.disconnect()
        threading.Thread(target=hold_unplugged, name=f"unplug-{device.name}",
                         daemon=True).start()
        self.ledger.fault("serial_unplug", f"{device.name} for {away_s:.1f} s")
        self._schedule(f"serial:{device.name}", away_s, f"plug {device.name} back",
                       unplugged.set)
        return True

    def _serial_garbage(self) -> bool:
        devices = [d for d in self.chain.devices if d.window.connected]
        if not devices:
            return False
        device = self.rng.choice(devices)
        lines = self.rng.choices(JUNK_LINES, k=self.rng.randint(1, 6))
        try:
            for line in lines:
                device.window.send_raw(line)
        except LinkError:
            return False
        self.ledger.fault("serial_garbage", f"{device.name}: {len(lines)} line(s)")
        return True

    def _disk_full(self) -> bool:
        device = self._pick_device("disk", need_up=False)
        if device is None:
            return False
        disk = device.disk
        if disk is None:
            with self._lock:
                self._busy.discard(f"disk:{device.name}")
            return False
        full_s = self.rng.uniform(4.0, 12.0)
        written = disk.fill()
        self.ledger.fault("disk_full", f"{device.name} for {full_s:.1f} s "
                                       f"({written // 1024} KiB filler)")
        self._schedule(f"disk:{device.name}", full_s, f"free {device.name}'s disk", disk.free)
        return True

    def _clock_step(self) -> bool:
        devices = [d for d in self.chain.devices if d.up.is_set() and d.sim is not None]
        if not devices:
            return False
        device = self.rng.choice(devices)
        offset = 0.0 if self.rng.random() < 0.25 else round(
            self.rng.uniform(-MAX_CLOCK_STEP_S, MAX_CLOCK_STEP_S), 3)
        sim = device.sim
        if sim is None:
            return False
        try:
            sim.send({"op": "clock", "offset_s": offset})
        except OSError:
            return False
        self.ledger.fault("clock_step", f"{device.name} to host {offset:+.0f} s")
        return True

    # Network faults: the device's uplink (tests/chaos/netns.py), one at a time per device

    def _pick_net(self) -> tuple[Device, Net] | None:
        device = self._pick_device("net", need_up=False)
        if device is None:
            return None
        if device.net is None:
            with self._lock:
                self._busy.discard(f"net:{device.name}")
            return None
        return device, device.net

    def _net_loss(self) -> bool:
        picked = self._pick_net()
        if picked is None:
            return False
        device, net = picked
        percent = self.rng.randint(5, 30)
        lasts_s = self.rng.uniform(5.0, 20.0)
        net.loss(percent)
        self.ledger.fault("net_loss", f"{device.name}: {percent} % of TCP packets dropped "
                                      f"for {lasts_s:.1f} s")
        self._schedule(f"net:{device.name}", lasts_s, f"{device.name}'s loss off", net.no_loss)
        return True

    def _net_slow(self) -> bool:
        picked = self._pick_net()
        if picked is None:
            return False
        device, net = picked
        lasts_s = self.rng.uniform(5.0, 20.0)
        net.slow("64kbit", "16kbit", "600ms")
        self.ledger.fault("net_slow", f"{device.name} at 64 kbit/s for {lasts_s:.1f} s")
        self._schedule(f"net:{device.name}", lasts_s, f"{device.name}'s link fast", net.fast)
        return True

    def _net_partition(self) -> bool:
        picked = self._pick_net()
        if picked is None:
            return False
        device, net = picked
        lasts_s = self.rng.uniform(2.0, 15.0)
        net.down()
        self.ledger.fault("net_partition", f"{device.name} cut off for {lasts_s:.1f} s")
        self._schedule(f"net:{device.name}", lasts_s, f"{device.name}'s link up", net.up)
        return True

    def _net_flap(self) -> bool:
        picked = self._pick_net()
        if picked is None:
            return False
        device, net = picked
        lasts_s = self.rng.uniform(5.0, 15.0)
        rng = random.Random(self.rng.random())
        done = threading.Event()

        def flap() -> None:
            try:
                while not done.is_set():
                    net.down()
                    if done.wait(rng.uniform(0.5, 2.0)):
                        break
                    net.up()
                    done.wait(rng.uniform(0.5, 2.0))
                net.up()
            except NetnsUnavailable as e:   # the namespace went away under us (teardown)
                self.errors.append(f"net_flap {device.name}: {e}")

        thread = threading.Thread(target=flap, name=f"flap-{device.name}", daemon=True)
        thread.start()
        self.ledger.fault("net_flap", f"{device.name} flapping for {lasts_s:.1f} s")

        def steady() -> None:
            done.set()
            thread.join(10)
            net.up()

        self._schedule(f"net:{device.name}", lasts_s, f"{device.name}'s link steady", steady)
        return True

    # Driver faults through the sim socket's `fail` op (drivers/sim.py, HCP_SIM_FAULT_OP)

    def _driver(self, kind: str, part: str, error: str) -> bool:
        device = self._pick_device(part)
        if device is None:
            return False
        sim = device.sim
        try:
            if sim is None:
                raise OSError("no sim socket")
            sim.send({"op": "fail", "part": part, "error": error})
        except OSError:
            with self._lock:
                self._busy.discard(f"{part}:{device.name}")
            return False
        lasts_s = self.rng.uniform(2.0, 12.0)
        self.ledger.fault(kind, f"{device.name} for {lasts_s:.1f} s")

        def repair() -> None:
            # A restarted daemon came back with the part working; nothing to do then.
            current = device.sim
            if current is not None:
                with contextlib.suppress(OSError):
                    current.send({"op": "fail", "part": part, "error": None})

        self._schedule(f"{part}:{device.name}", lasts_s, f"{device.name}'s {part} back", repair)
        return True

    def _display_fault(self) -> bool:
        return self._driver("display_fault", "display",
                            "sim panel stopped answering (chaos display_fault)")

    def _indicator_fault(self) -> bool:
        return self._driver("indicator_fault", "indicators",
                            "sim indicators failed (chaos indicator_fault)")


def _discard(_value: object) -> None:
    """For a repair whose callee returns something nobody needs."""
