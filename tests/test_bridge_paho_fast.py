"""The bridge's fast PUBLISH path (broker_bridge/paho_fast.py) against paho's own decoder:
a scripted broker on a real socket sends the same packets to paho's plain client and to
the fast one; both must hand the application the same messages and send the same
acknowledgements, and anything the fast path does not take must still reach paho."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt
import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion

from broker_bridge.paho_fast import CHECKED_VERSIONS, FastPublishClient, fast_path_available

RATING_TOPIC = b"hcp/v1/421100-HG01-W03/rating"
RATING = ('{"schema":"hcp.rating/1","staff":{"staff_name":"王晓红"},"level":5}').encode()
CONNACK = b"\x20\x03\x00\x00\x00"  # v5: no session, success, no properties
CONNACK_311 = b"\x20\x02\x00\x00"  # 3.1.1: no session, accepted
PUBACK = 0x40


def vbi(n: int) -> bytes:
    """MQTT variable byte integer."""
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def publish(topic: bytes, payload: bytes, *, qos: int = 1, mid: int = 1, retain: bool = False,
            dup: bool = False, properties: bytes | None = b"") -> bytes:
    """A PUBLISH packet; `properties` None for MQTT 3.1.1 (no property length at all)."""
    props = b"" if properties is None else vbi(len(properties)) + properties
    body = (len(topic).to_bytes(2, "big") + topic + (mid.to_bytes(2, "big") if qos else b"")
            + props + payload)
    return bytes([0x30 | dup << 3 | qos << 1 | retain]) + vbi(len(body)) + body


# Payload Format Indicator = 1 and a user property ("k", "值").
PROPERTIES = b"\x01\x01" + b"\x26" + b"\x00\x01k" + b"\x00\x03" + "值".encode()

PACKETS = [
    publish(RATING_TOPIC, RATING, mid=1),
    publish(b"hcp/v1/421100-HG01-W03/telemetry", b'{"backlog":0}', qos=0),
    publish(b"hcp/v1/421100-HG01-W03/status", b'{"online":true}', mid=65535, retain=True,
            dup=True),
    publish(RATING_TOPIC, RATING, mid=7, properties=PROPERTIES),  # paho's decoder
    publish(RATING_TOPIC, b"", mid=8),
    publish("hcp/v1/窗口-3/rating".encode(), RATING, mid=9),
    publish(b"hcp/v1/\xff\xfe/rating", RATING, mid=10),            # topic not UTF-8
    publish(RATING_TOPIC, RATING * 200, mid=11),                   # 3-byte remaining length
]


@dataclass
class Seen:
    """What on_message got, in a form both clients can be compared on."""

    topic: str | None
    raw_topic: bytes
    payload: bytes
    mid: int
    qos: int
    retain: bool
    dup: bool
    properties: dict[str, Any]


def seen(message: mqtt.MQTTMessage) -> Seen:
    try:
        topic: str | None = message.topic
    except UnicodeDecodeError:
        topic = None
    props = message.properties.json() if message.properties is not None else {}  # type: ignore[no-untyped-call]
    return Seen(topic, bytes(message._topic), bytes(message.payload), message.mid,
                message.qos, bool(message.retain), bool(message.dup), props)


@dataclass
class ScriptedBroker:
    """Accepts one client, answers its CONNECT, sends `packets`, records what comes back."""

    packets: list[bytes]
    connack: bytes = CONNACK
    # Send the packets in pieces cut at these offsets, a pause between pieces (so that the
    # client reads them with separate recv() calls); None: all at once.
    cuts: list[int] | None = None
    server: socket.socket = field(default_factory=socket.socket)
    conn: socket.socket | None = None
    closed: bool = False
    ready: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(1)
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def port(self) -> int:
        port: int = self.server.getsockname()[1]
        return port

    def _serve(self) -> None:
        self.conn, _ = self.server.accept()
        self.conn.settimeout(5)
        command, _ = self.read_packet()
        assert command >> 4 == 1, "expected CONNECT"
        stream = b"".join(self.packets)
        if self.cuts is None:
            self.conn.sendall(self.connack + stream)
        else:
            self.conn.sendall(self.connack)
            edges = [0, *sorted(set(self.cuts)), len(stream)]
            for start, end in zip(edges, edges[1:], strict=False):
                self.conn.sendall(stream[start:end])
                time.sleep(0.002)
        self.ready.set()

    def _read(self, n: int) -> bytes:
        assert self.conn is not None
        data = b""
        while len(data) < n:
            chunk = self.conn.recv(n - len(data))
            if not chunk:
                self.closed = True
                raise ConnectionError("client closed")
            data += chunk
        return data

    def read_packet(self) -> tuple[int, bytes]:
        command = self._read(1)[0]
        length, shift = 0, 0
        while True:
            byte = self._read(1)[0]
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        return command, self._read(length)

    def packets_within(self, seconds: float) -> list[tuple[int, bytes]]:
        assert self.conn is not None
        self.conn.settimeout(seconds)
        out = []
        try:
            while True:
                out.append(self.read_packet())
        except (TimeoutError, ConnectionError):
            return out

    def close(self) -> None:
        for s in (self.conn, self.server):
            if s is not None:
                s.close()


@contextmanager
def run_client(cls: type[mqtt.Client], packets: list[bytes], expect: int,
               protocol: MQTTProtocolVersion = mqtt.MQTTv5, cuts: list[int] | None = None,
               ) -> Iterator[tuple[mqtt.Client, ScriptedBroker, list[mqtt.MQTTMessage]]]:
    v5 = protocol == mqtt.MQTTv5
    broker = ScriptedBroker(packets, CONNACK if v5 else CONNACK_311, cuts=cuts)
    messages: list[mqtt.MQTTMessage] = []
    got_all = threading.Event()

    def on_message(_c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        messages.append(message)
        if len(messages) >= expect:
            got_all.set()

    client = cls(CallbackAPIVersion.VERSION2, client_id="fast-path-test",
                 protocol=protocol, clean_session=None if v5 else False, manual_ack=True)
    client.on_message = on_message
    client.connect("127.0.0.1", broker.port, keepalive=60)
    client.loop_start()
    try:
        assert broker.ready.wait(5), "the client did not connect"
        if expect:
            assert got_all.wait(5), f"{len(messages)} of {expect} messages"
        yield client, broker, messages
    finally:
        client.disconnect()  # before loop_stop(): wakes the network thread at once
        client.loop_stop()
        broker.close()


def messages_of(cls: type[mqtt.Client], packets: list[bytes] = PACKETS,
                protocol: MQTTProtocolVersion = mqtt.MQTTv5,
                cuts: list[int] | None = None) -> list[Seen]:
    with run_client(cls, packets, len(packets), protocol, cuts) as (_c, _broker, messages):
        return [seen(m) for m in messages]


# The same shapes in MQTT 3.1.1, which has no properties at all.
PACKETS_311 = [
    publish(RATING_TOPIC, RATING, mid=1, properties=None),
    publish(b"hcp/v1/421100-HG01-W03/telemetry", b'{"backlog":0}', qos=0, properties=None),
    publish(b"hcp/v1/421100-HG01-W03/status", b'{"online":true}', mid=65535, retain=True,
            dup=True, properties=None),
    publish(RATING_TOPIC, b"", mid=8, properties=None),
    publish(b"hcp/v1/421100-HG01-W03/event", b"", qos=0, properties=None),
    publish("hcp/v1/窗口-3/rating".encode(), RATING, mid=9, properties=None),
    publish(b"hcp/v1/\xff\xfe/rating", RATING, mid=10, properties=None),
    publish(RATING_TOPIC, RATING * 200, mid=11, properties=None),
    # A v5-shaped packet on a 3.1.1 connection: the 0 byte is simply the payload's first.
    publish(RATING_TOPIC, RATING, mid=12),
]


def test_the_application_gets_the_same_messages_as_from_paho() -> None:
    plain, fast = messages_of(mqtt.Client), messages_of(FastPublishClient)
    assert len(fast) == len(PACKETS)
    for i, (p, f) in enumerate(zip(plain, fast, strict=True)):
        assert f == p, f"packet {i}"
    assert fast[0].topic == RATING_TOPIC.decode() and fast[0].payload == RATING
    assert (fast[2].mid, fast[2].retain, fast[2].dup) == (65535, True, True)
    assert fast[3].properties == {"PayloadFormatIndicator": 1, "UserProperty": [("k", "值")]}
    assert fast[6].topic is None and fast[6].raw_topic == b"hcp/v1/\xff\xfe/rating"
    assert len(fast[7].payload) == len(RATING) * 200


def test_property_less_packets_skip_pahos_decoder_and_the_rest_do_not() -> None:
    """The fast path leaves `properties` None where paho puts an empty Properties object:
    proof that it, not paho's decoder, handled the packet."""
    with run_client(FastPublishClient, PACKETS, len(PACKETS)) as (_client, _broker, messages):
        assert [m.properties is None for m in messages] == [
            True, True, True, False, True, True, True, True]


