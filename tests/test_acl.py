"""The sample broker config really keeps devices apart: a real mosquitto started with
systemd/examples/mosquitto.conf and mosquitto.acl as shipped — only its ports (free
loopback ones), file paths (a temporary directory) and certificates (a test CA) are
replaced — its dynamic-security plugin set up as docs/install.md does (mosquitto_ctrl
dynsec init, then mosquitto-dynsec.json and one mosquitto-dynsec-device.json per device
sent with mosquitto_rr), and paho clients logging in as two devices, the bridge and the
monitor.

Device A may publish its own ratings and read its own receipts, and nothing of B's;
the bridge reads every device and writes every receipt. "Not delivered" is checked at
a subscriber with a marker: after a refused publish the same client publishes an
allowed one, and the subscriber must see the marker and nothing before it.
"""

from __future__ import annotations

import json
import os
import pwd
import queue
import re
import signal
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from tests.support.mosquitto import (
    HOST,
    MOSQUITTO,
    MOSQUITTO_PASSWD,
    TestCA,
    free_port,
    wait_for_port,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "systemd" / "examples"
A, B = "421100-HG01-W03", "421100-HG01-W04"
PASSWORDS = {A: "pw-a-7Qx", B: "pw-b-3Lm", "hcp-bridge-1": "pw-bridge-9Kc",
             "hcp-bridge-2": "pw-bridge-4Wm", "hcp-monitor": "pw-monitor-2Vd"}
ADMIN, ADMIN_PASSWORD = "hcp-admin", "pw-admin-4Hs"  # the dynamic-security plugin's
SERVICES_FILE = "/etc/mosquitto/hcp-services.passwd"
DYNSEC_TOPIC = "$CONTROL/dynamic-security/v1"


def is_device(username: str) -> bool:
    return not username.startswith("hcp-")
NOT_AUTHORIZED = 0x87
TIMEOUT = 5.0


@dataclass
class SampleBroker:
    """mosquitto running the shipped config; `device_port` is the TLS listener for
    devices (8883 in the sample), `local_port` the loopback one (1883). `services`
    go into the loopback listener's password file, `devices` into the
    dynamic-security plugin as docs/install.md adds them."""

    workdir: Path
    ca: TestCA
    services: dict[str, str] = field(default_factory=lambda: {
        u: p for u, p in PASSWORDS.items() if not is_device(u)})
    devices: dict[str, str] = field(default_factory=lambda: {
        u: p for u, p in PASSWORDS.items() if is_device(u)})
    device_port: int = 0
    local_port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def dynsec_file(self) -> Path:
        return self.workdir / "dynamic-security.json"

    def start(self) -> SampleBroker:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "persistence").mkdir(exist_ok=True)
        self.device_port, self.local_port = free_port(), free_port()
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(self.adapt((EXAMPLES / "mosquitto.conf").read_text()))
        (self.workdir / "hcp.acl").write_text((EXAMPLES / "mosquitto.acl").read_text())
        passwd = self.workdir / "hcp-services.passwd"
        passwd.write_text("".join(f"{u}:{p}\n" for u, p in self.services.items()))
        subprocess.run([MOSQUITTO_PASSWD, "-U", str(passwd)], check=True, capture_output=True)
        subprocess.run(["mosquitto_ctrl", "dynsec", "init", str(self.dynsec_file), ADMIN,
                        ADMIN_PASSWORD], check=True, capture_output=True)
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(conf)],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        for port in (self.device_port, self.local_port):
            if not wait_for_port(HOST, port, 10):
                self.stop()
                raise RuntimeError(f"sample mosquitto did not listen on {port}:\n{self.log()}")
        self.dynsec((EXAMPLES / "mosquitto-dynsec.json").read_text())
        for device, password in self.devices.items():
            self.add_device(device, password)
        return self

    def add_device(self, device_id: str, password: str) -> None:
        """As docs/install.md adds a device: the sample's per-device template."""
        template = (EXAMPLES / "mosquitto-dynsec-device.json").read_text()
        self.dynsec(template.replace("DEVICE_ID", device_id)
                    .replace("DEVICE_PASSWORD", password))

    def dynsec(self, commands: str) -> list[dict[str, Any]]:
        """Send dynamic-security commands as the technician does (mosquitto_rr, as the
        plugin's admin, over TLS); fail on any error in the plugin's answer."""
        done = subprocess.run(
            ["mosquitto_rr", "-h", HOST, "-p", str(self.device_port),
             "--cafile", str(self.ca.ca_file), "-u", ADMIN, "-P", ADMIN_PASSWORD,
             "-t", DYNSEC_TOPIC, "-e", f"{DYNSEC_TOPIC}/response", "-W", "10",
             "-m", commands],  # not -s: mosquitto_rr 2.0.11 sends an empty message then
            stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
        assert done.returncode == 0, f"mosquitto_rr: {done.stderr}\n{self.log()}"
        responses: list[dict[str, Any]] = json.loads(done.stdout)["responses"]
        errors = [r for r in responses if "error" in r]
        assert not errors, errors
        return responses

    def adapt(self, text: str) -> str:
        """Replace only what differs on a test machine; fail if the sample changed so
        that a replacement no longer applies (the test would test something else)."""
        cert, key = self.ca.issue("mosquitto")
        files = {"cafile": self.ca.ca_file, "certfile": cert, "keyfile": key,
                 "password_file": self.workdir / "hcp-services.passwd",
                 "acl_file": self.workdir / "hcp.acl",
                 "plugin_opt_config_file": self.dynsec_file,
                 "persistence_location": f"{self.workdir / 'persistence'}/"}
        ports = {"8883": self.device_port, "1883": self.local_port}
        seen: set[str] = set()
        out = [f"user {pwd.getpwuid(os.getuid()).pw_name}"]  # as root: do not switch user
        for line in text.splitlines():
            option, _, value = line.partition(" ")
            if option in files:
                line = f"{option} {files[option]}"
            elif option == "listener":
                port = value.split()[0]
                line = f"listener {ports[port]} {HOST}"
                option = f"listener {port}"
            elif option == "plugin":
                assert Path(value).is_file(), f"no dynamic-security plugin at {value}"
            elif option == "pid_file":
                line = ""
            elif option == "log_dest":
                line = f"log_dest file {self.workdir / 'mosquitto.log'}"
            seen.add(option)
            out.append(line)  # in the sample's order: listener options follow their listener
        missing = {*files, "plugin", "listener 8883", "listener 1883", "log_dest"} - seen
        assert not missing, f"sample mosquitto.conf no longer has {sorted(missing)}"
        return "\n".join(out) + "\n"

    def log(self) -> str:
        try:
            return (self.workdir / "mosquitto.log").read_text(errors="replace")[-3000:]
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def broker(tmp_path: Path, test_ca: TestCA) -> Iterator[SampleBroker]:
    """A fresh broker per test: retained messages and sessions do not leak between them."""
    sample = SampleBroker(tmp_path / "sample-broker", test_ca).start()
    yield sample
    sample.stop()


@dataclass
class Client:
    """A paho client that waits for each CONNACK/SUBACK/PUBACK and keeps what arrives."""

    broker: SampleBroker
    username: str | None
    password: str | None = None
    client_id: str = ""
    device_listener: bool = True
    protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv5
    tls: bool | None = None  # default: TLS on the device listener only
    messages: queue.Queue[mqtt.MQTTMessage] = field(default_factory=queue.Queue)
    disconnected: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=self.protocol,
                                  client_id=self.client_id or f"t-{uuid.uuid4().hex[:8]}")
        if self.username is not None:
            self.client.username_pw_set(self.username, self.password
                                        if self.password is not None
                                        else PASSWORDS[self.username])
        if self.device_listener if self.tls is None else self.tls:
            self.client.tls_set(ca_certs=str(self.broker.ca.ca_file))
        self._acks: dict[int, queue.Queue[object]] = {}
        self._lock = threading.Lock()
        self._connack: queue.Queue[ReasonCode | None] = queue.Queue()
        self.client.on_connect = lambda c, u, f, rc, p: self._connack.put(rc)
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = lambda c, u, msg: self.messages.put(msg)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._ack(mid).put(rcs)
        self.client.on_publish = lambda c, u, mid, rc, p: self._ack(mid).put(rc)

    def _on_disconnect(self, *_: object) -> None:
        self.disconnected.set()
        self._connack.put(None)  # wakes connect() when the broker hangs up instead

    def _ack(self, mid: int) -> queue.Queue[object]:
        # PUBACK/SUBACK can arrive before publish()/subscribe() has returned the mid.
        with self._lock:
            return self._acks.setdefault(mid, queue.Queue())

    def connect(self, timeout: float = TIMEOUT) -> ReasonCode | None:
        """The CONNACK's reason code, or None when the connection was dropped."""
        port = self.broker.device_port if self.device_listener else self.broker.local_port
        self.client.connect(HOST, port, keepalive=30)
        self.client.loop_start()
        return self._connack.get(timeout=timeout)

    def connected(self) -> Client:
        rc = self.connect()
        assert rc is not None and not rc.is_failure, \
            f"{self.username} refused: {rc}\n{self.broker.log()}"
        return self

    def subscribe(self, topic: str, qos: int = 1) -> ReasonCode:
        _, mid = self.client.subscribe(topic, qos)
        assert mid is not None
        codes = self._ack(mid).get(timeout=TIMEOUT)
        assert isinstance(codes, list)
        code: ReasonCode = codes[0]
        return code

    def publish(self, topic: str, payload: object, retain: bool = False) -> ReasonCode:
        """QoS 1, as devices and the bridge publish; returns the PUBACK's reason code."""
        info = self.client.publish(topic, json.dumps(payload), qos=1, retain=retain)
        assert info.mid is not None
        code = self._ack(info.mid).get(timeout=TIMEOUT)
        assert isinstance(code, ReasonCode)
        return code

    def publish_qos0(self, topic: str, payload: object) -> None:
        """Telemetry: no acknowledgement to wait for."""
        self.client.publish(topic, json.dumps(payload), qos=0)

    def next_message(self, timeout: float = TIMEOUT) -> tuple[str, object]:
        msg = self.messages.get(timeout=timeout)
        return msg.topic, json.loads(msg.payload)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    made: list[Client] = []
    yield made
    for c in made:
        c.close()


