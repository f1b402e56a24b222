"""Setting up a paho client the way every MQTT client of the bridge package needs it:
credentials and TLS from `[mqtt]`, and paho's own logging kept quiet where our lines
already say what happened."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import paho.mqtt.client as mqtt

from broker_bridge.config import MqttSettings


class LinkError(Exception):
    """The MQTT link cannot be set up (unreadable password file, bad TLS files)."""


def configure_security(client: mqtt.Client, s: MqttSettings) -> None:
    """Username and password (read from password_file) and TLS, as configured."""
    if s.username:
        try:
            password = Path(s.password_file).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as e:
            raise LinkError(f"cannot read password_file {s.password_file}: "
                            f"{e.strerror}") from None
        except UnicodeDecodeError as e:
            raise LinkError(f"password_file {s.password_file} is not UTF-8 text (byte "
                            f"{e.start})") from None
        client.username_pw_set(s.username, password)
    if s.tls:
        try:
            client.tls_set(ca_certs=s.ca_file or None, certfile=s.client_cert or None,
                           keyfile=s.client_key or None, cert_reqs=ssl.CERT_REQUIRED)
        except (OSError, ssl.SSLError) as e:
            raise LinkError(f"cannot set up TLS to the broker: {e}") from None


def quiet_paho(record: logging.LogRecord) -> bool:
    """paho logs "Client is not connected" at ERROR on every failed connection attempt
    and after a clean disconnect; our own lines already say what happened."""
    return not str(record.msg).startswith("Client is not connected")