def test_mqtt_311_gives_the_same_messages_as_paho_without_pahos_decoder(
        monkeypatch: pytest.MonkeyPatch) -> None:
    plain = messages_of(mqtt.Client, PACKETS_311, mqtt.MQTTv311)
    decoded: list[int] = []
    original = mqtt._packet.decode_publish  # type: ignore[attr-defined]

    def counting(*args: Any) -> Any:
        decoded.append(1)
        return original(*args)

    monkeypatch.setattr(mqtt._packet, "decode_publish", counting)  # type: ignore[attr-defined]
    fast = messages_of(FastPublishClient, PACKETS_311, mqtt.MQTTv311)
    assert decoded == [], "a 3.1.1 QoS 0/1 PUBLISH went through paho's decoder"
    assert len(fast) == len(PACKETS_311)
    for i, (p, f) in enumerate(zip(plain, fast, strict=True)):
        assert f == p, f"packet {i}"
    assert fast[0].payload == RATING and fast[0].properties == {}
    assert (fast[2].mid, fast[2].retain, fast[2].dup) == (65535, True, True)
    assert fast[3].payload == b"" and fast[4].payload == b""
    assert fast[8].payload == b"\x00" + RATING


@pytest.mark.parametrize("protocol", [mqtt.MQTTv5, mqtt.MQTTv311])
@pytest.mark.parametrize("cls", [mqtt.Client, FastPublishClient])
def test_qos1_is_acknowledged_only_by_ack(cls: type[mqtt.Client],
                                          protocol: MQTTProtocolVersion) -> None:
    properties = b"" if protocol == mqtt.MQTTv5 else None
    packets = [publish(RATING_TOPIC, RATING, mid=mid, properties=properties)
               for mid in (21, 22, 23)]
    with run_client(cls, packets, 3, protocol) as (client, broker, messages):
        assert broker.packets_within(0.3) == [], "a PUBACK before ack()"
        client.ack(messages[1].mid, messages[1].qos)
        assert broker.packets_within(0.5) == [(PUBACK, (22).to_bytes(2, "big"))]


