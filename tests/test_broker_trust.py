"""The sample broker's trust model, against a real mosquitto running
systemd/examples/mosquitto.conf, mosquitto.acl and the dynamic-security commands as
shipped, TLS included (tests/test_acl.py's SampleBroker), with every service user of the
sample ACL in the loopback listener's password file:

- a device cannot subscribe to anything but its own receipts and config: not the
  bridges' shared subscription (with mosquitto 2.0's acl_file alone it was granted, and
  each rating that mosquitto handed to the intruder was dropped: one bridge got 25 of
  50), not `#`, not another device's receipts;
- no service user can publish a device's topics: the ACL's `pattern` lines apply to
  every user, so without the `topic deny` lines hcp-bridge-1 could publish ratings and
  retained statuses as a device named "hcp-bridge-1";
- client ids are bound to users on both listeners: on loopback a service that asks for
  a device's client id, or another service's, gets its own and disconnects nobody
  (without `use_username_as_clientid` there, one did: the device was thrown off);
- and still, with one broker user per process (bridge.toml's username_is_client_id):
  two real bridges share a group beside their `hcp-bridge expired` forwarders, a
  standby MQTT 3.1.1 bridge takes over its active's session, a forwarder's standby
  watches as a user of its own, and `hcp-bridge forget` clears retained topics as
  hcp-forget (and refuses to log in as the service whose config it reads).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import subprocess
import sys
import threading
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
from paho.mqtt.enums import MQTTProtocolVersion

from broker_bridge import standby
from broker_bridge.config import load_bridge_config, login_as
from broker_bridge.mqtt_setup import configure_security
from tests.support.bridge import REPO, BridgeProcess, toml_text
from tests.support.brokers import assert_exactly_once, wait_for
from tests.support.brokers import publish_ratings as publish_fleet_ratings
from tests.support.mosquitto import HOST, Mosquitto, TestCA
from tests.support.platform import RunningPlatform
from tests.support.ratings import FleetPublisher
from tests.test_acl import (
    ADMIN,
    ADMIN_PASSWORD,
    NOT_AUTHORIZED,
    PASSWORDS,
    A,
    B,
    Client,
    SampleBroker,
    bridge_like,
    marker,
)
from tests.test_broker_sample_users import service_users

HOSTILE = "421100-HG01-W66"
DEVICES = {A: PASSWORDS[A], B: PASSWORDS[B], HOSTILE: "pw-hostile-8Rw"}


def family(user: str) -> str:
    """hcp-bridge-1-expired-standby -> hcp-bridge-1: the connections of one bridge.toml
    share its password_file, so their users share a password."""
    return re.sub(r"(-expired)?(-standby)?$", "", user)


# Every service user of the sample ACL, as docs/install.md creates them.
SERVICES = {user: f"pw-{family(user)}-5Tn" for user in service_users()}
ALL = {**DEVICES, **SERVICES}
SUBACK_311_FAILURE = 0x80
RATINGS = 50
TAKEN_OVER = "already connected, closing old connection"


@pytest.fixture
def broker(tmp_path: Path, test_ca: TestCA) -> Iterator[SampleBroker]:
    sample = SampleBroker(tmp_path / "sample-broker", test_ca, services=dict(SERVICES),
                          devices=dict(DEVICES))
    sample.start()
    yield sample
    sample.stop()


Connect = Callable[..., Client]


@pytest.fixture
def connect(broker: SampleBroker) -> Iterator[Connect]:
    """connect(user, **Client options): devices on the TLS listener with their id as
    client id, services on loopback; connected, closed after the test."""
    made: list[Client] = []

    def make(user: str, cls: type[Client] = Client, **options: Any) -> Client:
        device = user in DEVICES or user == ADMIN
        options.setdefault("device_listener", device)
        options.setdefault("client_id", user if device else "")
        if "password" not in options:
            options["password"] = ADMIN_PASSWORD if user == ADMIN else ALL[user]
        client = cls(broker, user, **options)
        made.append(client)
        return client.connected()

    yield make
    for client in made:
        client.close()


@dataclass
class SessionClient(Client):
    """A client whose MQTT 3.1.1 session outlives its connection (clean session 0), as
    the bridge's does."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.client._clean_session = False  # paho takes it only in its constructor


def drain(client: Client) -> list[tuple[str, object]]:
    got = []
    while not client.messages.empty():
        got.append(client.next_message())
    return got