Connect = Callable[..., Client]


@pytest.fixture
def connect(broker: SampleBroker, clients: list[Client]) -> Connect:
    """connect(username, **Client options) -> a connected Client, closed after the test."""
    def make(username: str, **options: Any) -> Client:
        c = Client(broker, username, **options)
        clients.append(c)
        return c.connected()
    return make


def bridge_like(connect: Connect, user: str = "hcp-bridge-1") -> Client:
    """The bridge's login and subscriptions (broker_bridge/bridge.py: subscriptions()),
    on the loopback listener, as bridge.toml's username_is_client_id has it: its user
    is its client id."""
    bridge: Client = connect(user, client_id=user, device_listener=False)
    for topic in ("$share/bridge/hcp/v1/+/rating", "$share/bridge/hcp/v1/+/event",
                  "hcp/v1/+/status", "hcp/v1/+/telemetry"):
        assert not bridge.subscribe(topic, 0 if topic.endswith("telemetry") else 1).is_failure
    return bridge


def marker() -> dict[str, str]:
    return {"marker": uuid.uuid4().hex}


def assert_only(subscriber: Client, topic: str, payload: object) -> None:
    """The next message at `subscriber` is this one: whatever was refused before it on
    the same connection did not get through."""
    assert subscriber.next_message() == (topic, payload)