@pytest.mark.parametrize("malformed, protocol", [
    # The topic length says 200 bytes; the packet ends long before.
    (b"\x32\x08\x00\xc8hcp/\x00\x01", mqtt.MQTTv5),
    (b"\x32\x08\x00\xc8hcp/\x00\x01", mqtt.MQTTv311),
    # 3.1.1: the packet ends inside the packet id.
    (b"\x32\x07\x00\x04hcp/\x00", mqtt.MQTTv311),
    # 3.1.1: an empty topic is malformed (v5 would need a Topic Alias).
    (b"\x32\x06\x00\x00\x00\x01ab", mqtt.MQTTv311),
])
@pytest.mark.parametrize("cls", [mqtt.Client, FastPublishClient])
def test_a_malformed_publish_is_refused_like_paho_does(
        cls: type[mqtt.Client], malformed: bytes, protocol: MQTTProtocolVersion) -> None:
    with run_client(cls, [malformed], 0, protocol) as (_client, broker, messages):
        assert broker.packets_within(2.0) == []
        assert broker.closed, "the client kept the connection"
        assert messages == []


def test_the_installed_paho_is_one_the_fast_path_was_checked_against() -> None:
    """Fails after a paho upgrade, on purpose: FastPublishClient overrides a private
    method; check it against the new version's `_handle_publish`, then add the version
    to CHECKED_VERSIONS (until then the bridge runs on paho's plain, slower client)."""
    assert fast_path_available(), (
        f"paho-mqtt {paho.mqtt.__version__} is not in {CHECKED_VERSIONS}")


