"""A rating whose topic is not UTF-8 (mosquitto refuses such topics; another broker, or a
broker bug, may not): the bridge dead-letters it with its reason and acknowledges it
once, as every invalid message (SPEC §9). Driven through the real MQTT adapter's
message callbacks, with paho's client replaced by one that records acks and publishes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from broker_bridge.bridge import Bridge
from broker_bridge.config import parse_bridge_config
from broker_bridge.metrics import BridgeMetrics
from broker_bridge.mqtt_link import MqttLink
from tests.support.ratings import encode, make_rating

PREFIX = "hcp/v1"


class RecordingClient:
    """Stands in for paho's client behind MqttLink: records acks and publishes."""

    def __init__(self) -> None:
        self.acks: list[int] = []
        self.published: list[tuple[str, dict[str, Any]]] = []

    def ack(self, mid: int, qos: int) -> None:
        self.acks.append(mid)

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        self.published.append((topic, json.loads(payload)))


def bridge_on_recording_link() -> tuple[Bridge, MqttLink, RecordingClient]:
    config = parse_bridge_config(Path("test.toml"), {
        "mqtt": {"client_id": "topic-utf8-test"},
        "platform": {"url": "http://127.0.0.1:9/api"}})
    bridge = Bridge(config, BridgeMetrics())
    link = bridge.link
    assert isinstance(link, MqttLink)
    client = RecordingClient()
    link._client = client  # type: ignore[assignment]
    link._connected = True
    return bridge, link, client


def deliver_fast(link: MqttLink, topic: bytes, payload: bytes, mid: int) -> None:
    link._on_fast_message(topic, payload, mid, 1, False, False)


def deliver_plain(link: MqttLink, topic: bytes, payload: bytes, mid: int) -> None:
    message = mqtt.MQTTMessage(mid, topic)
    message.qos, message.payload = 1, payload
    link._on_message(link._client, None, message)


@pytest.mark.parametrize("deliver", [deliver_fast, deliver_plain], ids=["fast", "plain"])
@pytest.mark.parametrize("device_part", [b"\xff\xfe", b"W\xe7\x8e", "王芳".encode("gbk")])
def test_a_rating_on_a_topic_that_is_not_utf8_is_dead_lettered_and_acked_once(
        deliver: Any, device_part: bytes) -> None:
    bridge, link, client = bridge_on_recording_link()
    record = make_rating()
    deliver(link, PREFIX.encode() + b"/" + device_part + b"/rating", encode(record), 41)
    link._hand_over()
    bridge._step(0.0)
    letters = [body for topic, body in client.published if topic == f"{PREFIX}/deadletter"]
    assert len(letters) == 1, client.published
    letter = letters[0]
    assert letter["reason"] == "bad_topic"
    assert "not UTF-8" in letter["detail"]
    # The device part could be anything (a name in another encoding): not republished.
    assert letter["topic"] is None and letter["device_id"] is None
    assert letter["rating_id"] == record["rating_id"]
    assert not [t for t, _ in client.published if t.endswith("/receipt")]
    assert client.acks == [41]
    assert not bridge._pending
    assert bridge.metrics.registry.get_sample_value(
        "hcp_bridge_deadletter_total", {"reason": "bad_topic"}) == 1
