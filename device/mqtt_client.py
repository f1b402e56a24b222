"""The paho client the device's MQTT link (device/mqtt_link.py) drives: how it is made,
its credentials and TLS (read again before every attempt), the reconnect backoff and the
hint a refused connection gets."""

from __future__ import annotations

import json
import random
import ssl
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from common.backoff import full_jitter
from device.config import MqttSection

# Room in paho's own in-flight limit above the ratings window, for status and events.
EXTRA_INFLIGHT = 8


def new_client(cfg: MqttSection, device_id: str, status_topic: str) -> mqtt.Client:
    """A paho client for SPEC §7's session: persistent, the retained offline status as
    its will, no reconnect of its own (the link's loop does that)."""
    v5 = cfg.protocol == "5"
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=device_id,
        protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
        clean_session=None if v5 else False,
        reconnect_on_failure=False,
    )
    # The daemon's window bounds ratings; paho's limit only has to leave them room.
    client.max_inflight_messages_set(cfg.max_inflight + EXTRA_INFLIGHT)
    client.will_set(status_topic, json.dumps({"online": False}), qos=1, retain=True)
    return client


class Credentials:
    """Credentials and TLS, read again before every attempt so that a technician's fix (a
    new password file, a readable CA) works without a restart."""

    def __init__(self, cfg: MqttSection) -> None:
        self.cfg = cfg
        self._tls_ready = False

    def apply(self, client: mqtt.Client) -> str | None:
        """Set them on `client`; why it cannot connect, or None."""
        cfg = self.cfg
        if cfg.username:
            password = None
            if cfg.password_file:
                try:
                    password = Path(cfg.password_file).read_text(encoding="utf-8").rstrip("\r\n")
                except (OSError, UnicodeDecodeError) as e:
                    return f"cannot read [mqtt] password_file {cfg.password_file}: {e}"
            client.username_pw_set(cfg.username, password)
        if cfg.tls and not self._tls_ready:
            try:
                context = ssl.create_default_context(cafile=cfg.ca_file or None)
                if cfg.client_cert:
                    context.load_cert_chain(cfg.client_cert, cfg.client_key or None)
            except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
                return (f"TLS setup failed ([mqtt] ca_file {cfg.ca_file or '(system)'}, "
                        f"client_cert {cfg.client_cert or '(none)'}): {e}")
            client.tls_set_context(context)
            self._tls_ready = True
        return None


class Backoff:
    """Exponential backoff with full jitter: a hall's devices don't reconnect in step."""

    def __init__(self, first_s: float = 0.5, cap_s: float = 60.0) -> None:
        self.first_s, self.cap_s = first_s, cap_s
        self.attempt = 0

    def next(self) -> float:
        attempt, self.attempt = self.attempt, self.attempt + 1
        if attempt == 0:
            # The first retry is never immediate (a broker restarting needs a moment).
            first = min(self.cap_s, self.first_s)
            return random.uniform(first / 2, first)
        return full_jitter(attempt, self.first_s, self.cap_s)   # the bridge's formula

    def reset(self) -> None:
        self.attempt = 0


def refusal_hint(reason: str) -> str:
    low = reason.lower()
    if "user name or password" in low or "not authori" in low or "bad credentials" in low:
        return " — check [mqtt] username and password_file, and the broker's ACL"
    if "identifier" in low:
        return " — check [device] id (the MQTT client id)"
    return ""