# Reading in chunks, writing in one go, completing PUBACKs --------------------------------

STREAM = b"".join(PACKETS)
PLAIN_MESSAGES: list[Seen] = []


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(1, len(STREAM) - 1), max_size=12))
def test_packets_cut_anywhere_give_the_same_messages(cuts: list[int]) -> None:
    """The fast client reads up to 64 KiB at a time and hands paho slices: a packet cut
    at any byte (inside the length, the topic, the payload) must come out whole, and
    nothing may wait in the buffer."""
    if not PLAIN_MESSAGES:
        PLAIN_MESSAGES.extend(messages_of(mqtt.Client))
    assert messages_of(FastPublishClient, cuts=cuts) == PLAIN_MESSAGES


def test_a_burst_goes_to_on_fast_message_and_ends_with_on_read_done() -> None:
    packets = [publish(RATING_TOPIC, RATING, mid=mid) for mid in range(1, 41)]
    got: list[tuple[bytes, bytes, int, int, bool, bool]] = []
    reads: list[int] = []
    all_read = threading.Event()
    broker = ScriptedBroker(packets)
    client = FastPublishClient(CallbackAPIVersion.VERSION2, client_id="burst",
                               protocol=mqtt.MQTTv5, manual_ack=True)

    def on_fast(*message: Any) -> None:
        got.append(message)

    def on_read_done() -> None:
        reads.append(len(got))
        if len(got) == len(packets):
            all_read.set()

    client.on_fast_message, client.on_read_done = on_fast, on_read_done
    client.connect("127.0.0.1", broker.port, keepalive=60)
    client.loop_start()
    try:
        assert all_read.wait(5), f"{len(got)} of {len(packets)}"
        assert got[0] == (RATING_TOPIC, RATING, 1, 1, False, False)
        assert [m[2] for m in got] == list(range(1, 41))
        # sent at once, read at once: far fewer hand-overs than messages
        assert len([n for n in reads if n]) < 10, reads
    finally:
        client.disconnect()
        client.loop_stop()
        broker.close()


@pytest.mark.parametrize("cls", [mqtt.Client, FastPublishClient])
def test_acknowledgements_queued_together_reach_the_broker_in_order(
        cls: type[mqtt.Client]) -> None:
    packets = [publish(RATING_TOPIC, RATING, mid=mid) for mid in range(1, 101)]
    with run_client(cls, packets, len(packets)) as (client, broker, messages):
        for message in reversed(messages):   # from this thread, as the bridge loop does
            client.ack(message.mid, message.qos)
        acks = broker.packets_within(1.0)
    assert acks == [(PUBACK, mid.to_bytes(2, "big")) for mid in range(100, 0, -1)]


def _publish_and_complete(cls: type[mqtt.Client], puback_body: bytes
                          ) -> tuple[list[bool], int, list[tuple[int, bytes]]]:
    """Publish 30 QoS 1 messages (in flight at most 10), answer each PUBLISH with a
    PUBACK made of its id + `puback_body`; (published flags, paho's in-flight count,
    what the broker got)."""
    with run_client(cls, [], 0) as (client, broker, _messages):
        client._max_inflight_messages = 10   # as if the CONNACK said Receive Maximum 10
        infos = [client.publish("hcp/v1/dev/receipt", b"r%d" % i, qos=1) for i in range(30)]
        got: list[tuple[int, bytes]] = []
        while len(got) < 30:
            batch = broker.packets_within(1.0)
            assert batch, f"only {len(got)} PUBLISH packets came"
            got += batch
            assert broker.conn is not None
            body = b"".join(bytes([PUBACK, 2 + len(puback_body)]) + packet[20:22]
                            + puback_body for _, packet in batch)
            broker.conn.sendall(body)
        for info in infos:
            info.wait_for_publish(2)
        return [info.is_published() for info in infos], client._inflight_messages, got