def publish_ratings(connect: Connect, count: int = RATINGS) -> list[object]:
    """`count` ratings from the two honest devices, in turns; each acknowledged."""
    publishers = [connect(A), connect(B)]
    sent: list[object] = []
    for n in range(count):
        device = publishers[n % 2]
        payload = {"n": n, **marker()}
        assert not device.publish(f"hcp/v1/{device.username}/rating", payload).is_failure
        sent.append(payload)
    return sent


def collect(bridges: list[Client], count: int) -> list[object]:
    """Wait until the bridges together hold `count` ratings (fails after 5 s of
    silence: a rating mosquitto dropped never comes)."""
    got: list[object] = []
    while len(got) < count:
        before = len(got)
        for bridge in bridges:
            try:
                got.append(bridge.next_message(timeout=0.1)[1])
            except queue.Empty:
                pass
        if len(got) == before:
            try:
                got.append(bridges[0].next_message(timeout=5.0)[1])
            except queue.Empty:
                pytest.fail(f"the bridges got {len(got)} of {count} ratings")
    return got


def hostile_subscribes(hostile: Client) -> dict[str, int]:
    """Every subscription a device could use to read or divert what is not its own, and
    the SUBACK's code for each."""
    return {topic: hostile.subscribe(topic).value
            for topic in ("$share/bridge/hcp/v1/+/rating", "$share/bridge/hcp/v1/+/event",
                          "#", "hcp/v1/#", "hcp/v1/+/rating", f"hcp/v1/{B}/receipt",
                          "hcp/v1/+/receipt", f"hcp/v1/{B}/config",
                          f"$share/x/hcp/v1/{HOSTILE}/receipt", "$SYS/#")}


@pytest.mark.parametrize("protocol", [MQTTProtocolVersion.MQTTv5,
                                      MQTTProtocolVersion.MQTTv311], ids=["v5", "v311"])
@pytest.mark.parametrize("bridges", [1, 2])
def test_a_hostile_device_cannot_divert_ratings(connect: Connect, bridges: int,
                                                protocol: MQTTProtocolVersion) -> None:
    group = [bridge_like(connect, f"hcp-bridge-{n}") for n in range(1, bridges + 1)]
    hostile = connect(HOSTILE, protocol=protocol)
    codes = hostile_subscribes(hostile)
    sent = publish_ratings(connect)
    got = collect(group, RATINGS)
    assert sorted(map(json.dumps, got)) == sorted(map(json.dumps, sent))
    assert drain(hostile) == []
    # Refused when asked, not granted and then starved: the device learns it at once.
    refused = NOT_AUTHORIZED if protocol == MQTTProtocolVersion.MQTTv5 else SUBACK_311_FAILURE
    assert codes == dict.fromkeys(codes, refused)
    assert not hostile.disconnected.is_set()


def test_a_device_subscribes_to_its_own_receipts_and_config(connect: Connect) -> None:
    a = connect(A)
    assert not a.subscribe(f"hcp/v1/{A}/receipt").is_failure
    assert not a.subscribe(f"hcp/v1/{A}/config").is_failure
    bridge = connect("hcp-bridge-1")
    config = connect("hcp-config")
    receipt = {"receipts": [{"rating_id": "a" * 32, "status": "accepted"}]}
    assert not bridge.publish(f"hcp/v1/{A}/receipt", receipt).is_failure
    assert a.next_message() == (f"hcp/v1/{A}/receipt", receipt)
    settings = {"reasons": ["排队太久"], **marker()}
    assert not config.publish(f"hcp/v1/{A}/config", settings, retain=True).is_failure
    assert a.next_message() == (f"hcp/v1/{A}/config", settings)


@pytest.mark.parametrize("user", sorted(SERVICES))
def test_no_service_user_publishes_as_a_device(connect: Connect, user: str) -> None:
    """The `pattern` lines would let each service write hcp/v1/<its name>/…: a fake
    device whose ratings the bridge would forward and whose retained status dashboards
    would show."""
    # Not the monitor watching itself: logged in as one user they would be one client.
    monitor = connect("hcp-monitor" if user != "hcp-monitor" else "hcp-watch")
    for kind in ("rating", "event", "status", "telemetry"):
        assert not monitor.subscribe(f"hcp/v1/+/{kind}").is_failure
    service = connect(user)
    for kind, retain in (("rating", False), ("event", False), ("status", True),
                         ("telemetry", False)):
        rc = service.publish(f"hcp/v1/{user}/{kind}", {"device_id": user, "forged": kind},
                             retain=retain)
        assert rc.value == NOT_AUTHORIZED, f"{user} {kind}: {rc}"
    a = connect(A)
    mark = marker()
    assert not a.publish(f"hcp/v1/{A}/event", mark).is_failure
    assert monitor.next_message() == (f"hcp/v1/{A}/event", mark)


