"""A SUBACK that answers fewer topics than were asked for (a broker bug: MQTT requires one
reason code per topic) leaves the ones it left out refused, not silently granted: the
bridge is not healthy and says which, and asks again later."""

from __future__ import annotations

import logging
import queue
from pathlib import Path

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from broker_bridge.config import parse_bridge_config
from broker_bridge.mqtt_link import LinkEvent, MqttLink

TOPICS = [("hcp/v1/+/rating", 1), ("hcp/v1/+/status", 1), ("hcp/v1/+/event", 1)]


def _link(monkeypatch: pytest.MonkeyPatch) -> tuple[MqttLink, list[float]]:
    settings = parse_bridge_config(Path("test.toml"), {
        "mqtt": {"port": 1, "client_id": "suback-test", "shared_group": ""},
        "platform": {"url": "http://127.0.0.1:9/"}}).mqtt
    events: queue.SimpleQueue[LinkEvent] = queue.SimpleQueue()
    link = MqttLink(settings, TOPICS, events.put, lambda t: True)
    later: list[float] = []
    monkeypatch.setattr(link, "_subscribe_later", later.append)
    link._subscribe_mid = 7
    return link, later


def _granted(qos: int = 1) -> ReasonCode:
    return ReasonCode(PacketTypes.SUBACK, identifier=qos)


def test_a_short_suback_leaves_the_missing_topics_refused(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    link, later = _link(monkeypatch)
    with caplog.at_level(logging.ERROR):
        link._on_subscribe(link._client, None, 7, [_granted()], None)
    assert not link.healthy
    assert len(later) == 1                                  # asked again after a delay
    text = caplog.text
    assert "hcp/v1/+/status (no reason code for it in the SUBACK)" in text
    assert "hcp/v1/+/event (no reason code for it in the SUBACK)" in text
    assert "hcp/v1/+/rating (" not in text


def test_a_full_suback_is_healthy_and_extra_codes_change_nothing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    link, later = _link(monkeypatch)
    link._connected = True
    link._on_subscribe(link._client, None, 7, [_granted()] * (len(TOPICS) + 2), None)
    assert link.healthy and later == []