@pytest.mark.parametrize("puback_body", [b"", b"\x10", b"\x10\x00", b"\x00\x00",
                                         b"\x10\x03\x1f\x00\x00", b"\x80", b"\x97\x00"],
                         ids=["success-2-bytes", "no-subscribers-3-bytes",
                              "no-subscribers-empty-properties", "success-empty-properties",
                              "no-subscribers-with-a-property", "unspecified-error",
                              "quota-exceeded"])
def test_pubacks_complete_messages_as_paho_does(puback_body: bytes) -> None:
    """`hcp/v1/dev/receipt` is 18 bytes: the id is at 20..22 of each PUBLISH body."""
    plain = _publish_and_complete(mqtt.Client, puback_body)
    fast = _publish_and_complete(FastPublishClient, puback_body)
    assert fast == plain
    published, inflight, got = fast
    assert all(published) and inflight == 0 and len(got) == 30


@pytest.mark.parametrize(("puback_body", "fast_path"), [
    (b"", True), (b"\x10", True), (b"\x10\x00", True), (b"\x00\x00", True),
    (b"\x10\x03\x1f\x00\x00", False), (b"\x80", False), (b"\x97\x00", False)])
def test_plain_pubacks_skip_pahos_decoder(puback_body: bytes, fast_path: bool,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A success PUBACK without properties (mosquitto sends 0x10 alone for a receipt to a
    device with no session) is completed without paho's decoder; one with a property or
    a failure code goes to paho."""
    calls: list[str] = []
    pahos = mqtt.Client._handle_pubackcomp

    def counted(self: mqtt.Client, cmd: Any) -> Any:
        calls.append(cmd)
        return pahos(self, cmd)

    monkeypatch.setattr(mqtt.Client, "_handle_pubackcomp", counted)
    published, inflight, _ = _publish_and_complete(FastPublishClient, puback_body)
    assert all(published) and inflight == 0
    assert calls == ([] if fast_path else ["PUBACK"] * 30)


def _publish_packet(cls: type[mqtt.Client], protocol: MQTTProtocolVersion, mid: int,
                    topic: bytes, payload: bytes, qos: int, retain: bool, dup: bool
                    ) -> list[Any]:
    """What `_send_publish` queues, with a connection (a stand-in socket) in place."""
    client = cls(CallbackAPIVersion.VERSION2, client_id="t", protocol=protocol)
    queued: list[Any] = []

    def queue(*args: Any, **kwargs: Any) -> MQTTErrorCode:
        queued.append((args, kwargs))
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    client._packet_queue = queue  # type: ignore[method-assign]
    left, right = socket.socketpair()
    client._sock = left
    try:
        client._send_publish(mid, topic, payload, qos, retain, dup)
    finally:
        client._sock = None
        left.close()
        right.close()
    return queued


@settings(max_examples=300)
@given(protocol=st.sampled_from([MQTTProtocolVersion.MQTTv5,
                                 MQTTProtocolVersion.MQTTv311]),
       mid=st.integers(1, 65535), topic=st.binary(min_size=1, max_size=300),
       payload=st.one_of(st.binary(max_size=300),
                         st.integers(100, 20000).map(lambda n: b"x" * n)),
       qos=st.sampled_from([0, 1, 2]), retain=st.booleans(), dup=st.booleans())
def test_a_publish_is_queued_as_the_same_bytes_as_pahos(
        protocol: MQTTProtocolVersion, mid: int, topic: bytes, payload: bytes, qos: int,
        retain: bool, dup: bool) -> None:
    """The QoS 1 fast path (receipts) against paho's own, across the remaining length's
    one-, two- and three-byte forms; the rest goes to paho's path."""
    fast = _publish_packet(FastPublishClient, protocol, mid, topic, payload, qos, retain, dup)
    plain = _publish_packet(mqtt.Client, protocol, mid, topic, payload, qos, retain, dup)
    assert [(bytes(a[1]), a[0], *a[2:]) for a, _ in fast] == \
        [(bytes(a[1]), a[0], *a[2:]) for a, _ in plain]


def test_a_receipt_skips_pahos_packet_builder(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    pahos = mqtt.Client._send_publish

    def counted(self: mqtt.Client, *args: Any, **kwargs: Any) -> Any:
        calls.append(args[3] if len(args) > 3 else kwargs.get("qos", 0))
        return pahos(self, *args, **kwargs)

    monkeypatch.setattr(mqtt.Client, "_send_publish", counted)
    v5 = MQTTProtocolVersion.MQTTv5
    _publish_packet(FastPublishClient, v5, 1, b"hcp/v1/d/receipt", b"{}", 1, False, False)
    assert calls == []
    _publish_packet(FastPublishClient, v5, 1, b"hcp/v1/d/receipt", b"{}", 0, False, False)
    assert calls == [0]


_STATES = [mqtt.mqtt_ms_queued, mqtt.mqtt_ms_publish, mqtt.mqtt_ms_wait_for_puback,
           mqtt.mqtt_ms_wait_for_pubrec, mqtt.mqtt_ms_wait_for_pubcomp]


def _after_update_inflight(cls: type[mqtt.Client], messages: list[tuple[int, int]],
                           inflight: int, most: int) -> tuple[list[Any], list[Any], int]:
    """`_update_inflight` on messages of these (qos, state index): what it sends, the
    states it leaves, and the in-flight count."""
    client = cls(CallbackAPIVersion.VERSION2, client_id="t")
    sent: list[Any] = []

    def send(mid: int, topic: bytes, payload: bytes | bytearray, qos: int, retain: bool,
             dup: bool, info: Any = None, properties: Any = None) -> MQTTErrorCode:
        sent.append((mid, topic, payload, qos, retain, dup, properties))
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    client._send_publish = send  # type: ignore[method-assign,assignment]
    for mid, (qos, state) in enumerate(messages, 1):
        m = mqtt.MQTTMessage(mid, f"hcp/v1/d{mid}/receipt".encode())
        m.qos, m.state, m.payload = qos, _STATES[state], f"p{mid}".encode()
        m.retain, m.dup = mid % 3 == 0, mid % 5 == 0
        client._out_messages[mid] = m
    client._inflight_messages, client._max_inflight_messages = inflight, most
    assert client._update_inflight() == MQTTErrorCode.MQTT_ERR_SUCCESS
    return sent, [m.state for m in client._out_messages.values()], client._inflight_messages


@settings(max_examples=400)
@given(messages=st.lists(st.tuples(st.sampled_from([0, 1, 2]), st.integers(0, 4)),
                         max_size=40),
       inflight=st.integers(0, 25), most=st.integers(1, 30))
def test_queued_messages_go_out_as_pahos_scan_sends_them(
        messages: list[tuple[int, int]], inflight: int, most: int) -> None:
    """Any mix of QoS and states, any window: the same messages sent, in the same order,
    with the same states and in-flight count after."""
    assert (_after_update_inflight(FastPublishClient, messages, inflight, most)
            == _after_update_inflight(mqtt.Client, messages, inflight, most))


def test_a_freed_slot_sends_the_first_queued_receipt() -> None:
    """20 in flight, 30 queued, one slot free: the oldest queued message goes out."""
    messages = [(1, 2)] * 19 + [(1, 0)] * 30
    sent, states, inflight = _after_update_inflight(FastPublishClient, messages, 19, 20)
    assert [s[0] for s in sent] == [20] and inflight == 20
    assert states[19] == mqtt.mqtt_ms_wait_for_puback and states[20] == mqtt.mqtt_ms_queued


def _read_packets(cls: type[mqtt.Client], stream: bytes, reads: int
                  ) -> tuple[list[MQTTErrorCode], list[Seen]]:
    """`_packet_read` called `reads` times on `stream`, all of it already received."""
    client = cls(CallbackAPIVersion.VERSION2, client_id="t", manual_ack=True)
    messages: list[mqtt.MQTTMessage] = []
    client.on_message = lambda _c, _u, m: messages.append(m)
    left, right = socket.socketpair()
    try:
        right.sendall(stream)
        left.setblocking(False)
        client._sock = left
        if isinstance(client, FastPublishClient):
            client._recv_budget = 1
        return [client._packet_read() for _ in range(reads)], [seen(m) for m in messages]
    finally:
        client._sock = None
        left.close()
        right.close()


def test_whole_packets_in_the_buffer_skip_pahos_byte_by_byte_reader(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """One recv() brought them all: paho's reader takes only the first (the buffer was
    empty), the rest are taken whole, with the same messages as paho's."""
    expected = _read_packets(mqtt.Client, STREAM, len(PACKETS))
    calls: list[int] = []
    pahos = mqtt.Client._packet_read

    def counted(self: mqtt.Client) -> MQTTErrorCode:
        calls.append(1)
        return pahos(self)

    monkeypatch.setattr(mqtt.Client, "_packet_read", counted)
    assert _read_packets(FastPublishClient, STREAM, len(PACKETS)) == expected
    assert len(calls) == 1


@pytest.mark.parametrize("tail", [
    b"\x30\xff\xff\xff\xff\x01",      # a length of five bytes: more than MQTT allows
    b"\x30\xff\xff\xff",              # a length cut short
    PACKETS[0][:-1],                  # a packet one byte short
    b"\x30\x00",                      # a PUBLISH with nothing in it
])
def test_a_broken_packet_after_a_whole_one_gets_pahos_answer(tail: bytes) -> None:
    assert (_read_packets(FastPublishClient, PACKETS[0] + tail, 2)
            == _read_packets(mqtt.Client, PACKETS[0] + tail, 2))


_TOPICS = ["hcp/v1/421100-HG01-W03/receipt", "hcp/v1/窗口-3/receipt", "hcp/v1/+/receipt",
           "hcp/#", "", "t" * 65536]
_PAYLOADS: list[Any] = [b'{"receipts":[]}', b"", "文本", bytearray(b"ba"), None, 7,
                        b"x" * 300]


def _after_publishing(cls: type[mqtt.Client], calls: list[tuple[int, int, int, bool]],
                      connected: bool, window: int, most_queued: int) -> list[Any]:
    """`publish` called with these (topic, payload, qos, retain) indexes and values:
    what each call returned or raised, the messages it left, what it queued to send."""
    client = cls(CallbackAPIVersion.VERSION2, client_id="t")
    client._max_inflight_messages, client._max_queued_messages = window, most_queued
    queued: list[Any] = []

    def queue(packet: Any, *args: Any, **kwargs: Any) -> MQTTErrorCode:
        queued.append(bytes(packet))
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    client._packet_queue = queue  # type: ignore[method-assign,assignment]
    left, right = socket.socketpair()
    client._sock = left if connected else None
    outcomes: list[Any] = []
    try:
        for topic, payload, qos, retain in calls:
            try:
                info = client.publish(_TOPICS[topic], _PAYLOADS[payload], qos, retain)
            except (ValueError, TypeError) as e:
                outcomes.append((type(e), str(e)))
            else:
                try:
                    published: Any = info.is_published()
                except (ValueError, RuntimeError) as e:
                    published = (type(e), str(e))
                outcomes.append((info.mid, info.rc, published))
    finally:
        client._sock = None
        left.close()
        right.close()
    messages = [(m.mid, m._topic, m.payload, m.qos, m.retain, m.dup, m.state, m.properties,
                 m.info.mid, m.info.rc, isinstance(m.info, mqtt.MQTTMessageInfo))
                for m in client._out_messages.values()]
    return [outcomes, messages, client._inflight_messages, queued]


@settings(max_examples=300)
@given(calls=st.lists(st.tuples(st.integers(0, len(_TOPICS) - 1),
                                st.integers(0, len(_PAYLOADS) - 1),
                                st.sampled_from([0, 1, 1, 1, 2]), st.booleans()),
                      max_size=30),
       connected=st.booleans(), window=st.integers(0, 5), most_queued=st.integers(0, 8))
def test_publishing_leaves_what_pahos_publish_leaves(
        calls: list[tuple[int, int, int, bool]], connected: bool, window: int,
        most_queued: int) -> None:
    """Any topic (wildcards, empty, too long), payload, QoS and retain flag, connected
    or not, any window and queue limit: the same answers and errors, the same messages
    in the same states, the same packets queued."""
    assert (_after_publishing(FastPublishClient, calls, connected, window, most_queued)
            == _after_publishing(mqtt.Client, calls, connected, window, most_queued))


def test_waiting_for_one_receipt_is_not_woken_by_another() -> None:
    """Receipts share one Condition: completing one wakes every waiter, and each goes
    back to waiting until its own is published."""
    client = FastPublishClient(CallbackAPIVersion.VERSION2, client_id="t")
    client._max_inflight_messages = client._inflight_messages = 1   # both wait their turn
    first = client.publish("hcp/v1/a/receipt", b"1", qos=1)
    second = client.publish("hcp/v1/b/receipt", b"2", qos=1)
    assert type(first) is not mqtt.MQTTMessageInfo   # the fast path made it
    done: list[int] = []

    def wait() -> None:
        second.wait_for_publish()
        done.append(2)

    waiter = threading.Thread(target=wait)
    waiter.start()
    first._set_as_published()
    waiter.join(0.3)
    assert waiter.is_alive() and not done and first.is_published()
    second._set_as_published()
    waiter.join(2)
    assert not waiter.is_alive() and done == [2]


PUBLISH_QOS1 = 0x32


@pytest.mark.parametrize("cls", [mqtt.Client, FastPublishClient])
def test_an_acknowledgement_never_overtakes_a_message_published_before_it(
        cls: type[mqtt.Client]) -> None:
    """The bridge publishes a receipt, then acknowledges the rating. With the broker's
    window full the receipt waits in paho's queue while paho sends the PUBACK at once:
    a bridge that died then left the rating acknowledged and its receipt unsent."""
    with run_client(cls, [publish(RATING_TOPIC, RATING, mid=9)], 1) as (client, broker,
                                                                       messages):
        client._max_inflight_messages = 1   # as if the CONNACK said Receive Maximum 1
        client.publish("hcp/v1/a/receipt", b"r1", qos=1)
        client.publish("hcp/v1/b/receipt", b"r2", qos=1)   # waits for a slot
        client.ack(messages[0].mid, 1)
        first = broker.packets_within(0.5)
        assert broker.conn is not None
        broker.conn.sendall(bytes([PUBACK, 2]) + first[0][1][18:20])   # r1's id
        second = broker.packets_within(0.5)
    sent = [(cmd, body[2:18]) if cmd == PUBLISH_QOS1 else (cmd, body)
            for cmd, body in first + second]
    wire = [(PUBLISH_QOS1, b"hcp/v1/a/receipt"), (PUBLISH_QOS1, b"hcp/v1/b/receipt"),
            (PUBACK, b"\x00\x09")]
    if cls is FastPublishClient:
        assert sent == wire
    else:   # paho's own order: the PUBACK before the second receipt
        assert sent == [wire[0], wire[2], wire[1]]


def test_acknowledgements_held_for_a_lost_connection_are_dropped() -> None:
    """The broker sends unacknowledged messages again on the next connection."""
    client = FastPublishClient(CallbackAPIVersion.VERSION2, client_id="t", manual_ack=True)
    client._max_inflight_messages = client._inflight_messages = 1
    client.publish("hcp/v1/a/receipt", b"r1", qos=1)   # queued
    assert client.ack(5, 1) == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert list(client._held_acks) == [(1, 5, 1)]
    client._sock_close()
    assert not client._held_acks