def test_the_plugins_admin_publishes_no_device_topic(connect: Connect) -> None:
    """hcp-admin logs in on the device listener, where the `pattern` lines apply too."""
    admin = connect(ADMIN)
    for kind in ("rating", "status"):
        rc = admin.publish(f"hcp/v1/{ADMIN}/{kind}", {"forged": True})
        assert rc.value == NOT_AUTHORIZED, f"{kind}: {rc}"


def test_a_device_added_later_is_kept_to_its_own_topics(broker: SampleBroker,
                                                          connect: Connect) -> None:
    """docs/install.md's "a device added later": the same per-device commands, no
    restart."""
    late, password = "421100-HG01-W13", "pw-late-6Yp"
    broker.add_device(late, password)
    device = connect(late, password=password, device_listener=True, client_id=late)
    assert not device.subscribe(f"hcp/v1/{late}/receipt").is_failure
    assert device.subscribe("$share/bridge/hcp/v1/+/rating").value == NOT_AUTHORIZED
    bridge = bridge_like(connect)
    mark = marker()
    assert not device.publish(f"hcp/v1/{late}/rating", mark).is_failure
    assert bridge.next_message() == (f"hcp/v1/{late}/rating", mark)


def test_a_standby_311_bridge_takes_over_the_session_by_client_id(connect: Connect) -> None:
    """MQTT 3.1.1 has no shared subscriptions: one active bridge, and a standby with the
    same client id that inherits its session, ratings queued while none ran included."""
    v311 = MQTTProtocolVersion.MQTTv311
    active = connect("hcp-bridge-1", SessionClient, protocol=v311)
    assert not active.subscribe("hcp/v1/+/rating").is_failure
    sent = publish_ratings(connect, 4)
    assert sorted(map(json.dumps, collect([active], 4))) == sorted(map(json.dumps, sent))
    active.close()
    queued = publish_ratings(connect, 6)
    # The same user, hence (the broker makes it so) the same client id.
    standby = connect("hcp-bridge-1", SessionClient, client_id="any-id", protocol=v311)
    assert sorted(map(json.dumps, collect([standby], 6))) == sorted(map(json.dumps, queued))


def test_a_devices_will_is_published_when_it_dies(broker: SampleBroker,
                                                  connect: Connect) -> None:
    """The broker publishes the device's will ({"online": false}, retained) on its behalf:
    with the plugin in front, the ACL still grants it."""
    monitor = connect("hcp-monitor")
    assert not monitor.subscribe(f"hcp/v1/{A}/status").is_failure
    will = {"online": False}
    device = Client(broker, A, DEVICES[A], client_id=A)
    device.client.will_set(f"hcp/v1/{A}/status", json.dumps(will), qos=1, retain=True)
    device.connected()
    assert not device.subscribe(f"hcp/v1/{A}/receipt").is_failure
    device.client.loop_stop()
    sock = device.client.socket()
    assert sock is not None
    sock.close()  # gone without a DISCONNECT, as when the device loses power
    assert monitor.next_message() == (f"hcp/v1/{A}/status", will)


def test_bridges_announce_themselves_and_devices_cannot(connect: Connect) -> None:
    """[mqtt] standby = true: each bridge's retained status on hcp/v1/_bridges/<client
    id>/status, watched by its standby as <client id>-standby; nobody else may fake or
    clear it, and the standby's watcher may read that topic only."""
    topic = "hcp/v1/_bridges/hcp-bridge-1/status"
    active = connect("hcp-bridge-1")
    online = {"online": True, **marker()}
    assert not active.publish(topic, online, retain=True).is_failure
    for user in (A, "hcp-bridge-2", "hcp-bridge-1-standby", "hcp-bridge-1-expired"):
        rc = connect(user).publish(topic, {"online": False}, retain=True)
        assert rc.value == NOT_AUTHORIZED, user
    other = connect("hcp-bridge-2")
    assert not other.publish("hcp/v1/_bridges/hcp-bridge-2/status", online,
                             retain=True).is_failure
    # mosquitto grants any subscription here (the ACL is checked on delivery): what
    # matters is that only its own bridge's status reaches the standby.
    standby = connect("hcp-bridge-1-standby")
    standby.subscribe("hcp/v1/_bridges/+/status")
    assert standby.next_message() == (topic, online)
    mark = {"online": True, **marker()}
    assert not active.publish(topic, mark, retain=True).is_failure
    assert standby.next_message() == (topic, mark)


