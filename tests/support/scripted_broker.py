"""A scripted MQTT broker for tests of what the bridge does when a broker says no: it
accepts any number of connections on a free loopback port, records when each CONNECT came
and what each SUBSCRIBE asked, and answers as told — a CONNACK with chosen properties, a
SUBACK with chosen reason codes, optionally a DISCONNECT with a reason — the way paho's own
tests script a peer. It speaks just enough MQTT 5 and 3.1.1 for that; nothing is routed.

    broker = ScriptedBroker(connack_properties=shared_unavailable(), suback=refuse_shared)
    ... bridge config: host broker.host, port broker.port ...
    broker.connects        # monotonic time of every CONNECT
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

HOST = "127.0.0.1"
CONNECT, CONNACK, SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 1, 2, 8, 9, 12, 13, 14
SHARED_NOT_SUPPORTED = 0x9E


def vbi(n: int) -> bytes:
    """An MQTT variable byte integer."""
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def packet(command: int, flags: int, body: bytes) -> bytes:
    return bytes([command << 4 | flags]) + vbi(len(body)) + body


def shared_unavailable() -> bytes:
    """CONNACK properties: Shared Subscription Available = 0."""
    return b"\x2a\x00"


def receive_maximum(n: int) -> bytes:
    """CONNACK properties: Receive Maximum = n."""
    return b"\x21" + n.to_bytes(2, "big")


def grant_all(filters: list[tuple[str, int]]) -> list[int]:
    return [qos for _, qos in filters]


def refuse_shared(filters: list[tuple[str, int]]) -> list[int]:
    """0x9E for every $share filter (0x80 would be 3.1.1's only failure code)."""
    return [SHARED_NOT_SUPPORTED if topic.startswith("$share/") else qos
            for topic, qos in filters]


@dataclass
class ScriptedBroker:
    """The script: `connack_reason` and `connack_properties` for every CONNACK;
    `suback(filters)` gives the reason code of each filter; `disconnect_after_suback`, a
    DISCONNECT reason code sent (MQTT 5) right after a SUBACK with a refusal in it, then
    the socket is closed (what a broker that will not serve us does)."""

    connack_reason: int = 0
    connack_properties: bytes = b""
    suback: Callable[[list[tuple[str, int]]], list[int]] = grant_all
    disconnect_after_suback: int | None = None
    # A DISCONNECT reason sent (MQTT 5) right after a SUBACK that granted everything, then
    # the socket closed: 0x8E, another client took the session over.
    disconnect_after_grant: int | None = None
    host: str = HOST
    connects: list[float] = field(default_factory=list)
    subscribes: list[list[tuple[str, int]]] = field(default_factory=list)
    protocols: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._server = socket.create_server((self.host, 0))
        self._stopping = False
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, name="scripted-broker", daemon=True).start()

    @property
    def port(self) -> int:
        port: int = self._server.getsockname()[1]
        return port

    def close(self) -> None:
        self._stopping = True
        self._server.close()
        with self._lock:
            for conn in self._conns:
                conn.close()

    def __enter__(self) -> ScriptedBroker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Serving ---------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._stopping:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            with self._lock:
                self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        version = 5
        try:
            while True:
                command, flags, body = _read_packet(conn)
                if command == CONNECT:
                    with self._lock:
                        self.connects.append(time.monotonic())
                    version = _protocol_level(body)
                    self.protocols.append(version)
                    conn.sendall(self._connack(version))
                    if self.connack_reason:
                        return
                elif command == SUBSCRIBE:
                    mid, filters = _subscribe(body, version)
                    with self._lock:
                        self.subscribes.append(filters)
                    codes = self.suback(filters)
                    props = b"\x00" if version == 5 else b""
                    conn.sendall(packet(SUBACK, 0, mid.to_bytes(2, "big") + props
                                        + bytes(codes)))
                    refused = any(c >= 0x80 for c in codes)
                    reason = (self.disconnect_after_suback if refused
                              else self.disconnect_after_grant)
                    if reason:
                        if version == 5:
                            conn.sendall(packet(DISCONNECT, 0, bytes([reason, 0])))
                        return
                elif command == PINGREQ:
                    conn.sendall(packet(PINGRESP, 0, b""))
                elif command == DISCONNECT:
                    return
        except (OSError, ConnectionError):
            return
        finally:
            conn.close()

    def _connack(self, version: int) -> bytes:
        if version == 5:
            props = vbi(len(self.connack_properties)) + self.connack_properties
            return packet(CONNACK, 0, bytes([0, self.connack_reason]) + props)
        return packet(CONNACK, 0, bytes([0, self.connack_reason]))


def _read_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("client closed")
        data += chunk
    return data


def _read_packet(conn: socket.socket) -> tuple[int, int, bytes]:
    first = _read_exact(conn, 1)[0]
    length, shift = 0, 0
    while True:
        byte = _read_exact(conn, 1)[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return first >> 4, first & 0x0F, _read_exact(conn, length)


def _read_vbi(data: bytes, at: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at


def _protocol_level(connect: bytes) -> int:
    name_len = int.from_bytes(connect[:2], "big")
    return connect[2 + name_len]   # 4 = 3.1.1, 5 = MQTT 5


def _subscribe(body: bytes, version: int) -> tuple[int, list[tuple[str, int]]]:
    mid = int.from_bytes(body[:2], "big")
    at = 2
    if version == 5:
        props_len, at = _read_vbi(body, at)
        at += props_len
    filters = []
    while at < len(body):
        size = int.from_bytes(body[at:at + 2], "big")
        topic = body[at + 2:at + 2 + size].decode("utf-8")
        options = body[at + 2 + size]
        filters.append((topic, options & 0x03))
        at += 3 + size
    return mid, filters
