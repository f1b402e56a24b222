"""An active/standby pair of bridges with one client id (SPEC §12), against a real
mosquitto, in MQTT 5 and 3.1.1: the standby waits without touching the active's session,
takes it over once the active is killed, and every rating arrives once."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from broker_bridge import standby
from broker_bridge.config import MqttSettings
from tests.support.bridge import BridgeProcess
from tests.support.brokers import assert_exactly_once, publish_ratings, publisher, wait_for
from tests.support.mosquitto import Mosquitto
from tests.support.platform import RunningPlatform


def pair_member(tmp_path: Path, name: str, broker: Mosquitto, platform: RunningPlatform,
                protocol: str) -> BridgeProcess:
    return BridgeProcess(tmp_path / name, broker, platform.url, client_id="city-bridge",
                         overrides={"mqtt": {"protocol": protocol, "shared_group": "",
                                             "standby": True}})


@pytest.mark.parametrize("protocol", ["5", pytest.param("3.1.1", marks=pytest.mark.slow)])
def test_the_standby_waits_then_takes_over_when_the_active_dies(
        tmp_path: Path, mosquitto: Mosquitto, platform: RunningPlatform, protocol: str
        ) -> None:
    # Nobody announced yet: the first of the pair waits ABSENT_S before it connects.
    active = pair_member(tmp_path, "a", mosquitto, platform, protocol).start(
        timeout=standby.ABSENT_S + 15)
    second = pair_member(tmp_path, "b", mosquitto, platform, protocol)
    with active, second, publisher(mosquitto, protocol) as fleet:
        second.start(wait_healthy=False)
        wait_for(lambda: "standing by" in second.log_text(), 10, "the standby waiting")
        time.sleep(standby.ABSENT_S + 1)   # past the time a standby waits for a status
        first = publish_ratings(fleet, 50)
        wait_for(lambda: platform.control.counts()["total"] == 50, 10, "50 through the active")
        assert second.healthz() == 503 and active.healthz() == 200
        # The active kept its session all along: nobody connected with its client id.
        assert mosquitto.log_text().count("as city-bridge (") == 1
        active.kill()
        second.wait_healthy(15)
        later = publish_ratings(fleet, 50)
        wait_for(lambda: platform.control.counts()["total"] == 100, 15,
                 "50 more through the standby")
    assert_exactly_once(platform, {**first, **later})
    # The active's will said so: the standby did not have to wait out a silence.
    assert "city-bridge is offline: taking over its session" in second.log_text()


def test_a_stale_online_status_is_taken_over_after_the_silence(
        mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch) -> None:
    """The broker went down with the active: its will was never published, the retained
    status still says online. The standby takes over once nothing refreshed it."""
    monkeypatch.setattr(standby, "STALE_S", 1.5)
    settings = MqttSettings(
        host=mosquitto.host, port=mosquitto.port, prefix="hcp/v1", client_id="stale-bridge",
        shared_group="", keepalive_s=30, session_expiry_s=3600, receive_maximum=100,
        tls=False, ca_file="", client_cert="", client_key="", username="", password_file="")
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="old-active")
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    client.publish(standby.status_topic(settings), standby.ONLINE, qos=1,
                   retain=True).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()
    stopping = threading.Event()
    started = time.monotonic()
    assert standby.wait_until_free(settings, stopping, lambda c: None)
    assert time.monotonic() - started >= 1.5
    # And a standby being stopped while it waits says so.
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="live-active")
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    client.publish(standby.status_topic(settings), standby.ONLINE, qos=1,
                   retain=True).wait_for_publish(5)
    threading.Timer(0.5, stopping.set).start()
    monkeypatch.setattr(standby, "STALE_S", 60.0)
    assert not standby.wait_until_free(settings, stopping, lambda c: None)
    client.disconnect()
    client.loop_stop()
