"""Devices on a network of their own: one network namespace per device, joined to the
root namespace by a veth pair on a test-only /30 (10.213.X.4n+1 on the host end, .4n+2 on
the device's), so the chaos runner can make one device's uplink lossy (nftables
`numgen random`), slow (`tc tbf`), cut (link down) or flapping, as a hall's network is;
this kernel has no netem (docs/reliability.md).

Only the device's uplink goes through the veth. Its serial port is a `socket://` on the
namespace's own loopback (the WindowServer's listening socket is made inside the
namespace), so a network fault never touches the serial cable, as in a hall. The
namespace has no default route: the device reaches the broker's listener on its host-end
address and nothing else.

Everything is named after the runner's pid (`hcpx-<pid>-<n>`, `hx<pid>h<n>` /
`hx<pid>d<n>`); `NetLab.close()` removes it, and `sweep()` removes what a run that died
(its pid gone) left behind, at the start of the next.

    lab = NetLab(devices=3).create()       # root and the ip/nft/tc tools needed
    with lab.inside(lab.nets[0]):          # fork and listen inside namespace 1
        proc = subprocess.Popen(...)
    lab.close()
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import random
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

log = logging.getLogger("chaos.netns")

NETNS_PREFIX = "hcpx-"
LINK_PREFIX = "hx"
NFT_TABLE = "hcpchaos"
SUBNET_FIRST_OCTETS = "10.213"      # a test-only range; each run takes a free 10.213.X.0/24
CLONE_NEWNET = 0x40000000
TOOLS = ("ip", "nft", "tc")

_NETNS_RE = re.compile(rf"^{re.escape(NETNS_PREFIX)}(\d+)-\d+$")
_LINK_RE = re.compile(rf"^{LINK_PREFIX}(\d+)[hd]\d+$")


class NetnsUnavailable(RuntimeError):
    """This machine cannot run devices in namespaces; the message says why."""


RUN_NETNS = "/run/netns"


def unavailable_reason() -> str | None:
    """Why namespaced devices cannot run here (None when they can)."""
    if os.geteuid() != 0:
        return "not root: network namespaces, veth pairs, nftables and tc need root"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return (f"missing {', '.join(missing)} (apt install iproute2 nftables): "
                "needed for namespaces, tc and nftables")
    return _namespaces_work()


@functools.cache
def _namespaces_work() -> str | None:
    """Root and the tools are not enough: in a chroot (a fresh-Debian check) `ip netns
    exec` cannot make `/` a slave mount. Try once, with a namespace of our own."""
    name = f"hcpprobe-{os.getpid()}"
    # `ip netns add` bind-mounts /run/netns onto itself (once per process that finds it
    # not yet shared) and `del` leaves that mount. Where namespaces cannot be entered (a
    # chroot), nothing here can use it: unmount every layer, or they outlive the chroot as
    # mounts on the host. (A bind mount of the same file system: os.path.ismount cannot
    # see it, so unmount until umount says there is nothing.)
    unusable = False
    try:
        added = run("ip", "netns", "add", name, check=False)
        if added.returncode != 0:
            return f"cannot create a network namespace here: {added.stderr.strip()[:200]}"
        inside = run("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up",
                     check=False)
        if inside.returncode != 0:
            unusable = True
            return ("network namespaces cannot be entered here (a chroot?): "
                    f"{inside.stderr.strip()[:200]}")
        return None
    finally:
        run("ip", "netns", "del", name, check=False)
        for _ in range(16) if unusable else ():
            if run("umount", RUN_NETNS, check=False).returncode != 0:
                break


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """One `ip`/`nft`/`tc` command; a failure raises with the command and its stderr."""
    done = subprocess.run(list(argv), capture_output=True, text=True, check=False, timeout=20)
    if check and done.returncode != 0:
        raise NetnsUnavailable(f"{' '.join(argv)} failed ({done.returncode}): "
                               f"{done.stderr.strip()}")
    return done


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def namespaces() -> list[str]:
    out = run("ip", "netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def links() -> list[str]:
    out = run("ip", "-o", "link", "show", check=False).stdout
    names = []
    for line in out.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@", 1)[0])
    return names


def sweep(all_runs: bool = False) -> list[str]:
    """Remove the namespaces and veth pairs of chaos runs whose process is gone (or of
    every run with `all_runs`); returns what was removed."""
    removed = []
    # Links first: deleting a namespace takes its veth pairs with it, but later.
    for name in links():
        m = _LINK_RE.match(name)
        if m and (all_runs or not _alive(int(m.group(1)))):
            run("ip", "link", "del", name, check=False)
            removed.append(f"link {name}")
    for name in namespaces():
        m = _NETNS_RE.match(name)
        if m and (all_runs or not _alive(int(m.group(1)))):
            run("ip", "netns", "del", name, check=False)
            removed.append(f"netns {name}")
    return removed


def _taken_blocks() -> set[int]:
    out = run("ip", "-o", "-4", "addr", "show", check=False).stdout
    pattern = re.compile(rf"inet {re.escape(SUBNET_FIRST_OCTETS)}\.(\d+)\.")
    return {int(m.group(1)) for m in pattern.finditer(out)}


@dataclass
class Net:
    """One device's namespace and its veth pair."""

    index: int
    netns: str
    host_if: str          # in the root namespace, holds `host_ip`
    device_if: str        # in the device's namespace, holds `device_ip`
    host_ip: str
    device_ip: str
    # What is applied right now (for heal and the report): "loss", "slow", "down"
    applied: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ns(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """A command inside this namespace."""
        return run("ip", "netns", "exec", self.netns, *argv, check=check)

    # The faults (each applied to the device's end, so the broker's listener on the
    # host end keeps its address whatever happens) ------------------------------------

    def loss(self, percent: int) -> None:
        """Drop `percent` % of the device's TCP packets, both ways, at random."""
        if not 0 < percent < 100:
            raise ValueError(f"loss percent must be 1..99, not {percent}")
        with self.lock:
            self.ns("nft", "delete", "table", "inet", NFT_TABLE, check=False)
            rules = (f"table inet {NFT_TABLE} {{\n"
                     f"  chain out {{ type filter hook output priority 0; policy accept;\n"
                     f"    oifname \"{self.device_if}\" meta l4proto tcp "
                     f"numgen random mod 100 < {percent} drop\n  }}\n"
                     f"  chain in {{ type filter hook input priority 0; policy accept;\n"
                     f"    iifname \"{self.device_if}\" meta l4proto tcp "
                     f"numgen random mod 100 < {percent} drop\n  }}\n}}\n")
            done = subprocess.run(["ip", "netns", "exec", self.netns, "nft", "-f", "-"],
                                  input=rules, capture_output=True, text=True, check=False,
                                  timeout=20)
            if done.returncode != 0:
                raise NetnsUnavailable(f"nft -f in {self.netns} failed: {done.stderr.strip()}")
            self.applied.add("loss")

    def no_loss(self) -> None:
        with self.lock:
            self.ns("nft", "delete", "table", "inet", NFT_TABLE, check=False)
            self.applied.discard("loss")

    def slow(self, rate: str = "64kbit", burst: str = "16kbit", latency: str = "600ms") -> None:
        """A slow uplink both ways: a token bucket on each end's egress."""
        tbf = ("root", "tbf", "rate", rate, "burst", burst, "latency", latency)
        with self.lock:
            self.ns("tc", "qdisc", "replace", "dev", self.device_if, *tbf)
            run("tc", "qdisc", "replace", "dev", self.host_if, *tbf)
            self.applied.add("slow")

    def fast(self) -> None:
        with self.lock:
            self.ns("tc", "qdisc", "del", "dev", self.device_if, "root", check=False)
            run("tc", "qdisc", "del", "dev", self.host_if, "root", check=False)
            self.applied.discard("slow")

    def down(self) -> None:
        with self.lock:
            self.ns("ip", "link", "set", self.device_if, "down")
            self.applied.add("down")

    def up(self) -> None:
        with self.lock:
            self.ns("ip", "link", "set", self.device_if, "up")
            self.applied.discard("down")

    def heal(self) -> None:
        """Every fault off."""
        self.no_loss()
        self.fast()
        self.up()

    def qdisc(self) -> str:
        """Both ends' root qdiscs, as `tc qdisc show` prints them."""
        return (self.ns("tc", "qdisc", "show", "dev", self.device_if, check=False).stdout
                + run("tc", "qdisc", "show", "dev", self.host_if, check=False).stdout)

    def ruleset(self) -> str:
        return self.ns("nft", "list", "ruleset", check=False).stdout


_libc: ctypes.CDLL | None = None


def _setns(fd: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NetnsUnavailable(f"setns: {os.strerror(err)}")


@dataclass
class NetLab:
    """The namespaces and veth pairs of one chaos run."""

    devices: int
    nets: list[Net] = field(default_factory=list)
    block: int = 0

    def create(self) -> NetLab:
        reason = unavailable_reason()
        if reason:
            raise NetnsUnavailable(reason)
        if self.devices > 63:
            raise ValueError("at most 63 devices: one /30 each in a /24")
        for what in sweep():
            log.warning("removed a dead chaos run's %s", what)
        taken = _taken_blocks()
        free = [b for b in range(1, 255) if b not in taken]
        if not free:
            raise NetnsUnavailable(f"no free {SUBNET_FIRST_OCTETS}.X.0/24 block")
        self.block = random.choice(free)
        pid = os.getpid()
        try:
            for n in range(1, self.devices + 1):
                self._make(pid, n)
        except BaseException:
            self.close()
            raise
        return self

    def _make(self, pid: int, n: int) -> None:
        base = 4 * (n - 1)
        net = Net(index=n, netns=f"{NETNS_PREFIX}{pid}-{n}", host_if=f"{LINK_PREFIX}{pid}h{n}",
                  device_if=f"{LINK_PREFIX}{pid}d{n}",
                  host_ip=f"{SUBNET_FIRST_OCTETS}.{self.block}.{base + 1}",
                  device_ip=f"{SUBNET_FIRST_OCTETS}.{self.block}.{base + 2}")
        self.nets.append(net)   # before it exists: close() removes a half-made one too
        run("ip", "netns", "add", net.netns)
        run("ip", "link", "add", net.host_if, "type", "veth", "peer", "name", net.device_if,
            "netns", net.netns)
        run("ip", "addr", "add", f"{net.host_ip}/30", "dev", net.host_if)
        run("ip", "link", "set", net.host_if, "up")
        net.ns("ip", "link", "set", "lo", "up")
        net.ns("ip", "addr", "add", f"{net.device_ip}/30", "dev", net.device_if)
        net.ns("ip", "link", "set", net.device_if, "up")

    @contextlib.contextmanager
    def inside(self, net: Net) -> Iterator[None]:
        """Run the block in `net`'s namespace, on this thread only: a process it starts
        and a socket it makes live there. The thread goes back to its own namespace
        after the block, whatever happens in it."""
        own = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
        try:
            target = os.open(f"/run/netns/{net.netns}", os.O_RDONLY)
            try:
                _setns(target)
            finally:
                os.close(target)
            try:
                yield
            finally:
                _setns(own)
        finally:
            os.close(own)

    def close(self) -> None:
        """Remove every namespace, veth pair, nft table and qdisc of this run."""
        for net in self.nets:
            with contextlib.suppress(Exception):
                net.heal()
            run("ip", "link", "del", net.host_if, check=False)
            run("ip", "netns", "del", net.netns, check=False)
        self.nets = []

    def leftovers(self) -> list[str]:
        """What of this run is still there (empty after close())."""
        pid = os.getpid()
        found = [f"netns {n}" for n in namespaces() if n.startswith(f"{NETNS_PREFIX}{pid}-")]
        found += [f"link {n}" for n in links() if _LINK_RE.match(n)
                  and n.startswith(f"{LINK_PREFIX}{pid}")]
        return found