def test_a_device_publishes_its_own_topics_and_the_bridge_reads_them(connect: Connect) -> None:
    bridge = bridge_like(connect)
    a = connect(A, client_id=A)
    for kind in ("rating", "event", "status"):
        payload = {"kind": kind, **marker()}
        rc = a.publish(f"hcp/v1/{A}/{kind}", payload)
        assert not rc.is_failure, f"{kind}: {rc}"
        assert_only(bridge, f"hcp/v1/{A}/{kind}", payload)
    telemetry = {"backlog": 0, **marker()}
    a.publish_qos0(f"hcp/v1/{A}/telemetry", telemetry)
    assert_only(bridge, f"hcp/v1/{A}/telemetry", telemetry)


def test_a_device_cannot_publish_as_another_device(connect: Connect) -> None:
    bridge = bridge_like(connect)
    a = connect(A, client_id=A)
    for kind in ("rating", "event", "status"):
        rc = a.publish(f"hcp/v1/{B}/{kind}", {"device_id": B, "forged": True})
        assert rc.value == NOT_AUTHORIZED, f"{kind}: {rc}"
    mark = marker()
    a.publish(f"hcp/v1/{A}/rating", mark)
    assert_only(bridge, f"hcp/v1/{A}/rating", mark)


def test_a_forged_offline_status_does_not_replace_the_real_one(connect: Connect) -> None:
    """The retained status is what dashboards show: A must not mark B offline."""
    b = connect(B, client_id=B)
    online = {"online": True, **marker()}
    assert not b.publish(f"hcp/v1/{B}/status", online, retain=True).is_failure
    a = connect(A, client_id=A)
    a.publish(f"hcp/v1/{B}/status", {"online": False}, retain=True)
    monitor = connect("hcp-monitor", device_listener=False)
    assert not monitor.subscribe(f"hcp/v1/{B}/status").is_failure
    assert monitor.next_message() == (f"hcp/v1/{B}/status", online)


