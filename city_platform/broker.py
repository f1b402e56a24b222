"""The platform's MQTT client: follows the devices' `status`, `telemetry`, `event` and
retained `config` topics and `{prefix}/alerts` read-only (for the dashboard and the
window names), and publishes follow-up alerts on `{prefix}/alerts`. paho stays inside
this module."""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from city_platform.config import MqttSettings

log = logging.getLogger("hcp.platform.mqtt")

FOLLOWED = ("status", "telemetry", "event", "config")

# (device_id, topic kind, payload)
Listener = Callable[[str, str, bytes], None]


class BrokerError(Exception):
    """The MQTT client cannot be set up (unreadable password file, bad TLS files)."""


class Broker:
    """One paho client in its own network thread; reconnects by itself."""

    def __init__(self, settings: MqttSettings, listener: Listener) -> None:
        self.settings = settings
        self.prefix = settings.prefix
        self._listener = listener
        v5 = settings.protocol == "5"
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=settings.client_id,
                                   protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311)
        self._client.reconnect_delay_set(1, 30)
        if settings.username:
            password = None
            if settings.password_file:
                try:
                    password = Path(settings.password_file).read_text(encoding="utf-8").strip()
                except OSError as e:
                    raise BrokerError(f"[mqtt] password_file: {e.strerror}") from None
            self._client.username_pw_set(settings.username, password)
        if settings.tls:
            try:
                self._client.tls_set(ca_certs=settings.ca_file or None,
                                     certfile=settings.client_cert or None,
                                     keyfile=settings.client_key or None,
                                     tls_version=ssl.PROTOCOL_TLS_CLIENT)
            except (OSError, ssl.SSLError) as e:
                raise BrokerError(f"[mqtt] TLS files: {e}") from None
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self.connected = False

    def start(self) -> None:
        self._client.connect_async(self.settings.host, self.settings.port,
                                   self.settings.keepalive_s)
        self._client.loop_start()

    def stop(self, timeout: float = 2.0) -> None:
        """Disconnect and stop the network thread, waiting for it at most `timeout`
        seconds: a listener stuck in the store must not hold up the platform's shutdown
        (the thread is a daemon; it ends with the process)."""
        self._client.disconnect()
        stopper = threading.Thread(target=self._client.loop_stop, daemon=True)
        stopper.start()
        stopper.join(timeout)

    def publish(self, topic: str, payload: bytes) -> None:
        """QoS 1; queued by paho while disconnected and sent on reconnect."""
        self._client.publish(topic, payload, qos=1)

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object,
                    reason: object, properties: object = None) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("broker refused the connection: %s", reason)
            return
        self.connected = True
        client.subscribe([(f"{self.prefix}/+/{kind}", 0 if kind == "telemetry" else 1)
                          for kind in FOLLOWED] + [(f"{self.prefix}/alerts", 1)])
        log.info("following %s/+/{%s} on %s:%d", self.prefix, ",".join(FOLLOWED),
                 self.settings.host, self.settings.port)

    def _on_message(self, client: mqtt.Client, userdata: object,
                    message: mqtt.MQTTMessage) -> None:
        rest = message.topic[len(self.prefix) + 1:] if message.topic.startswith(
            self.prefix + "/") else ""
        device_id, _, kind = rest.partition("/")
        if rest == "alerts":
            device_id, kind = "", "alerts"  # the watcher's (and our own) alerts
        elif not device_id or kind not in FOLLOWED:
            return
        try:
            self._listener(device_id, kind, bytes(message.payload))
        except Exception:  # noqa: BLE001 - one odd message must not stop the follower
            log.exception("message on %s", message.topic)
