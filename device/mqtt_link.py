"""The device's MQTT connection on paho-mqtt 2.x: connect, reconnect, publish, receive.

paho's network thread only turns what it sees into events on the daemon's queue;
paho exceptions and reason codes stay in this module. Reconnects happen in one
visible loop with exponential backoff and full jitter.
"""

from __future__ import annotations

import json
import logging
import random
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from device.config import MqttSection

log = logging.getLogger("hcp.mqtt")

MAX_INCOMING = 256 * 1024


# Events put on the daemon's queue ---------------------------------------------

@dataclass(frozen=True)
class MqttUp:
    session_present: bool
    t: float


@dataclass(frozen=True)
class MqttDown:
    reason: str
    t: float


@dataclass(frozen=True)
class MqttPubAck:
    mid: int
    ok: bool
    reason: str
    t: float


@dataclass(frozen=True)
class MqttMessage:
    kind: str        # "receipt" | "config"
    payload: bytes
    retain: bool
    t: float


class Backoff:
    """Exponential backoff with full jitter: a hall's devices don't reconnect in step."""

    def __init__(self, first_s: float = 0.5, cap_s: float = 60.0) -> None:
        self.first_s, self.cap_s = first_s, cap_s
        self.attempt = 0

    def next(self) -> float:
        ceiling = min(self.cap_s, self.first_s * 2 ** self.attempt)
        self.attempt += 1
        return random.uniform(ceiling / 2, ceiling) if self.attempt == 1 else \
            random.uniform(0, ceiling)

    def reset(self) -> None:
        self.attempt = 0


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class MqttLink:
    def __init__(self, cfg: MqttSection, device_id: str, version: str,
                 emit: Callable[[Any], None], monotonic: Callable[[], float]) -> None:
        self.cfg = cfg
        self.device_id = device_id
        self.version = version
        self.emit = emit
        self.monotonic = monotonic
        base = f"{cfg.prefix}/{device_id}"
        self.topics = {k: f"{base}/{k}" for k in
                       ("rating", "event", "status", "telemetry", "receipt", "config")}
        self.connected = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None
        self.client = self._make_client()

    # --- setup -------------------------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        cfg = self.cfg
        v5 = cfg.protocol == "5"
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.device_id,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if v5 else False,
            reconnect_on_failure=False,
        )
        client.max_inflight_messages_set(cfg.max_inflight)
        client.will_set(self.topics["status"], json.dumps({"online": False}), qos=1,
                        retain=True)
        if cfg.username:
            password = None
            if cfg.password_file:
                password = Path(cfg.password_file).read_text(encoding="utf-8").rstrip("\r\n")
            client.username_pw_set(cfg.username, password)
        if cfg.tls:
            client.tls_set(ca_certs=cfg.ca_file or None, certfile=cfg.client_cert or None,
                           keyfile=cfg.client_key or None, cert_reqs=ssl.CERT_REQUIRED)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mqtt", daemon=True)
        self._thread.start()

    # --- the reconnect loop ----------------------------------------------------------

    def _run(self) -> None:
        backoff = Backoff()
        v5 = self.cfg.protocol == "5"
        props = None
        if v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self.cfg.session_expiry_s
        announced = False
        while not self._stop.is_set():
            try:
                if v5:
                    rc = self.client.connect(self.cfg.host, self.cfg.port, self.cfg.keepalive_s,
                                             clean_start=False, properties=props)
                else:
                    rc = self.client.connect(self.cfg.host, self.cfg.port, self.cfg.keepalive_s)
                ok = rc == MQTTErrorCode.MQTT_ERR_SUCCESS
                why = mqtt.error_string(rc)
            except ssl.SSLError as e:
                ok, why = False, f"TLS: {e.reason or e}"
            except (OSError, ValueError) as e:
                ok, why = False, str(e) or type(e).__name__
            if ok:
                up_since = self.monotonic()
                while not self._stop.is_set():
                    rc = self.client.loop(timeout=0.5)
                    if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                        break
                if self._stop.is_set():
                    break
                if self.connected:
                    self._went_down("connection lost")
                if self.monotonic() - up_since > 60:
                    backoff.reset()
                why = self.last_error or "connection lost"
            if not announced or self.last_error != why:
                log.warning("broker %s:%d unreachable: %s (retrying with backoff)",
                            self.cfg.host, self.cfg.port, why)
                announced = True
            self.last_error = why
            self._stop.wait(backoff.next())

    def _went_down(self, reason: str) -> None:
        self.connected = False
        self.emit(MqttDown(reason, self.monotonic()))

    # --- paho callbacks (network thread: only emit) ----------------------------------

    def _on_connect(self, client: mqtt.Client, _ud: Any, flags: Any, reason: Any,
                    _props: Any) -> None:
        if reason.is_failure:
            self.last_error = f"broker refused the connection: {reason}"
            log.error("broker %s:%d refused the connection: %s%s", self.cfg.host,
                      self.cfg.port, reason,
                      " — check [mqtt] username / password_file" if "user" in str(reason).lower()
                      or "authori" in str(reason).lower() else "")
            return
        self.last_error = None
        self.connected = True
        client.subscribe([(self.topics["receipt"], 1), (self.topics["config"], 1)])
        client.publish(self.topics["status"], json.dumps(
            {"online": True, "version": self.version, "since": now_iso()}), qos=1, retain=True)
        log.info("connected to broker %s:%d (session present: %s)", self.cfg.host,
                 self.cfg.port, flags.session_present)
        self.emit(MqttUp(bool(flags.session_present), self.monotonic()))

    def _on_disconnect(self, _c: mqtt.Client, _ud: Any, _flags: Any, reason: Any,
                       _props: Any) -> None:
        if self.connected:
            self.connected = False
            self.emit(MqttDown(str(reason), self.monotonic()))

    def _on_publish(self, _c: mqtt.Client, _ud: Any, mid: int, reason: Any,
                    _props: Any) -> None:
        failed = bool(getattr(reason, "is_failure", False))
        self.emit(MqttPubAck(mid, not failed, str(reason), self.monotonic()))

    def _on_message(self, _c: mqtt.Client, _ud: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == self.topics["receipt"]:
            kind = "receipt"
        elif msg.topic == self.topics["config"]:
            kind = "config"
        else:
            return
        if len(msg.payload) > MAX_INCOMING:
            log.warning("ignoring %d-byte message on %s (limit %d)", len(msg.payload),
                        msg.topic, MAX_INCOMING)
            return
        self.emit(MqttMessage(kind, bytes(msg.payload), bool(msg.retain), self.monotonic()))

    # --- called from the daemon's loop ---------------------------------------------

    def publish(self, kind: str, payload: dict[str, Any], qos: int = 1,
                retain: bool = False) -> int | None:
        """Queue a publish; the mid to wait for, or None when paho refused it now."""
        data = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        try:
            info = self.client.publish(self.topics[kind], data, qos=qos, retain=retain)
        except (ValueError, RuntimeError) as e:
            log.error("publish to %s failed: %s", self.topics[kind], e)
            return None
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return None  # NO_CONN: paho may still send it later; we resend anyway
        return int(info.mid)

    def stop(self, timeout: float = 2.0) -> None:
        """Publish the retained offline status, disconnect, stop the thread."""
        if self.connected:
            try:
                info = self.client.publish(self.topics["status"], json.dumps(
                    {"online": False, "version": self.version, "since": now_iso()}),
                    qos=1, retain=True)
                info.wait_for_publish(timeout=min(timeout, 1.0))
            except (ValueError, RuntimeError):
                pass
        self._stop.set()
        try:
            self.client.disconnect()
        except (ValueError, RuntimeError, OSError):
            pass
        if self._thread is not None:
            self._thread.join(timeout)