def test_an_mqtt311_device_is_stopped_too(connect: Connect) -> None:
    """MQTT 3.1.1 has no reason codes: the broker acknowledges and drops."""
    bridge = bridge_like(connect)
    a = connect(A, client_id=A, protocol=MQTTProtocolVersion.MQTTv311)
    a.publish(f"hcp/v1/{B}/rating", {"device_id": B, "forged": True})
    mark = marker()
    a.publish(f"hcp/v1/{A}/rating", mark)
    assert_only(bridge, f"hcp/v1/{A}/rating", mark)


def test_a_device_reads_only_its_own_receipts(connect: Connect) -> None:
    bridge = bridge_like(connect)
    a = connect(A, client_id=A)
    b = connect(B, client_id=B)
    assert not a.subscribe(f"hcp/v1/{A}/receipt").is_failure
    assert not b.subscribe(f"hcp/v1/{B}/receipt").is_failure
    # The plugin refuses these subscriptions (tests/test_broker_trust.py); what matters
    # here is that nothing of B's is delivered either way.
    for topic in (f"hcp/v1/{B}/receipt", "hcp/v1/+/receipt", "hcp/v1/#", "#"):
        a.subscribe(topic)
    for_b, for_a = {"receipts": [{"rating_id": "b" * 32}]}, {"receipts": [{"rating_id": "a" * 32}]}
    assert not bridge.publish(f"hcp/v1/{B}/receipt", for_b).is_failure
    assert not bridge.publish(f"hcp/v1/{A}/receipt", for_a).is_failure
    assert_only(a, f"hcp/v1/{A}/receipt", for_a)
    assert_only(b, f"hcp/v1/{B}/receipt", for_b)
    # A's wildcards may bring more copies of its own receipt (one per matching
    # subscription), never B's.
    extra = []
    while not a.messages.empty():
        extra.append(a.next_message())
    assert all(m == (f"hcp/v1/{A}/receipt", for_a) for m in extra), extra


