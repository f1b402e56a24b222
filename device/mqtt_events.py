"""What the MQTT link's thread puts on the daemon's queue (device/mqtt_link.py)."""

from __future__ import annotations

from dataclasses import dataclass


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
    """The broker answered the publish the daemon tagged with `ticket`."""

    ticket: int
    ok: bool
    reason: str
    t: float


@dataclass(frozen=True)
class MqttMessage:
    kind: str        # "receipt" | "config"
    payload: bytes
    retain: bool
    t: float
    # A message too large to take in: its size, and an empty payload (a config this
    # large is refused with config_rejected naming the size, never applied or cleared).
    oversize: int = 0


