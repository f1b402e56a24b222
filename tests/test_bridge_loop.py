"""Edge cases of the bridge loop that a real broker does not produce on demand: a
reconnect while a batch is at the platform, a redelivery joining it, a rating_id
borrowed by another device. The broker side is a fake link that records what the
bridge acknowledges and publishes; the platform is the real reference platform. The
last test checks the real MQTT adapter's half of the reconnect rule."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from broker_bridge.bridge import Bridge
from broker_bridge.config import MqttSettings, parse_bridge_config
from broker_bridge.metrics import BridgeMetrics
from broker_bridge.mqtt_link import Incoming, LinkEvent, LinkUp, MqttLink
from tests.support.mosquitto import Mosquitto
from tests.support.platform import RunningPlatform
from tests.support.ratings import FleetPublisher, encode, make_rating


@dataclass
class FakeLink:
    """Stands in for MqttLink: the test plays the broker through `sink`."""

    sink: Callable[[LinkEvent], None]
    acks: list[tuple[int, int]] = field(default_factory=list)
    published: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    healthy: bool = True
    lock: threading.Lock = field(default_factory=threading.Lock)
    started: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        self.sink(LinkUp(1, False))  # connection 1, before anything the test delivers
        self.started.set()

    def stop(self, timeout: float = 1.5) -> None:
        pass

    def ack(self, generation: int, mid: int, qos: int) -> bool:
        with self.lock:
            self.acks.append((generation, mid))
        return True

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        with self.lock:
            self.published.append((topic, json.loads(payload)))

    def receipts(self, device_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [r for topic, body in self.published
                    if topic == f"hcp/v1/{device_id}/receipt" for r in body["receipts"]]

    def deliver(self, generation: int, mid: int, record: dict[str, Any],
                device_id: str | None = None) -> None:
        topic = f"hcp/v1/{device_id or record['device_id']}/rating"
        self.sink(Incoming(generation, topic, encode(record), mid, 1, False))


@pytest.fixture
def run_bridge(platform: RunningPlatform) -> Iterator[Callable[..., FakeLink]]:
    bridges: list[tuple[Bridge, threading.Thread]] = []

    def start(**platform_keys: Any) -> FakeLink:
        config = parse_bridge_config(Path("test.toml"), {
            "mqtt": {"client_id": "loop-test"},
            "platform": {"url": platform.url, "retry_cap_s": 1, **platform_keys}})
        links: list[FakeLink] = []

        def factory(settings: MqttSettings, subscriptions: Sequence[tuple[str, int]],
                    sink: Callable[[LinkEvent], None], holds: Callable[[str], bool]
                    ) -> FakeLink:
            links.append(FakeLink(sink))
            return links[0]

        bridge = Bridge(config, BridgeMetrics(), link_factory=factory)
        thread = threading.Thread(target=bridge.run, daemon=True)
        thread.start()
        bridges.append((bridge, thread))
        assert links[0].started.wait(5)
        return links[0]

    yield start
    for bridge, thread in bridges:
        bridge.request_stop()
        thread.join(5)


def wait_for(predicate: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_reconnect_while_at_the_platform_acks_only_the_redelivery(
        run_bridge: Callable[..., FakeLink], platform: RunningPlatform) -> None:
    platform.control.chaos("slow", delay_s=0.8, requests=1)
    link = run_bridge(batch_wait_ms=0)
    record = make_rating("dev-1")
    link.deliver(1, 11, record)
    wait_for(lambda: platform.control.counts()["total"] == 1)  # stored, not yet answered
    link.sink(LinkUp(2, True))       # the connection dropped and came back
    link.deliver(2, 3, record)        # the broker redelivers under a new id
    wait_for(lambda: bool(link.receipts("dev-1")))
    time.sleep(0.2)
    assert link.acks == [(2, 3)], "acknowledged an id from the dead connection"
    assert [r["status"] for r in link.receipts("dev-1")] == ["accepted"]
    assert platform.control.counts()["requests"] == 1  # the redelivery joined the batch


def test_ratings_not_yet_sent_are_dropped_on_reconnect_and_come_back(
        run_bridge: Callable[..., FakeLink], platform: RunningPlatform) -> None:
    link = run_bridge(batch_max=2, batch_wait_ms=60_000)
    lost, y, z = make_rating("dev-1"), make_rating("dev-1"), make_rating("dev-2")
    link.deliver(1, 1, lost)
    time.sleep(0.1)
    link.sink(LinkUp(2, False))       # broker lost the session: `lost` is the devices' job
    link.deliver(2, 1, y)
    link.deliver(2, 2, z)
    wait_for(lambda: platform.control.counts()["total"] == 2)
    wait_for(lambda: len(link.acks) == 2)
    assert set(platform.control.rating_ids()) == {y["rating_id"], z["rating_id"]}
    assert sorted(link.acks) == [(2, 1), (2, 2)]


def test_a_rating_id_borrowed_by_another_device_is_decided_by_the_platform(
        run_bridge: Callable[..., FakeLink], platform: RunningPlatform) -> None:
    platform.control.chaos("slow", delay_s=0.5, requests=1)
    link = run_bridge(batch_wait_ms=0)
    genuine = make_rating("dev-1")
    borrowed = make_rating("dev-2", rating_id=genuine["rating_id"])
    link.deliver(1, 1, genuine)
    wait_for(lambda: platform.control.counts()["total"] == 1)
    link.deliver(1, 2, borrowed)      # arrives while the genuine one is at the platform
    wait_for(lambda: bool(link.receipts("dev-2")))
    assert [r["status"] for r in link.receipts("dev-1")] == ["accepted"]
    # The platform de-duplicates by (device_id, rating_id) (issue 17): dev-2's record is
    # its own rating, stored and accepted, and cannot suppress dev-1's.
    assert [r["status"] for r in link.receipts("dev-2")] == ["accepted"]
    assert sorted(link.acks) == [(1, 1), (1, 2)]
    assert platform.control.counts()["by_device"] == {"dev-1": 1, "dev-2": 1}
    # The genuine device re-sends: answered from the cache, no platform call.
    requests = platform.control.counts()["requests"]
    link.deliver(1, 3, genuine)
    wait_for(lambda: len(link.receipts("dev-1")) == 2)
    assert platform.control.counts()["requests"] == requests
    assert (1, 3) in link.acks


def test_mqtt_link_refuses_to_ack_an_id_from_an_earlier_connection(
        mosquitto: Mosquitto) -> None:
    """The real adapter against a real broker: after a reconnect the broker redelivers
    the un-acknowledged rating; only the new delivery may be acknowledged."""
    settings = parse_bridge_config(Path("test.toml"), {
        "mqtt": {"port": mosquitto.port, "client_id": "link-test", "shared_group": ""},
        "platform": {"url": "http://127.0.0.1:9/"}}).mqtt
    events: queue.SimpleQueue[LinkEvent] = queue.SimpleQueue()

    def next_incoming() -> Incoming:
        while True:
            event = events.get(timeout=10)
            if isinstance(event, Incoming):
                return event

    link = MqttLink(settings, [("hcp/v1/+/rating", 1)], events.put, lambda t: True)
    link.start()
    wait_for(lambda: link.healthy)
    publisher = FleetPublisher(mosquitto.host, mosquitto.port)
    try:
        publisher.publish_record(make_rating("dev-1"))
        first = next_incoming()
        mosquitto.restart()  # clean restart: the session (and the un-acked rating) is kept
        second = next_incoming()
        assert second.payload == first.payload and second.generation > first.generation
        assert link.ack(first.generation, first.mid, 1) is False
        assert link.ack(second.generation, second.mid, 1) is True
        time.sleep(0.3)
    finally:
        link.stop()
        publisher.close()
    # Acknowledged for good: a new session under the same client id gets nothing again.
    events = queue.SimpleQueue()
    again = MqttLink(settings, [("hcp/v1/+/rating", 1)], events.put, lambda t: True)
    again.start()
    try:
        wait_for(lambda: again.healthy)
        time.sleep(0.5)
        assert not any(isinstance(e, Incoming) for e in _drain(events))
    finally:
        again.stop()


def _drain(events: queue.SimpleQueue[LinkEvent]) -> list[LinkEvent]:
    out = []
    while not events.empty():
        out.append(events.get())
    return out


def test_a_failure_in_a_link_callback_does_not_end_the_network_thread(
        mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture) -> None:
    """A bug that raises in one of our paho callbacks is logged; the link goes on
    delivering (a network thread that died would leave the bridge deaf until a restart)."""
    settings = parse_bridge_config(Path("test.toml"), {
        "mqtt": {"port": mosquitto.port, "client_id": "link-raises", "shared_group": ""},
        "platform": {"url": "http://127.0.0.1:9/"}}).mqtt
    delivered: list[bytes] = []
    raised: list[int] = []

    def sink(event: LinkEvent) -> None:
        messages = event if isinstance(event, list) else [event]
        for message in messages:
            if isinstance(message, Incoming):
                if not raised:
                    raised.append(1)
                    raise RuntimeError("a bug in the sink")
                delivered.append(message.payload)

    link = MqttLink(settings, [("hcp/v1/+/rating", 1)], sink, lambda t: False)
    link.start()
    wait_for(lambda: link.healthy)
    publisher = FleetPublisher(mosquitto.host, mosquitto.port)
    try:
        publisher.publish_record(make_rating("dev-1"))
        wait_for(lambda: bool(raised))
        time.sleep(0.2)   # not in the same read as the first
        second = make_rating("dev-1")
        publisher.publish_record(second)
        wait_for(lambda: any(second["rating_id"].encode() in p for p in delivered))
        assert link.healthy
    finally:
        link.stop()
        publisher.close()
    assert "a bug in the sink" in caplog.text