# Client ids bound to users on loopback --------------------------------------------------


@pytest.mark.parametrize("user", sorted(SERVICES))
def test_on_loopback_no_service_takes_another_clients_id(
        broker: SampleBroker, connect: Connect, user: str) -> None:
    """A service asking for device A's client id, or a bridge's, is given its own: A and
    the bridge stay connected and keep getting their messages. Without
    `use_username_as_clientid true` on the loopback listener, A was disconnected (client
    ids are one namespace across listeners)."""
    bridge_id = "hcp-bridge-2" if user == "hcp-bridge-1" else "hcp-bridge-1"
    a = connect(A)
    assert not a.subscribe(f"hcp/v1/{A}/receipt").is_failure
    bridge = connect(bridge_id)
    assert not bridge.subscribe("hcp/v1/+/rating").is_failure
    for victim in (A, bridge_id):
        intruder = connect(user, client_id=victim)
        receipt = {"receipts": [{"rating_id": marker()["marker"], "status": "accepted"}]}
        assert not bridge.publish(f"hcp/v1/{A}/receipt", receipt).is_failure
        assert a.next_message() == (f"hcp/v1/{A}/receipt", receipt)
        rating = marker()
        assert not a.publish(f"hcp/v1/{A}/rating", rating).is_failure
        assert bridge.next_message() == (f"hcp/v1/{A}/rating", rating)
        # Both messages came on the connections the victims had: had either been thrown
        # off, its client would have seen the DISCONNECT before them.
        assert not a.disconnected.is_set() and not bridge.disconnected.is_set(), victim
        intruder.close()
    assert TAKEN_OVER not in broker.log()


# Real services, one broker user each ---------------------------------------------------


def loopback(broker: SampleBroker) -> Mosquitto:
    """What BridgeProcess needs of a broker: the loopback listener's address."""
    return cast(Mosquitto, types.SimpleNamespace(host=HOST, port=broker.local_port))


def password_file(tmp_path: Path, user: str) -> Path:
    path = tmp_path / f"{user}.password"
    path.write_text(SERVICES[user] + "\n")
    return path


def bridge_process(tmp_path: Path, broker: SampleBroker, platform: RunningPlatform,
                   name: str, client_id: str, **mqtt: Any) -> BridgeProcess:
    """`hcp-bridge run` with bridge.toml as docs/install.md has it: client_id =
    <its user>, username_is_client_id = true, the loopback listener."""
    return BridgeProcess(tmp_path / name, loopback(broker), platform.url, client_id=client_id,
                         overrides={"mqtt": {"username_is_client_id": True,
                                             "password_file": str(password_file(
                                                 tmp_path, client_id)), **mqtt},
                                    "platform": {"profile": "gov"}})


@dataclass
class Forwarder:
    """`hcp-bridge expired` with a bridge's own bridge.toml."""

    log: Path
    process: subprocess.Popen[bytes]

    @classmethod
    def start(cls, bridge: BridgeProcess) -> Forwarder:
        log = bridge.workdir / "expired.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "broker_bridge", "expired", "--config",
                 str(bridge.config_file)], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        forwarder = cls(log, process)
        wait_for(lambda: "subscribed: " in forwarder.text() or process.poll() is not None,
                 15, "hcp-bridge expired subscribed")
        assert process.poll() is None, forwarder.text()
        return forwarder

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(5)


def device_fleet(broker: SampleBroker, device: str) -> FleetPublisher:
    """A device publishing its ratings over TLS as itself, collecting its receipts."""
    return FleetPublisher(HOST, broker.device_port, client_id=device, username=device,
                          password=DEVICES[device], ca_file=broker.ca.ca_file,
                          receipts_of=device)


