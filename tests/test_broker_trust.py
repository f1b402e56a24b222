"""The sample broker's trust model, against a real mosquitto running
systemd/examples/mosquitto.conf, mosquitto.acl and the dynamic-security commands as
shipped, TLS included (tests/test_acl.py's SampleBroker):

- a device cannot subscribe to anything but its own receipts and config: not the
  bridges' shared subscription (with mosquitto 2.0's acl_file alone it was granted, and
  each rating that mosquitto handed to the intruder was dropped: one bridge got 25 of
  50), not `#`, not another device's receipts;
- no service user can publish a device's topics: the ACL's `pattern` lines apply to
  every user, so without the `topic deny` lines hcp-bridge could publish ratings and
  retained statuses as a device named "hcp-bridge";
- client ids: on the device listener the user name is the client id (tests/test_acl.py);
  on the loopback one the services choose theirs, so two bridges share a group and a
  standby MQTT 3.1.1 bridge takes over the active one's session by its client id.
"""

from __future__ import annotations

import json
import queue
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.enums import MQTTProtocolVersion

from tests.support.mosquitto import TestCA
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

HOSTILE = "421100-HG01-W66"
DEVICES = {A: PASSWORDS[A], B: PASSWORDS[B], HOSTILE: "pw-hostile-8Rw"}
SERVICES = {"hcp-bridge": PASSWORDS["hcp-bridge"], "hcp-watch": "pw-watch-5Tn",
            "hcp-monitor": PASSWORDS["hcp-monitor"], "hcp-config": "pw-config-1Zu"}
ALL = {**DEVICES, **SERVICES}
SUBACK_311_FAILURE = 0x80
RATINGS = 50


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
    bridge = connect("hcp-bridge", client_id="hcp-bridge-1")
    config = connect("hcp-config", client_id="hcp-config-1")
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
    monitor = connect("hcp-monitor", client_id="hcp-monitor-watching")
    assert not monitor.subscribe("hcp/v1/#").is_failure
    service = connect(user, client_id=f"{user}-1")
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
    active = connect("hcp-bridge", SessionClient, client_id="hcp-bridge-1", protocol=v311)
    assert not active.subscribe("hcp/v1/+/rating").is_failure
    sent = publish_ratings(connect, 4)
    assert sorted(map(json.dumps, collect([active], 4))) == sorted(map(json.dumps, sent))
    active.close()
    queued = publish_ratings(connect, 6)
    standby = connect("hcp-bridge", SessionClient, client_id="hcp-bridge-1", protocol=v311)
    assert sorted(map(json.dumps, collect([standby], 6))) == sorted(map(json.dumps, queued))


def test_a_devices_will_is_published_when_it_dies(broker: SampleBroker,
                                                  connect: Connect) -> None:
    """The broker publishes the device's will ({"online": false}, retained) on its behalf:
    with the plugin in front, the ACL still grants it."""
    monitor = connect("hcp-monitor", client_id="hcp-monitor-1")
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
    id>/status, watched by its standby; a device must not fake or clear it."""
    topic = "hcp/v1/_bridges/hcp-bridge-1/status"
    active = connect("hcp-bridge", client_id="hcp-bridge-1")
    online = {"online": True, **marker()}
    assert not active.publish(topic, online, retain=True).is_failure
    a = connect(A)
    assert a.publish(topic, {"online": False}, retain=True).value == NOT_AUTHORIZED
    standby = connect("hcp-bridge", client_id="hcp-bridge-1-standby")
    assert not standby.subscribe("hcp/v1/_bridges/#").is_failure
    assert standby.next_message() == (topic, online)
