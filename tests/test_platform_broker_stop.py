"""The platform's MQTT follower stops on time even when its listener is stuck."""

from __future__ import annotations

import threading
import time

import paho.mqtt.publish as publish

from city_platform.broker import Broker
from city_platform.config import MqttSettings
from simulator.localbroker import Mosquitto


def test_stop_returns_while_the_listener_is_stuck(mosquitto: Mosquitto) -> None:
    entered, release = threading.Event(), threading.Event()

    def listener(device_id: str, kind: str, payload: bytes) -> None:
        entered.set()
        release.wait(30)   # a store that does not answer

    broker = Broker(MqttSettings(host=mosquitto.host, port=mosquitto.port,
                                 client_id="platform-stop-test"), listener)
    broker.start()
    try:
        deadline = time.monotonic() + 10
        while not broker.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert broker.connected
        # Subscribed by the time the SUBACK is in: publish until the listener is entered.
        while not entered.is_set() and time.monotonic() < deadline:
            publish.single("hcp/v1/D-1/status", b'{"online":true}', hostname=mosquitto.host,
                           port=mosquitto.port)
            entered.wait(0.2)
        assert entered.is_set(), "the listener never got the status message"
        started = time.monotonic()
        broker.stop(timeout=0.5)
        assert time.monotonic() - started < 5, "stop() waited for the stuck listener"
    finally:
        release.set()