def test_two_bridges_and_their_forwarders_each_as_its_own_user(
        tmp_path: Path, broker: SampleBroker, connect: Connect,
        platform: RunningPlatform) -> None:
    """Two bridges in one shared group, each with its `hcp-bridge expired` beside it
    (hcp-bridge-1, hcp-bridge-1-expired, hcp-bridge-2, hcp-bridge-2-expired): every
    rating stored once, every expired prompt stored, and nobody thrown off."""
    bridges = [bridge_process(tmp_path, broker, platform, f"b{n}", f"hcp-bridge-{n}")
               for n in (1, 2)]
    forwarders: list[Forwarder] = []
    fleets: list[FleetPublisher] = []
    try:
        for bridge in bridges:
            bridge.start(timeout=15)
            forwarders.append(Forwarder.start(bridge))
        for device, case in ((A, "C-1"), (B, "C-2")):
            # Closed before the device's ratings: one client id, one connection.
            events = connect(device)
            assert not events.publish(f"hcp/v1/{device}/event", {
                "event": "prompt_expired", "at": "2026-11-25T02:32:07.125Z",
                "case_id": case}).is_failure
            events.close()
        fleets = [device_fleet(broker, device) for device in (A, B)]
        sent = {**publish_fleet_ratings(fleets[0], 30, [A]),
                **publish_fleet_ratings(fleets[1], 30, [B])}
        wait_for(lambda: platform.control.counts()["total"] == len(sent), 20,
                 "every rating at the platform")
        wait_for(lambda: platform.control.counts()["expired_prompts"] == 2, 20,
                 "both expired prompts at the platform")
        wait_for(lambda: sum(len(f.receipted_ids()) for f in fleets) == len(sent), 20,
                 "a receipt for every rating")
        assert_exactly_once(platform, sent)
        logs = [b.log_text() for b in bridges] + [f.text() for f in forwarders]
        assert all("subscribed: " in log for log in logs)
        assert not any("took over the session" in log for log in logs), logs
        assert all(b.healthz() == 200 for b in bridges)
        assert all(f.process.poll() is None for f in forwarders)
        text = broker.log()
        assert TAKEN_OVER not in text, text
        for user in ("hcp-bridge-1", "hcp-bridge-1-expired", "hcp-bridge-2",
                     "hcp-bridge-2-expired"):
            assert f" as {user} (" in text, user   # the client id the broker gave it
    finally:
        for fleet in fleets:
            fleet.close()
        for forwarder in forwarders:
            forwarder.kill()
        for bridge in bridges:
            bridge.kill()


def test_a_standby_311_bridge_process_takes_over_as_the_same_user(
        tmp_path: Path, broker: SampleBroker, platform: RunningPlatform) -> None:
    """MQTT 3.1.1, one bridge.toml on both: the standby watches as hcp-bridge-1-standby
    without disturbing the active, then logs in as hcp-bridge-1 and takes the session
    over, ratings queued while none ran included."""
    options = {"protocol": "3.1.1", "shared_group": "", "standby": True}
    active = bridge_process(tmp_path, broker, platform, "active", "hcp-bridge-1",
                            **{**options, "standby": False})   # connects at once
    second = bridge_process(tmp_path, broker, platform, "second", "hcp-bridge-1", **options)
    fleet = None
    try:
        active.start(timeout=15)
        second.start(wait_healthy=False)
        wait_for(lambda: " as hcp-bridge-1-standby (" in broker.log(), 15,
                 "the standby's watcher logged in")
        fleet = device_fleet(broker, A)
        first = publish_fleet_ratings(fleet, 20, [A])
        wait_for(lambda: platform.control.counts()["total"] == 20, 15, "20 via the active")
        assert second.healthz() == 503 and active.healthz() == 200
        assert TAKEN_OVER not in broker.log()
        active.kill()
        queued = publish_fleet_ratings(fleet, 20, [A])   # perhaps before the standby is in
        second.wait_healthy(20)
        wait_for(lambda: platform.control.counts()["total"] == 40, 20, "20 via the standby")
        assert_exactly_once(platform, {**first, **queued})
        assert "hcp-bridge-1 is offline: taking over its session" in second.log_text()
        assert broker.log().count(" as hcp-bridge-1 (") == 2
    finally:
        if fleet is not None:
            fleet.close()
        active.kill()
        second.kill()


