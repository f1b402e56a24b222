"""The whole chain on this machine, as real processes: mosquitto with persistence, the
reference platform, two bridges in one shared group, and several `hcp-device` daemons
with sim keys and screen whose serial port is a `socket://` the runner listens on.

With a `NetLab` (tests/chaos/netns.py) each device runs in a network namespace of its
own and reaches the broker over a veth pair, on a listener of the broker's bound to the
host end's address only; its serial port stays on the namespace's loopback.

`Chain` starts and stops the parts, knows which of them the runner took down on purpose
(so that any other exit counts as a crash), and gives each device a generation number
that grows with every start, so a window worker can tell its device was restarted.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulator.localbroker import Mosquitto, free_port
from simulator.platform import PlatformServer
from simulator.simclient import SimClient
from simulator.windowlink import WindowServer
from tests.chaos.disk import DiskUnavailable, SmallDisk
from tests.chaos.netns import Net, NetLab
from tests.support.bridge import BridgeProcess
from tests.support.device import DeviceProcess

log = logging.getLogger("chaos.chain")

PREFIX = "hcp/v1"
PROMPT_TIMEOUT_S = 6.0
REASONS_TIMEOUT_S = 2.5
REASONS = [{"code": "R01", "label": "服务态度"}, {"code": "R02", "label": "服务效率"},
           {"code": "R03", "label": "服务水平"}, {"code": "R04", "label": "其他"}]


@dataclass
class Crash:
    """A process that exited without the runner asking it to."""

    component: str
    returncode: int | None
    at: float
    log_tail: str


@dataclass
class Device:
    """One evaluator: the daemon, the window server its serial port connects to, and its
    small disk. `generation` grows at every start; `up` is set while it runs."""

    name: str
    process: DeviceProcess
    disk: SmallDisk | None
    generation: int = 0
    up: threading.Event = field(default_factory=threading.Event)
    killed_on_purpose: bool = False
    listeners: list[Any] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock)
    needs_start: bool = False           # died by itself and could not be started yet
    net: Net | None = None              # its namespace, when the chain has a NetLab

    @property
    def window(self) -> WindowServer:
        assert self.process.window is not None
        return self.process.window

    @property
    def sim(self) -> SimClient | None:
        return self.process.sim


@dataclass
class Bridge:
    name: str
    process: BridgeProcess
    killed_on_purpose: bool = False
    lock: threading.RLock = field(default_factory=threading.RLock)


class Chain:
    def __init__(self, workdir: Path, devices: int = 3, resend_after_s: float = 5.0,
                 disk_mb: int = 8, use_disks: bool = True,
                 netlab: NetLab | None = None) -> None:
        self.workdir = workdir
        self.netlab = netlab
        self.netns_port = 0
        self.netns_skip_reason: str | None = None   # why devices are not in namespaces
        self.resend_after_s = resend_after_s
        self.broker = Mosquitto(workdir / "broker", autosave_interval=1)
        self.broker_down_on_purpose = False
        self.platform: PlatformServer | None = None
        self.bridges: list[Bridge] = []
        self.devices: list[Device] = []
        self.crashes: list[Crash] = []
        self.disk_skip_reason: str | None = None
        self._n_devices = devices
        self._disk_mb = disk_mb
        self._use_disks = use_disks
        self._broker_lock = threading.RLock()

    # Start and stop ------------------------------------------------------------------

    def start(self) -> Chain:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.netlab is not None:
            self.netlab.create()
            nets = self.netlab.nets
            # One listener per host-end address (never 0.0.0.0): the namespaces reach
            # the broker there and nowhere else.
            self.netns_port = free_port(nets[0].host_ip)
            self.broker.extra_conf = [f"listener {self.netns_port} {net.host_ip}"
                                      for net in nets]
        self.broker.start()
        self.platform = PlatformServer("127.0.0.1", 0, self.workdir / "platform.db").start()
        for i in (1, 2):
            process = BridgeProcess(
                self.workdir / f"bridge-{i}", self.broker, self.platform.url,
                client_id=f"chaos-bridge-{i}",
                overrides={"mqtt": {"keepalive_s": 5},
                           "platform": {"timeout_s": 2.0, "retry_cap_s": 2.0,
                                        "batch_wait_ms": 20, "batch_max": 50}})
            self.bridges.append(Bridge(f"bridge-{i}", process))
        for bridge in self.bridges:
            bridge.process.start(wait_healthy=False)
        for i in range(1, self._n_devices + 1):
            self.devices.append(self._make_device(i))
        for device in self.devices:
            self.start_device(device)
        for bridge in self.bridges:
            bridge.process.wait_healthy(20)
        return self

    def _make_device(self, i: int) -> Device:
        name = f"421100-HG01-W{i:02d}"
        workdir = self.workdir / name
        net = self.netlab.nets[i - 1] if self.netlab is not None else None
        mqtt: dict[str, Any] = {}
        if net is not None:
            mqtt = {"host": net.host_ip, "port": self.netns_port}
            assert self.netlab is not None
            with self.netlab.inside(net):   # the serial "cable" on the namespace's loopback
                window = WindowServer()
        else:
            window = WindowServer()
        disk: SmallDisk | None = None
        if self._use_disks and self.disk_skip_reason is None:
            try:
                disk = SmallDisk(workdir / "data", self._disk_mb).mount()
            except DiskUnavailable as e:
                self.disk_skip_reason = str(e)
        elif not self._use_disks:
            self.disk_skip_reason = "small disks turned off (--no-disk)"
        process = DeviceProcess(
            workdir, window=window, mqtt_port=self.broker.port, device_id=name,
            # The clock_step and display/indicator faults' seams (drivers/sim.py)
            env={"HCP_SIM_CLOCK_OP": "1", "HCP_SIM_FAULT_OP": "1"},
            sections={
                "device": {"window_name": f"{i:02d}号窗口 综合受理"},
                "mqtt": {"keepalive_s": 5, "resend_after_s": self.resend_after_s,
                         "telemetry_s": 5.0, **mqtt},
                "ui": {"prompt_timeout_s": PROMPT_TIMEOUT_S,
                       "reasons_timeout_s": REASONS_TIMEOUT_S, "thanks_s": 0.3,
                       "lockout_s": 0.3, "allow_spontaneous": False, "reasons": REASONS},
            })
        return Device(name, process, disk, net=net)

    def start_device(self, device: Device, timeout: float = 20.0) -> None:
        """Start (or restart) a device and wait until its sim socket answers."""
        with device.lock:
            device.killed_on_purpose = False
            if device.net is not None and self.netlab is not None:
                with self.netlab.inside(device.net):    # the daemon lives in its namespace
                    device.process.start(timeout=timeout, wait_hello=False)
            else:
                device.process.start(timeout=timeout, wait_hello=False)
            device.generation += 1
            sim = device.sim
            assert sim is not None
            sim.listeners.extend(device.listeners)
            device.up.set()

    def listen(self, device: Device, listener: Any) -> None:
        """Call `listener` with every sim event of this device, across restarts."""
        with device.lock:
            device.listeners.append(listener)
            sim = device.sim
            if sim is not None:
                sim.listeners.append(listener)

    def kill_device(self, device: Device) -> None:
        with device.lock:
            device.killed_on_purpose = True
            device.up.clear()
            device.process.kill()

    def kill_bridge(self, bridge: Bridge) -> None:
        with bridge.lock:
            bridge.killed_on_purpose = True
            bridge.process.kill()

    def start_bridge(self, bridge: Bridge) -> None:
        with bridge.lock:
            bridge.killed_on_purpose = False
            bridge.process.start(wait_healthy=False)

    def pause_bridge(self, bridge: Bridge) -> bool:
        """SIGSTOP a running bridge (False if it is not running)."""
        with bridge.lock:
            process = bridge.process.process
            if process is None or process.poll() is not None:
                return False
            process.send_signal(signal.SIGSTOP)
            return True

    def resume_bridge(self, bridge: Bridge) -> None:
        with bridge.lock:
            process = bridge.process.process
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGCONT)

    def kill_broker(self, wipe: bool) -> None:
        with self._broker_lock:
            self.broker_down_on_purpose = True
            self.broker.kill()
            if wipe:
                shutil.rmtree(self.broker.persistence_dir, ignore_errors=True)

    def start_broker(self) -> None:
        with self._broker_lock:
            self.broker.start()
            self.broker_down_on_purpose = False

    def close(self) -> None:
        """SIGTERM every daemon (recording unclean exits as crashes), then tear down."""
        for device in self.devices:
            with contextlib.suppress(Exception):
                device.up.clear()
                if device.process.proc is not None and device.process.proc.poll() is None:
                    rc = device.process.stop(timeout=10)
                    if rc != 0:
                        self.crashes.append(Crash(device.name, rc, time.monotonic(),
                                                  "exit status on SIGTERM\n"
                                                  + device.process.log()[-2000:]))
            device.process.close()
            if device.disk is not None:
                device.disk.unmount()
        for bridge in self.bridges:
            with contextlib.suppress(Exception):
                if bridge.process.returncode is None and bridge.process.process is not None:
                    bridge.process.terminate(10)
            bridge.process.kill()
        if self.platform is not None:
            self.platform.shutdown()
            self.platform.close()
        with contextlib.suppress(Exception):
            self.broker.stop()
        self.broker.kill()
        if self.netlab is not None:
            self.netlab.close()

    # Crash watch -----------------------------------------------------------------------

    def check_crashes(self) -> list[Crash]:
        """Record and restart anything that died on its own; returns the new crashes.
        A part being started or stopped right now (its lock held) is looked at next time."""
        found: list[Crash] = []
        for device in self.devices:
            if not device.lock.acquire(blocking=False):
                continue
            try:
                proc = device.process.proc
                if (device.up.is_set() and not device.killed_on_purpose and proc is not None
                        and proc.poll() is not None):
                    found.append(Crash(device.name, proc.returncode, time.monotonic(),
                                       device.process.log()[-3000:]))
                    device.up.clear()
                    device.process.kill()  # drops the sim client
                    device.needs_start = True
                if device.needs_start:
                    try:
                        self.start_device(device)
                        device.needs_start = False
                    except Exception as e:  # noqa: BLE001 - a daemon that cannot start
                        found.append(Crash(device.name, None, time.monotonic(),
                                           f"could not start again: {e}"[-3000:]))
                        device.process.kill()
            finally:
                device.lock.release()
        for bridge in self.bridges:
            if not bridge.lock.acquire(blocking=False):
                continue
            try:
                rc = bridge.process.returncode
                if not bridge.killed_on_purpose and rc is not None:
                    found.append(Crash(bridge.name, rc, time.monotonic(),
                                       bridge.process.log_text()[-3000:]))
                    self.start_bridge(bridge)
            finally:
                bridge.lock.release()
        if self._broker_lock.acquire(blocking=False):
            try:
                if not self.broker_down_on_purpose and not self.broker.running:
                    found.append(Crash("mosquitto", None, time.monotonic(),
                                       self.broker.log_text()[-3000:]))
                    self.start_broker()
            finally:
                self._broker_lock.release()
        self.crashes += found
        return found
