"""A three-node NATS cluster with JetStream and MQTT (Debian `nats-server`) on free loopback
ports in a temp folder, for the broker-topology tests and the benchmarks. NATS speaks MQTT
3.1.1 only; its MQTT sessions, subscriptions and retained messages live in JetStream
streams replicated on the three nodes, so they survive a node's restart.

    with NatsCluster(tmp_path / "nats") as cluster:
        cluster.nodes[0].mqtt_port          # what devices and the bridge connect to
        cluster.nodes[1].kill(); cluster.nodes[1].start()
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from simulator.children import die_with_parent
from simulator.localbroker import HOST, BrokerError, free_port, wait_for_port

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


def nats_available() -> bool:
    return Path(NATS_SERVER).is_file()


@dataclass
class NatsNode:
    """One nats-server of the cluster; its config, JetStream store and log in `workdir`."""

    name: str
    workdir: Path
    client_port: int
    cluster_port: int
    mqtt_port: int
    http_port: int
    routes: list[int] = field(default_factory=list)   # the other nodes' cluster ports
    ack_wait_s: float = 10.0
    mqtt_extra: str = ""    # more lines for the mqtt { } block
    # As Mosquitto's: the kernel stops the node when the thread that started it dies. Off
    # by default (a test may restart a node from a thread that ends first).
    die_with_parent: bool = False
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def host(self) -> str:
        return HOST

    @property
    def port(self) -> int:
        """The MQTT port: what `host`/`port` mean to every MQTT helper of the tests."""
        return self.mqtt_port

    @property
    def conf_file(self) -> Path:
        return self.workdir / "nats.conf"

    @property
    def log_file(self) -> Path:
        return self.workdir / "nats.log"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def write_config(self) -> None:
        routes = ", ".join(f'"nats-route://{HOST}:{port}"' for port in self.routes)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf_file.write_text(f"""# written by simulator/natscluster.py
server_name: {self.name}
listen: "{HOST}:{self.client_port}"
http: "{HOST}:{self.http_port}"
jetstream {{
  store_dir: "{self.workdir / 'jetstream'}"
}}
cluster {{
  name: hcp
  listen: "{HOST}:{self.cluster_port}"
  routes: [{routes}]
}}
mqtt {{
  listen: "{HOST}:{self.mqtt_port}"
  # Un-acknowledged messages are redelivered after this long (not on reconnect).
  ack_wait: "{self.ack_wait_s:g}s"
  # Sessions, subscriptions, messages and retained messages on all three nodes (NATS
  # would pick fewer if it created the streams while a node was still joining).
  stream_replicas: 3
  # Each QoS 1 subscription (every device's receipts and config) is a JetStream consumer.
  # Replicated three times, creating one needs a RAFT group, and under a burst of
  # connections that timed out: SUBACK 0x80, and a device that ignores it never gets its
  # receipts (measured: 1-2 devices of 100, docs/brokers.md). One replica is cheap; the
  # messages themselves stay replicated.
  consumer_replicas: 1
{self.mqtt_extra}
}}
""")

    def start(self) -> NatsNode:
        """Start the process; return once it listens for clients (MQTT may take longer:
        it needs JetStream, hence a quorum; see `NatsCluster.wait_mqtt`)."""
        if self.running:
            raise BrokerError(f"{self.name} is already running")
        self.write_config()
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                [NATS_SERVER, "-c", str(self.conf_file)], stdin=subprocess.DEVNULL,
                stdout=log, stderr=log,
                preexec_fn=die_with_parent if self.die_with_parent else None)
        if not wait_for_port(HOST, self.client_port, 10):
            self.kill()
            raise BrokerError(f"{self.name} did not listen\n{self.log_text()[-2000:]}")
        return self

    def kill(self) -> None:
        """SIGKILL: a crash."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(5)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM: a clean shutdown."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def healthy(self) -> bool:
        """nats-server's /healthz: 200 once JetStream is current."""
        try:
            with urllib.request.urlopen(f"http://{HOST}:{self.http_port}/healthz",
                                        timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False


class NatsCluster:
    """Three nodes routed to each other, each with JetStream and an MQTT listener."""

    def __init__(self, workdir: Path, size: int = 3, ack_wait_s: float = 10.0,
                 mqtt_extra: str = "", die_with_parent: bool = False) -> None:
        self.workdir = workdir
        self.nodes = [
            NatsNode(f"n{i + 1}", workdir / f"n{i + 1}", 0, 0, 0, 0, [], ack_wait_s,
                     mqtt_extra, die_with_parent)
            for i in range(size)
        ]
        self._assign_ports()

    def _assign_ports(self) -> None:
        cluster_ports = [free_port() for _ in self.nodes]
        for i, node in enumerate(self.nodes):
            node.client_port, node.cluster_port = free_port(), cluster_ports[i]
            node.mqtt_port, node.http_port = free_port(), free_port()
            node.routes = [p for j, p in enumerate(cluster_ports) if j != i]

    def start(self, timeout: float = 60.0) -> NatsCluster:
        # A free port is only free when asked: another process may take one of the
        # sixteen before a node binds it ("address already in use"). Then all of them
        # again, since every node names the others' route ports.
        for attempt in range(3):
            try:
                for node in self.nodes:
                    node.start()
                self.wait_ready(timeout)
                dead = [node for node in self.nodes if not node.running]
                if dead:   # wait_ready passes over stopped nodes: these died on their own
                    raise BrokerError(f"{dead[0].name} exited\n"
                                      + dead[0].log_text()[-3000:])
                return self
            except BrokerError as e:
                self.close()
                if "address already in use" not in str(e) or attempt == 2:
                    raise
                self._assign_ports()
        raise AssertionError("unreachable")

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Every running node healthy and its MQTT port accepting connections."""
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            if not node.running:
                continue
            while not (node.healthy() and wait_for_port(HOST, node.mqtt_port, 0.2)):
                if time.monotonic() > deadline:
                    raise BrokerError(f"{node.name} not ready in {timeout} s\n"
                                      + node.log_text()[-3000:])
                time.sleep(0.2)

    def log_text(self) -> str:
        return "\n".join(f"--- {n.name} ---\n{n.log_text()[-3000:]}" for n in self.nodes)

    def close(self) -> None:
        for node in self.nodes:
            node.kill()

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
