"""paho's MQTT client with a fast path for the packet the bridge receives by the
thousand: a PUBLISH at QoS 0 or 1 (manual acknowledgement) without MQTT v5 properties, or
any such PUBLISH of MQTT 3.1.1 (which has no properties).

paho decodes every v5 PUBLISH with its general decoder, which builds a `Properties`
object (two dicts of every property name, then a pass deleting attributes) even when the
packet has none, and formats a debug line nobody reads. Measured on the bridge: about a
third of its CPU per rating. This subclass decodes that one shape itself, builds the same
`MQTTMessage` (with `properties` None: there are none) and hands it to paho's own
dispatch; every other packet — with properties, QoS 2, anything odd or malformed — goes to
paho's decoder unchanged. For 3.1.1 paho's decoder is cheaper, but still formats a debug
line and unpacks with struct twice per message.

It overrides `_handle_publish`, a private method. So it is used only with the paho
versions it was checked against (`CHECKED_VERSIONS`); with any other, `make_client`
returns paho's plain client (slower, same behaviour) and tests/test_bridge_paho_fast.py
fails until someone checks the new version's `_handle_publish` and adds it.
"""

from __future__ import annotations

import time
from typing import Any

import paho.mqtt
import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion

CHECKED_VERSIONS = ("2.1.0", "2.2.0")


def fast_path_available() -> bool:
    """True with a paho version whose `_handle_publish` this module was checked against."""
    return paho.mqtt.__version__ in CHECKED_VERSIONS


def make_client(**kwargs: Any) -> mqtt.Client:
    """`mqtt.Client(**kwargs)`, with the fast PUBLISH path when the paho version allows."""
    if fast_path_available():
        return FastPublishClient(**kwargs)
    return mqtt.Client(**kwargs)


class FastPublishClient(mqtt.Client):
    """`mqtt.Client` that decodes property-less QoS 0/1 PUBLISH packets without paho's
    general decoder. Behaviour is paho's: same message, same dispatch, same (absent)
    PUBACK with manual acknowledgement."""

    def _handle_publish(self) -> MQTTErrorCode:
        header = self._in_packet["command"]
        packet = self._in_packet["packet"]
        qos = (header >> 1) & 0x03
        size = len(packet)
        if size >= 2 and (qos == 0 or (qos == 1 and self._manual_ack)):
            topic_end = 2 + ((packet[0] << 8) | packet[1])
            after_id = topic_end + 2 if qos else topic_end
            if self._protocol == MQTTProtocolVersion.MQTTv5:
                # A property length of 0, then the payload. An empty topic would need a
                # Topic Alias property: paho's decoder decides.
                fits = topic_end > 2 and after_id < size and packet[after_id] == 0
                payload_at = after_id + 1
            else:
                # MQTT 3.1.1 (and 3.1): no properties; the payload follows the packet id.
                # An empty topic is malformed there: paho's decoder refuses it.
                fits = topic_end > 2 and after_id <= size
                payload_at = after_id
            if fits:
                mid = (packet[topic_end] << 8) | packet[topic_end + 1] if qos else 0
                message = mqtt.MQTTMessage(mid, bytes(packet[2:topic_end]))
                message.dup = bool(header & 0x08)
                message.qos = qos
                message.retain = bool(header & 0x01)
                message.payload = bytes(packet[payload_at:])
                message.timestamp = time.monotonic()
                # With manual acknowledgement paho sends no PUBACK here either: ack() does.
                self._handle_on_message(message)
                return MQTTErrorCode.MQTT_ERR_SUCCESS
        return super()._handle_publish()
