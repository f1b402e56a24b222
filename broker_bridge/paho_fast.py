"""paho's MQTT client with fast paths for what the bridge does by the thousand: receive
a PUBLISH at QoS 0 or 1 (manual acknowledgement) without MQTT v5 properties, acknowledge
it, publish a receipt and take that receipt's PUBACK.

paho (2.1, 2.2) spends most of the bridge's MQTT time on overheads, not on MQTT:

- *Decoding.* paho decodes every v5 PUBLISH with its general decoder, which builds a
  `Properties` object (two dicts of every property name, then a pass deleting
  attributes) even when the packet has none, and formats a debug line nobody reads.
  `_handle_publish` here decodes that one shape itself; every other packet — with
  properties, QoS 2, anything odd or malformed — goes to paho's decoder unchanged. For
  3.1.1 paho's decoder is cheaper, but still formats a debug line and unpacks with
  struct twice per message.
- *Dispatch.* paho then wraps each message in an `MQTTMessage` (with an
  `MQTTMessageInfo` holding a `threading.Condition`) and looks its topic up in the
  per-topic callback tree, empty or not. With `on_fast_message` set, a fast-path message
  goes straight to it as plain values.
- *Reading.* paho reads each packet with at least three `recv()` calls (the command
  byte, each byte of the length, the rest), and a byte at a time through a dict.
  `_sock_recv` here reads up to 64 KiB at a time; `_packet_read` takes each packet that
  lies whole in that buffer in one go, and hands paho's own reader the rest (a packet cut
  by the buffer's end) as slices of it; `loop_read` keeps reading until every complete
  packet it holds is handled, so nothing waits in the buffer for a `select()` that would
  not fire. `on_read_done` is called after each `loop_read`, so an application can hand
  a whole burst of messages to another thread at once.
- *Completing.* For every PUBACK paho builds a `ReasonCode` and a `Properties` object
  for an `on_publish` callback; `_handle_pubackcomp` here completes a plain PUBACK
  without them when no such callback is set.
- *Publishing.* paho gives every QoS 1 message an `MQTTMessageInfo` with a
  `threading.Condition` of its own, for a `wait_for_publish` the bridge never calls on a
  receipt; `publish` here gives such a message one that shares the client's Condition.
  paho builds each PUBLISH in a bytearray, piece by piece, and formats a debug line for
  it; `_send_publish` here joins a QoS 1 PUBLISH without properties (a receipt) in one
  go, the same bytes. For every PUBACK paho scans its messages for one queued beyond the
  in-flight window, in Python, past every message in flight (the broker's Receive
  Maximum of them: mosquitto's is 20); here the scan runs only when one can be there,
  and at C speed.
- *Acknowledging.* paho sends a PUBACK at once, ahead of a message published before it
  that waits for a slot in the broker's in-flight window; `ack` here holds it until
  every such message has gone out (the bridge's receipts go before its
  acknowledgements). This one changes paho's order on the wire, on purpose.
- *Writing.* paho sends each queued packet with its own `send()`, and wakes its network
  thread with a byte on a socket pair for every packet queued from another thread.
  `_packet_write` here joins the packets waiting in the queue into one `send()` (never a
  QoS 0 PUBLISH, whose completion paho reports per packet, nor a DISCONNECT), and
  `_packet_queue` wakes the network thread only when the queue was empty: a queue that
  was not empty already has a wake-up or a pending write.

These override private paho methods, so the class is used only with the paho versions it
was checked against (`CHECKED_VERSIONS`); with any other, `make_client` returns paho's
plain client (slower, same behaviour) and tests/test_bridge_paho_fast.py fails until
someone checks the new version's `_handle_publish`, `_handle_pubackcomp`,
`_do_on_publish`, `_update_inflight`, `_send_publish`, `_packet_read`, `_sock_recv`,
`loop_read`, `_packet_queue`, `_packet_write`, `reconnect` and `_sock_close`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from itertools import compress, repeat
from operator import attrgetter, eq
from typing import Any

import paho.mqtt
import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.exception import MalformedPacket

CHECKED_VERSIONS = ("2.1.0", "2.2.0")

READ_CHUNK = 64 * 1024
# recv() calls one loop_read may make: a bound on how long reading keeps the network
# thread from writing (4 × 64 KiB, about 400 ratings); what is buffered is always handled.
RECVS_PER_READ = 4
# Packets joined into one send(): the PUBACKs and receipts of a few batches.
JOIN_AT_MOST = 512

_PUBLISH = 0x30
_PUBACK = 0x40
_DISCONNECT = 0xE0
_WAKE = b"0"   # what paho writes to its socket pair (paho.mqtt.client.sockpair_data)

# topic (raw bytes), payload, message id, QoS, retain, dup
FastMessageHandler = Callable[[bytes, bytes, int, int, bool, bool], None]


def fast_path_available() -> bool:
    """True with a paho version whose internals this module was checked against."""
    return paho.mqtt.__version__ in CHECKED_VERSIONS


def make_client(**kwargs: Any) -> mqtt.Client:
    """`mqtt.Client(**kwargs)`, with the fast paths when the paho version allows."""
    if fast_path_available():
        return FastPublishClient(**kwargs)
    return mqtt.Client(**kwargs)


_STATE = attrgetter("state")
_PUBACK_SUCCESS = (0x00, 0x10)   # v5 PUBACK reason codes that are not failures


def _plain_v5_puback(packet: bytes | bytearray) -> bool:
    """The id, a success reason code, and no properties (none or a length of 0)."""
    return ((len(packet) == 3 or (len(packet) == 4 and packet[3] == 0))
            and packet[2] in _PUBACK_SUCCESS)


_MAX_REMAINING = 268_435_455   # MQTT's largest remaining length (four bytes of seven bits)


def _remaining_length(n: int) -> bytes:
    """MQTT's variable-length encoding of a packet's remaining length."""
    if n < 128:
        return bytes((n,))
    out = bytearray()
    while True:
        n, byte = divmod(n, 128)
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _joinable(packet: Mapping[str, Any]) -> bool:
    command = packet["command"] & 0xF0
    return (packet["pos"] == 0 and command != _DISCONNECT
            and not (command == _PUBLISH and packet["qos"] == 0))


class _SharedConditionInfo(mqtt.MQTTMessageInfo):
    """paho's MQTTMessageInfo, with its client's Condition rather than one of its own: a
    Condition (and its RLock) cost about a quarter of publishing a receipt, and nobody
    waits on a receipt. Whoever does wait re-checks its own message, so completing one
    wakes every waiter (notify_all), not one that may be waiting for another."""

    __slots__ = ()

    def __init__(self, mid: int, condition: threading.Condition) -> None:
        self.mid = mid
        self._published = False
        self._condition = condition
        self.rc = MQTTErrorCode.MQTT_ERR_SUCCESS
        self._iterpos = 0

    def _set_as_published(self) -> None:
        with self._condition:
            self._published = True
            self._condition.notify_all()


class _Message(mqtt.MQTTMessage):
    """paho's MQTTMessage as its publish makes one for a QoS 1 message without
    properties, with a _SharedConditionInfo."""

    __slots__ = ()

    def __init__(self, mid: int, topic: bytes, payload: bytes, retain: bool,
                 condition: threading.Condition) -> None:
        self.timestamp = mqtt.time_func()
        self.state = mqtt.mqtt_ms_invalid
        self.dup = False
        self.mid = mid
        self._topic = topic
        self.payload = payload
        self.qos = 1
        self.retain = retain
        self.info = _SharedConditionInfo(mid, condition)
        self.properties = None


class FastPublishClient(mqtt.Client):
    """`mqtt.Client` with the fast paths above. Behaviour is paho's: the same messages
    in the same order, the same acknowledgements, the same bytes on the wire — but for an
    acknowledgement, which never overtakes a message published before it.

    `on_fast_message(topic, payload, mid, qos, retain, dup)`, when set, receives the
    fast-path messages instead of `on_message` (which still receives the rest);
    per-topic callbacks (`message_callback_add`) are then not consulted for them.
    `on_read_done()`, when set, is called in the network thread after every read.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_fast_message: FastMessageHandler | None = None
        self.on_read_done: Callable[[], None] | None = None
        self._rbuf = b""
        self._rpos = 0
        self._recv_budget = 0
        self._info_condition = threading.Condition()
        # (the queued message it waits for, mid, qos): acknowledgements held back
        self._held_acks: deque[tuple[int, int, int]] = deque()

    def limit_in_flight(self, figure: int) -> None:
        """Send at most `figure` QoS 1/2 messages un-acknowledged, from now on (paho's
        `max_inflight_messages_set` refuses while connected: the figure comes in the
        CONNACK). Messages beyond it wait in paho's queue, as they do over paho's limit."""
        self._max_inflight_messages = max(1, figure)

    # Reading ----------------------------------------------------------------------

    def _sock_recv(self, bufsize: int) -> bytes:
        buf, pos = self._rbuf, self._rpos
        if pos >= len(buf):
            if self._recv_budget <= 0:
                raise BlockingIOError
            self._recv_budget -= 1
            buf = super()._sock_recv(READ_CHUNK)
            if not buf:
                return buf   # the broker closed the connection: paho handles it
            self._rbuf, pos = buf, 0
        end = pos + bufsize
        self._rpos = end
        return buf[pos:end]

    def _packet_read(self) -> MQTTErrorCode:
        # A whole packet waiting in the buffer, none begun: taken in one go. paho's reader
        # takes it a byte at a time through `_sock_recv` and fills `_in_packet` as it goes;
        # the handlers get the same `_in_packet` here. Anything else — a packet begun or
        # cut by the buffer's end, an empty buffer, a length longer than MQTT allows —
        # goes to paho's reader, which takes it from where the buffer stands.
        buf, pos = self._rbuf, self._rpos
        size = len(buf)
        if self._in_packet["command"] == 0 and pos + 1 < size:
            at, length, mult = pos + 1, 0, 1
            counts: list[int] = []
            while at < size and len(counts) < 4:
                byte = buf[at]
                counts.append(byte)
                length += (byte & 127) * mult
                mult *= 128
                at += 1
                if byte < 128:
                    end = at + length
                    if end > size:
                        break
                    self._rpos = end
                    return self._handle_read(buf[pos], counts, mult, length,
                                             bytearray(buf[at:end]))
        return super()._packet_read()

    def _handle_read(self, command: int, counts: list[int], mult: int, length: int,
                     packet: bytearray) -> MQTTErrorCode:
        # The end of paho's `_packet_read`, for a packet read whole.
        self._in_packet = {"command": command, "have_remaining": 1, "remaining_count": counts,
                           "remaining_mult": mult, "remaining_length": length,
                           "packet": packet, "to_process": 0, "pos": 0}
        try:
            rc = self._packet_handle()
        except MalformedPacket as exc:
            self._easy_log(mqtt.MQTT_LOG_DEBUG, "Received malformed packet: %s", exc)
            rc = MQTTErrorCode.MQTT_ERR_PROTOCOL
        self._in_packet = {"command": 0, "have_remaining": 0, "remaining_count": [],
                           "remaining_mult": 1, "remaining_length": 0,
                           "packet": bytearray(b""), "to_process": 0, "pos": 0}
        with self._msgtime_mutex:
            self._last_bytes_received = mqtt.time_func()
        return rc

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        if self._sock is None:
            return MQTTErrorCode.MQTT_ERR_NO_CONN
        self._recv_budget = RECVS_PER_READ
        try:
            while True:
                if self._sock is None:
                    return MQTTErrorCode.MQTT_ERR_NO_CONN
                rc = self._packet_read()
                if rc > 0:
                    return self._loop_rc_handle(rc)
                if rc == MQTTErrorCode.MQTT_ERR_AGAIN:
                    return MQTTErrorCode.MQTT_ERR_SUCCESS
        finally:
            self._recv_budget = 0
            done = self.on_read_done
            if done is not None:
                self._call_back(done, "on_read_done")

    def _call_back(self, callback: Callable[..., None], name: str, *args: Any) -> None:
        # As paho calls its own callbacks: an exception is logged, and raised (ending
        # the network thread) only without suppress_exceptions.
        try:
            callback(*args)
        except Exception as err:
            self._easy_log(mqtt.MQTT_LOG_ERR, "Caught exception in %s: %s", name, err)
            if not self.suppress_exceptions:
                raise

    def _forget_buffer(self) -> None:
        self._rbuf, self._rpos = b"", 0

    def _sock_close(self) -> None:
        self._forget_buffer()   # bytes of a closed connection mean nothing on the next
        self._held_acks.clear()   # the broker sends those messages again
        super()._sock_close()

    def reconnect(self) -> MQTTErrorCode:
        self._forget_buffer()
        self._held_acks.clear()
        return super().reconnect()

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
                topic = bytes(packet[2:topic_end])
                payload = bytes(packet[payload_at:])
                retain, dup = bool(header & 0x01), bool(header & 0x08)
                # With manual acknowledgement paho sends no PUBACK here either: ack() does.
                fast = self.on_fast_message
                if fast is not None:
                    self._call_back(fast, "on_fast_message", topic, payload, mid, qos,
                                    retain, dup)
                    return MQTTErrorCode.MQTT_ERR_SUCCESS
                message = mqtt.MQTTMessage(mid, topic)
                message.dup, message.qos, message.retain = dup, qos, retain
                message.payload = payload
                message.timestamp = time.monotonic()
                self._handle_on_message(message)
                return MQTTErrorCode.MQTT_ERR_SUCCESS
        return super()._handle_publish()

    def _handle_pubackcomp(self, cmd: Any) -> MQTTErrorCode:
        # A plain PUBACK completes the message as paho's own path does, without building
        # a ReasonCode and a Properties object for an on_publish nobody set: 2 bytes (the
        # message id: MQTT 3.1.1, or v5 success), or in v5 the id, a success code and at
        # most an empty property length — mosquitto answers a receipt for a device with
        # no session (none subscribed) with 0x10, "no matching subscribers".
        packet = self._in_packet["packet"]
        if cmd == "PUBACK" and self.on_publish is None and (
                len(packet) == 2 or (self._protocol == MQTTProtocolVersion.MQTTv5
                                     and _plain_v5_puback(packet))):
            mid = (packet[0] << 8) | packet[1]
            with self._out_message_mutex:
                message = self._out_messages.pop(mid, None)
                if message is not None:
                    message.info._set_as_published()
                    if message.qos > 0:
                        self._inflight_messages -= 1
                        # paho scans every message for one queued beyond the window;
                        # when each is in flight there is none to find.
                        if (self._max_inflight_messages > 0
                                and len(self._out_messages) > self._inflight_messages):
                            return self._update_inflight()
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        return super()._handle_pubackcomp(cmd)

    def _update_inflight(self) -> MQTTErrorCode:
        # paho's scan, message for message, in the same order with the same outcome; the
        # search for the next queued message runs in C (compress over the messages, fed
        # by whether each one's state is queued).
        values = self._out_messages.values()
        queued = compress(values, map(eq, map(_STATE, values), repeat(mqtt.mqtt_ms_queued)))
        for m in queued:
            if self._inflight_messages >= self._max_inflight_messages:
                break
            if m.qos == 0:
                continue
            self._inflight_messages += 1
            m.state = (mqtt.mqtt_ms_wait_for_puback if m.qos == 1
                       else mqtt.mqtt_ms_wait_for_pubrec)
            rc = self._send_publish(m.mid, m._topic, m.payload, m.qos, m.retain, m.dup,
                                    properties=m.properties)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return rc
        self._release_acks()
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    # Acknowledging ----------------------------------------------------------------

    def ack(self, mid: int, qos: int) -> MQTTErrorCode:
        # paho queues a PUBACK to go out at once, while a message published before it may
        # still wait for a slot in the broker's in-flight window (Receive Maximum). The
        # bridge publishes a rating's receipt, then acknowledges the rating: if the
        # process died in between, the broker had the acknowledgement and never the
        # receipt, and the device waited resend_after_s for it. An acknowledgement is
        # held here until every message published before it has gone out.
        if not self._manual_ack or qos not in (1, 2):
            return super().ack(mid, qos)
        with self._out_message_mutex:
            held = self._held_acks
            if held:
                held.append((held[-1][0], mid, qos))
                return MQTTErrorCode.MQTT_ERR_SUCCESS
            if self._out_messages:
                last = next(reversed(self._out_messages.values()))
                if last.state == mqtt.mqtt_ms_queued:
                    held.append((last.mid, mid, qos))
                    return MQTTErrorCode.MQTT_ERR_SUCCESS
        return super().ack(mid, qos)

    def _release_acks(self) -> None:
        # Queued messages go out in the order they were published: every acknowledgement
        # whose message is no longer queued follows them now, in its own order.
        held = self._held_acks
        while held:
            message = self._out_messages.get(held[0][0])
            if message is not None and message.state == mqtt.mqtt_ms_queued:
                return
            _, mid, qos = held.popleft()
            super().ack(mid, qos)

    # Publishing -------------------------------------------------------------------

    def publish(self, topic: str, payload: Any = None, qos: int = 0, retain: bool = False,
                properties: Any = None) -> mqtt.MQTTMessageInfo:
        # paho's publish for a QoS 1 message without properties, its payload bytes (every
        # receipt), step for step, but for the message's MQTTMessageInfo: it shares the
        # client's Condition (see _SharedConditionInfo) instead of making one of its own.
        if (qos != 1 or properties is not None or type(payload) is not bytes
                or type(topic) is not str or not topic):
            return super().publish(topic, payload, qos, retain, properties)
        topic_bytes = topic.encode("utf-8")
        self._raise_for_invalid_topic(topic_bytes)
        if len(payload) > _MAX_REMAINING:
            raise ValueError("Payload too large.")
        mid = self._mid_generate()
        message = _Message(mid, topic_bytes, payload, retain, self._info_condition)
        info = message.info
        with self._out_message_mutex:
            if (self._max_queued_messages > 0
                    and len(self._out_messages) >= self._max_queued_messages):
                info.rc = MQTTErrorCode.MQTT_ERR_QUEUE_SIZE
                return info
            if mid in self._out_messages:
                info.rc = MQTTErrorCode.MQTT_ERR_QUEUE_SIZE
                return info
            self._out_messages[mid] = message
            if (self._max_inflight_messages == 0
                    or self._inflight_messages < self._max_inflight_messages):
                self._inflight_messages += 1
                message.state = mqtt.mqtt_ms_wait_for_puback
                rc = self._send_publish(mid, topic_bytes, payload, 1, retain, False, info,
                                        None)
                if rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
                    # sent after the next connection, as paho does
                    self._inflight_messages -= 1
                    message.state = mqtt.mqtt_ms_publish
                info.rc = rc
                return info
            message.state = mqtt.mqtt_ms_queued
            info.rc = MQTTErrorCode.MQTT_ERR_SUCCESS
            return info

    # Writing ----------------------------------------------------------------------

    def _send_publish(self, mid: int, topic: bytes, payload: bytes | bytearray = b"",
                      qos: int = 0, retain: bool = False, dup: bool = False,
                      info: mqtt.MQTTMessageInfo | None = None,
                      properties: Any = None) -> MQTTErrorCode:
        # A QoS 1 PUBLISH without properties (every receipt): the same bytes as paho's,
        # put together in one join, without the debug line nobody reads.
        if (qos != 1 or properties is not None or self._sock is None or not payload
                or type(topic) is not bytes or type(payload) is not bytes
                or self.on_log is not None
                or (self._logger is not None and self._logger.isEnabledFor(10))):
            return super()._send_publish(mid, topic, payload, qos, retain, dup, info,
                                         properties)
        v5 = self._protocol == MQTTProtocolVersion.MQTTv5
        remaining = 4 + len(topic) + len(payload) + v5
        if remaining > _MAX_REMAINING:
            return super()._send_publish(mid, topic, payload, qos, retain, dup, info,
                                         properties)
        packet = b"".join((
            bytes((_PUBLISH | (dup & 1) << 3 | 2 | retain,)), _remaining_length(remaining),
            len(topic).to_bytes(2, "big"), topic, mid.to_bytes(2, "big"),
            b"\x00" if v5 else b"", payload))
        return self._packet_queue(_PUBLISH, packet, mid, qos, info)

    def _packet_queue(self, command: int, packet: bytes | bytearray, mid: int, qos: int,
                      info: mqtt.MQTTMessageInfo | None = None) -> MQTTErrorCode:
        out = self._out_packet
        out.append({"command": command, "mid": mid, "qos": qos, "pos": 0,
                    "to_process": len(packet), "packet": packet, "info": info})
        # Only the packet that made the queue non-empty wakes the network thread: for any
        # later one a wake-up is on its way, or the thread is writing (and writes until
        # the queue is empty), or it waits for the socket to take more.
        if self._sockpairW is not None and len(out) == 1:
            try:
                self._sockpairW.send(_WAKE)
            except BlockingIOError:
                pass
        if (self._thread is None and self._on_socket_register_write is None
                and self._in_callback_mutex.acquire(False)):
            self._in_callback_mutex.release()
            return self.loop_write()
        self._call_socket_register_write()
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _packet_write(self) -> MQTTErrorCode:
        out = self._out_packet
        if len(out) > 1 and _joinable(out[0]):
            parts: list[bytes | bytearray] = []
            while out and len(parts) < JOIN_AT_MOST and _joinable(out[0]):
                parts.append(out.popleft()["packet"])
            data = b"".join(parts)
            # One packet to paho: nothing in it needs a completion of its own (QoS 1
            # publishes complete on their PUBACK), so any command but PUBLISH and
            # DISCONNECT describes it.
            out.appendleft({"command": _PUBACK, "mid": 0, "qos": 0, "pos": 0,
                            "to_process": len(data), "packet": data, "info": None})
        return super()._packet_write()