def test_a_forwarders_standby_watches_as_a_user_of_its_own(
        tmp_path: Path, broker: SampleBroker, connect: Connect,
        caplog: pytest.LogCaptureFixture) -> None:
    """`hcp-bridge expired` with standby = true waits as <client_id>-expired-standby: the
    running forwarder (hcp-bridge-1-expired) is not disturbed, and the watcher hears it
    go offline."""
    config = tmp_path / "bridge.toml"
    config.write_text(toml_text({
        "mqtt": {"host": HOST, "port": broker.local_port, "client_id": "hcp-bridge-1",
                 "username_is_client_id": True, "standby": True,
                 "password_file": str(password_file(tmp_path, "hcp-bridge-1"))},
        "platform": {"url": "http://127.0.0.1:9/ratings", "profile": "gov"}}))
    bridge_settings = load_bridge_config(config).mqtt
    assert bridge_settings.username == "hcp-bridge-1"
    settings = login_as(bridge_settings, "hcp-bridge-1-expired")   # as expired.py does
    active = connect("hcp-bridge-1-expired")
    topic = standby.status_topic(settings)
    assert not active.publish(topic, json.loads(standby.ONLINE), retain=True).is_failure
    stopping, result = threading.Event(), []
    caplog.set_level(logging.INFO, logger="hcp.bridge.standby")
    waiter = threading.Thread(target=lambda: result.append(standby.wait_until_free(
        settings, stopping, lambda c: configure_security(c, settings))))
    waiter.start()
    try:
        wait_for(lambda: " as hcp-bridge-1-expired-standby (" in broker.log(), 10,
                 "the forwarder's standby logged in")
        assert not active.publish(topic, json.loads(standby.OFFLINE), retain=True).is_failure
        waiter.join(10)
    finally:
        stopping.set()
        waiter.join(5)
    assert result == [True]
    assert "hcp-bridge-1-expired is offline: taking over" in caplog.text
    assert not active.disconnected.is_set()
    assert TAKEN_OVER not in broker.log()


# hcp-bridge forget ----------------------------------------------------------------------


def forget(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "broker_bridge", "forget", "--config",
                           str(config), *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)


def retained_after_subscribing(connect: Connect, a: Client) -> list[str]:
    """The retained status/config topics a new subscriber gets (hcp-monitor): whatever
    arrives before device A's marker event."""
    monitor = connect("hcp-monitor")
    for kind in ("status", "config", "event"):
        assert not monitor.subscribe(f"hcp/v1/+/{kind}").is_failure
    mark = marker()
    assert not a.publish(f"hcp/v1/{A}/event", mark).is_failure
    topics = []
    while (message := monitor.next_message()) != (f"hcp/v1/{A}/event", mark):
        topics.append(message[0])
    monitor.close()
    return sorted(topics)


def test_forget_clears_retained_topics_as_hcp_forget(
        tmp_path: Path, broker: SampleBroker, connect: Connect) -> None:
    """The user the docs give `hcp-bridge forget`, with the bridge's config: A's retained
    status and config are gone, B's stay. Logging in as the bridge's own user is refused
    before connecting: it would have taken the running bridge's session."""
    a, b = connect(A), connect(B)
    for device, client in ((A, a), (B, b)):
        assert not client.publish(f"hcp/v1/{device}/status", {"online": True},
                                  retain=True).is_failure
    assert not connect("hcp-config").publish(f"hcp/v1/{A}/config", {"window_name": "3号"},
                                             retain=True).is_failure
    assert retained_after_subscribing(connect, a) == [
        f"hcp/v1/{A}/config", f"hcp/v1/{A}/status", f"hcp/v1/{B}/status"]
    config = tmp_path / "bridge.toml"
    config.write_text(toml_text({
        "mqtt": {"host": HOST, "port": broker.local_port, "client_id": "hcp-bridge-1",
                 "username_is_client_id": True,
                 "password_file": str(password_file(tmp_path, "hcp-bridge-1"))},
        "platform": {"url": "http://127.0.0.1:9/ratings"}}))
    running = bridge_like(connect, "hcp-bridge-1")

    done = forget(config, A)
    assert done.returncode == 2, done.stderr
    assert "not logging in as hcp-bridge-1" in done.stderr and "hcp-forget" in done.stderr
    done = forget(config, "--username", "hcp-bridge-1-expired", "--password-file",
                  str(password_file(tmp_path, "hcp-bridge-1-expired")), A)
    assert done.returncode == 2, done.stderr

    done = forget(config, "--username", "hcp-forget", "--password-file",
                  str(password_file(tmp_path, "hcp-forget")), A)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"{A}: retained status and config cleared"]
    assert retained_after_subscribing(connect, a) == [f"hcp/v1/{B}/status"]
    assert not running.disconnected.is_set()
    assert TAKEN_OVER not in broker.log()
