"""The broker half of `hcp-device doctor`: one real MQTT CONNECT with the device's own
settings (host, port, TLS files, user, password file, protocol, client id and persistent
session), then a clean DISCONNECT. Nothing is published or subscribed, and messages the
session delivers are never acknowledged: they stay queued for the daemon."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

from device.config import MqttSection
from device.mqtt_client import Credentials

BROKER_TIMEOUT_S = 5.0


def probe_broker(cfg: MqttSection, client_id: str,
                 timeout_s: float = BROKER_TIMEOUT_S) -> tuple[str | None, str]:
    """One CONNECT with the device's settings and client id, then DISCONNECT. Returns
    (None, "") when the broker accepted it, else (why, fix)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    reach_fix = (f"check [mqtt] host and port, that the broker runs and listens there, "
                 f"and the firewall (nc -vz {cfg.host} {cfg.port})")
    v5 = cfg.protocol == "5"
    # The device's own client id and persistent session, as the daemon connects: a
    # clean start would throw away what the broker holds for it. manual_ack: messages
    # the session delivers are never acknowledged, so they stay queued for the daemon.
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=MQTTProtocolVersion.MQTTv5 if v5
                         else MQTTProtocolVersion.MQTTv311,
                         clean_session=None if v5 else False, manual_ack=True)
    # The daemon's own credentials and TLS code: the check is what the daemon will do.
    why = Credentials(cfg).apply(client)
    if why is not None:
        if why.startswith("TLS"):
            return why, ("check [mqtt] ca_file, client_cert and client_key exist and are "
                         "readable PEM files")
        return why, "make it readable by the daemon's user (root:hcp-device 0640)"
    answered = threading.Event()
    result: list[str] = []

    def on_connect(_c: Any, _ud: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            result.append(str(reason))
        answered.set()

    client.on_connect = on_connect
    try:
        if v5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = cfg.session_expiry_s
            client.connect(cfg.host, cfg.port, keepalive=max(5, int(timeout_s) * 2),
                           clean_start=False, properties=props)
        else:
            client.connect(cfg.host, cfg.port, keepalive=max(5, int(timeout_s) * 2))
    except ssl.SSLCertVerificationError as e:
        return (f"TLS: the broker's certificate is not trusted ({e.verify_message})",
                "[mqtt] ca_file must be the CA that signed the broker's certificate, and "
                "[mqtt] host a name in it")
    except ssl.SSLError as e:
        return f"TLS handshake failed: {e.reason or e}", \
            "check [mqtt] tls and port (TLS listeners are usually 8883)"
    except (OSError, ValueError) as e:
        return f"cannot reach it: {getattr(e, 'strerror', None) or e}", reach_fix
    deadline = time.monotonic() + timeout_s
    try:
        while not answered.is_set() and time.monotonic() < deadline:
            if client.loop(timeout=0.2) != mqtt.MQTT_ERR_SUCCESS and not answered.is_set():
                return ("the connection closed before the broker answered CONNECT "
                        "(TLS expected? a wrong protocol version?)",
                        "check [mqtt] tls and protocol against the broker's listener")
        if not answered.is_set():
            return f"no answer to CONNECT within {timeout_s:g} s", reach_fix
        if result:
            return (f"refused the CONNECT: {result[0]}",
                    "check [mqtt] username and password_file, and the broker's ACL for "
                    f"client id {client_id}")
        return None, ""
    finally:
        client.disconnect()   # a clean DISCONNECT: no will, the session is kept
        _flush(client, lambda: client.socket() is None)


def _flush(client: Any, done: Callable[[], bool], timeout_s: float = 1.0) -> None:
    """Let paho write the DISCONNECT before the socket goes."""
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:
        client.loop(timeout=0.05)
