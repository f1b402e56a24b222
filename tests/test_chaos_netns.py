"""Devices in network namespaces of their own (tests/chaos/netns.py): a namespaced device
rates through the real chain (mosquitto, bridge, platform) over its veth pair, each
network fault is applied to its uplink and taken off again, and nothing of a run (its
namespaces, veth pairs, nft tables, qdiscs) is left on the machine afterwards.

Needs root and ip, nft and tc (apt install iproute2 nftables); skipped otherwise.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulator.windowlink import answer_to
from tests.chaos.chain import Chain, Device
from tests.chaos.netns import (
    NETNS_PREFIX,
    NFT_TABLE,
    NetLab,
    links,
    namespaces,
    sweep,
    unavailable_reason,
)

pytestmark = pytest.mark.skipif(unavailable_reason() is not None,
                                reason=f"namespaced devices: {unavailable_reason()}")


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A working folder with a short path: pytest's own (longer under xdist) leaves too
    few of a UNIX socket's 107 bytes for the devices' sockets under chain/<device>/data."""
    folder = Path(tempfile.mkdtemp(prefix="hx", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def chain(short_dir: Path) -> Iterator[Chain]:
    chain = Chain(short_dir / "chain", devices=1, use_disks=False, netlab=NetLab(1))
    try:
        chain.start()
        yield chain
    finally:
        chain.close()


def rate(device: Device, case_id: str, level: int, timeout: float = 30.0) -> str:
    """One case sent, prompted and pressed; the rating_id the device tells the window."""
    window, sim = device.window, device.sim
    assert sim is not None
    assert window.wait_connected(15), device.process.log()
    # Like a window system, send again when no answer came: a frame written in the
    # instant the device opens its port is lost with the port's input buffer.
    for _ in range(3):
        seq = window.send("case_completed", case_id=case_id, service_name="不动产登记")
        answer = window.wait_for(answer_to(seq), 5)
        if answer is not None:
            break
    assert answer == {"type": "ack", "seq": seq}, device.process.log()
    assert sim.wait_screen("prompt", 10, where=lambda e: e.get("case_id") == case_id)
    sim.press(level)
    frame = window.wait_for(lambda f: f.get("type") == "rated" and f.get("case_id") == case_id,
                            timeout)
    assert frame is not None, device.process.log()
    return str(frame["rating_id"])


def wait_at_platform(chain: Chain, rating_id: str, timeout: float) -> bool:
    assert chain.platform is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if rating_id in chain.platform.store.rating_ids():
            return True
        time.sleep(0.2)
    return False


def test_a_namespaced_device_rates_through_the_real_chain_and_leaves_nothing(
        short_dir: Path) -> None:
    chain = Chain(short_dir / "chain", devices=1, use_disks=False, netlab=NetLab(1))
    try:
        chain.start()
        assert chain.netlab is not None
        (net,) = chain.netlab.nets
        device = chain.devices[0]
        # The daemon really is in the namespace: its network namespace is not ours.
        proc = device.process.proc
        assert proc is not None
        assert (Path(f"/proc/{proc.pid}/ns/net").readlink()
                != Path("/proc/self/ns/net").readlink())
        # The broker's namespace listener is bound to the host end only.
        conf = chain.broker.conf_file.read_text()
        assert f"listener {chain.netns_port} {net.host_ip}\n" in conf
        rating_id = rate(device, "NS-1", 5)
        assert wait_at_platform(chain, rating_id, 30), device.process.log()
    finally:
        chain.close()
    assert chain.netlab is not None and chain.netlab.leftovers() == []
    assert not [n for n in namespaces() if n.startswith(f"{NETNS_PREFIX}{os.getpid()}-")]
    assert net.host_if not in links()
    root_tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True,
                                 check=True).stdout
    assert NFT_TABLE not in root_tables


def test_each_network_fault_is_applied_and_taken_off(chain: Chain) -> None:
    assert chain.netlab is not None
    (net,) = chain.netlab.nets
    device = chain.devices[0]
    net.loss(30)
    ruleset = net.ruleset()
    assert "numgen random mod 100 < 30 drop" in ruleset and net.device_if in ruleset
    net.slow()
    assert net.qdisc().count("qdisc tbf") == 2 and "64Kbit" in net.qdisc()   # both ways
    net.down()
    state = net.ns("ip", "-o", "link", "show", net.device_if).stdout
    assert "state DOWN" in state
    # Cut off, the device still thanks the citizen (the rating is in its outbox) ...
    rating_id = rate(device, "NS-CUT", 4)
    assert not wait_at_platform(chain, rating_id, 3)
    net.heal()
    assert NFT_TABLE not in net.ruleset() and "tbf" not in net.qdisc()
    # ... and delivers it once the link is back.
    assert wait_at_platform(chain, rating_id, 60), device.process.log()


def connects(chain: Chain, tries: int, timeout_s: float) -> int:
    """How many of `tries` TCP connections from the device's namespace to the broker's
    listener on the host end succeed within `timeout_s` each."""
    assert chain.netlab is not None
    (net,) = chain.netlab.nets
    ok = 0
    with chain.netlab.inside(net):
        for _ in range(tries):
            try:
                with socket.create_connection((net.host_ip, chain.netns_port), timeout_s):
                    ok += 1
            except OSError:
                pass
    return ok


def test_loss_really_drops_packets_and_nothing_else_is_reachable(chain: Chain) -> None:
    assert chain.netlab is not None
    (net,) = chain.netlab.nets
    assert connects(chain, 10, 2.0) == 10
    net.loss(95)
    # A SYN or its answer dropped 95 % of the time each: almost every try times out.
    assert connects(chain, 20, 0.3) <= 6
    net.no_loss()
    assert connects(chain, 10, 2.0) == 10
    # No route out of the namespace but to its /30: the loopback broker is not there.
    with chain.netlab.inside(net), pytest.raises(OSError):
        socket.create_connection((chain.broker.host, chain.broker.port), 1.0).close()
    route = net.ns("ip", "route", "show").stdout
    assert "default" not in route and route.strip().startswith(net.host_ip.rsplit(".", 1)[0])


def test_serial_link_is_not_on_the_network(chain: Chain) -> None:
    """A partition cuts the uplink, never the window's serial cable."""
    assert chain.netlab is not None
    (net,) = chain.netlab.nets
    device = chain.devices[0]
    assert device.window.wait_connected(15)
    net.down()
    seq = device.window.send("ping")
    assert device.window.wait_for(answer_to(seq), 10) == {"type": "ack", "seq": seq}
    net.up()


def test_sweep_removes_a_dead_runs_namespace_and_veth() -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    name, host_if = f"{NETNS_PREFIX}{dead.pid}-1", f"hx{dead.pid}h1"
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "link", "add", host_if, "type", "veth", "peer", "name",
                    f"hx{dead.pid}d1", "netns", name], check=True)
    try:
        removed = sweep()
        assert f"netns {name}" in removed and f"link {host_if}" in removed
        assert name not in namespaces() and host_if not in links()
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
        subprocess.run(["ip", "link", "del", host_if], check=False, capture_output=True)