def test_a_device_cannot_forge_receipts_or_configs(connect: Connect) -> None:
    """A forged receipt would make a device drop a rating nobody stored."""
    b = connect(B, client_id=B)
    b.subscribe(f"hcp/v1/{B}/receipt")
    b.subscribe(f"hcp/v1/{B}/config")
    a = connect(A, client_id=A)
    for topic in (f"hcp/v1/{B}/receipt", f"hcp/v1/{B}/config", f"hcp/v1/{A}/receipt",
                  f"hcp/v1/{A}/config", "hcp/v1/alerts", "hcp/v1/deadletter"):
        rc = a.publish(topic, {"receipts": [{"rating_id": "f" * 32, "status": "accepted"}]})
        assert rc.value == NOT_AUTHORIZED, f"{topic}: {rc}"
    bridge = bridge_like(connect)
    real = {"receipts": [{"rating_id": "c" * 32, "status": "accepted"}]}
    bridge.publish(f"hcp/v1/{B}/receipt", real)
    assert_only(b, f"hcp/v1/{B}/receipt", real)


def test_a_device_cannot_take_over_another_devices_session(connect: Connect) -> None:
    """On the device listener the client id is replaced by the user name: A connecting
    with B's client id does not disconnect B (nor inherit B's session)."""
    b = connect(B, client_id=B)
    b.subscribe(f"hcp/v1/{B}/receipt")
    connect(A, client_id=B)
    bridge = bridge_like(connect)
    receipt = {"receipts": [{"rating_id": "d" * 32, "status": "accepted"}]}
    bridge.publish(f"hcp/v1/{B}/receipt", receipt)
    assert_only(b, f"hcp/v1/{B}/receipt", receipt)
    assert not b.disconnected.is_set()


def test_two_bridges_share_a_group_each_as_its_own_user(connect: Connect) -> None:
    """Two bridges in one shared group, hcp-bridge-1 and hcp-bridge-2 (on loopback the
    user name is the client id): both get ratings and both stay connected."""
    first = bridge_like(connect, "hcp-bridge-1")
    second = bridge_like(connect, "hcp-bridge-2")
    a = connect(A, client_id=A)
    sent = [marker() for _ in range(4)]
    for payload in sent:
        a.publish(f"hcp/v1/{A}/rating", payload)
    got: list[object] = []
    while len(got) < len(sent):
        for bridge in (first, second):
            try:
                got.append(bridge.next_message(timeout=0.2)[1])
            except queue.Empty:
                pass
    assert sorted(map(json.dumps, got)) == sorted(map(json.dumps, sent))
    assert not first.disconnected.is_set() and not second.disconnected.is_set()


def test_the_monitor_reads_everything_and_writes_nothing(connect: Connect) -> None:
    monitor = connect("hcp-monitor", device_listener=False)
    assert not monitor.subscribe("hcp/v1/#").is_failure
    a = connect(A, client_id=A)
    mark = marker()
    a.publish(f"hcp/v1/{A}/event", mark)
    assert_only(monitor, f"hcp/v1/{A}/event", mark)
    rc = monitor.publish(f"hcp/v1/{A}/receipt", {"receipts": []})
    assert rc.value == NOT_AUTHORIZED


@pytest.mark.parametrize("device_listener", [True, False], ids=["devices", "loopback"])
def test_strangers_are_refused(broker: SampleBroker, clients: list[Client],
                               device_listener: bool) -> None:
    for username, password in ((A, "wrong"), (None, None), ("nobody", "x")):
        c = Client(broker, username, password, device_listener=device_listener)
        clients.append(c)
        rc = c.connect()
        assert rc is None or rc.is_failure, f"{username!r} got in"


def test_devices_must_use_tls(broker: SampleBroker, clients: list[Client]) -> None:
    """The device listener does not speak plain MQTT: passwords would cross the LAN in
    clear."""
    plain = Client(broker, A, tls=False)
    clients.append(plain)
    try:
        rc = plain.connect()
    except OSError:
        rc = None
    assert rc is None or rc.is_failure, "a device got in without TLS"


def test_sample_limits_for_the_bridge_session() -> None:
    """The settings the NOTES warn about are set on purpose, not left to defaults."""
    text = (EXAMPLES / "mosquitto.conf").read_text()
    options = dict(re.findall(r"^(\w+) (.+)$", text, re.M))
    assert int(options["max_queued_messages"]) >= 100_000   # default 1000 drops ratings
    assert int(options["autosave_interval"]) <= 60           # default 1800 s
    assert options["persistence"] == "true"

