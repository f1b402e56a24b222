"""Helpers shared by the device MQTT integration tests (tests/test_device_mqtt*.py).

`Watcher` is a paho client in the test that records everything the device publishes
and can answer like the bridge (receipts) or the platform (retained config). `MqttProxy`
sits between the device and mosquitto, parses the MQTT packets going through and
measures how many rating publishes the device has in flight, optionally holding each
PUBACK back a little so that a window that is not respected would show.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.support.device import DEVICE_ID, DeviceProcess
from tests.support.mosquitto import Mosquitto

PREFIX = "hcp/v1"


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.02) -> Any:
    """The first truthy value of `predicate()` within `timeout`, else None."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


@dataclass(frozen=True)
class Seen:
    kind: str            # last topic level: rating, event, status, telemetry, …
    body: Any            # decoded JSON, None for an empty payload, bytes if not JSON
    retain: bool
    t: float


class Watcher:
    """Subscribes to `{prefix}/{device_id}/#` with a persistent session and keeps every
    message. With `auto_receipt`, answers each rating with an `accepted` receipt."""

    def __init__(self, broker: Mosquitto, device_id: str = DEVICE_ID, *,
                 auto_receipt: bool = False, port: int | None = None,
                 tls_ca: Path | None = None, username: str | None = None,
                 password: str | None = None) -> None:
        self.device_id = device_id
        self.base = f"{PREFIX}/{device_id}"
        self.auto_receipt = auto_receipt
        self.seen: list[Seen] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"watcher-{uuid.uuid4().hex[:8]}",
                                  protocol=mqtt.MQTTv5)
        # paho's hint says int, but it sleeps any number: come back fast after a restart.
        self.client.reconnect_delay_set(0.05, 0.5)  # type: ignore[arg-type]
        if username is not None:
            self.client.username_pw_set(username, password)
        if tls_ca is not None:
            self.client.tls_set(ca_certs=str(tls_ca))
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 300
        self.client.connect(broker.host, port or broker.port, keepalive=10,
                            clean_start=False, properties=props)
        self.client.loop_start()
        if not self._subscribed.wait(5):
            raise TimeoutError("watcher: no SUBACK within 5 s")

    def _on_connect(self, client: mqtt.Client, _ud: Any, _flags: Any, reason: Any,
                    _props: Any) -> None:
        if not reason.is_failure:
            client.subscribe(f"{self.base}/#", qos=1)

    def _on_message(self, client: mqtt.Client, _ud: Any, msg: mqtt.MQTTMessage) -> None:
        kind = msg.topic.rsplit("/", 1)[-1]
        try:
            body = json.loads(msg.payload) if msg.payload else None
        except (ValueError, RecursionError):
            body = bytes(msg.payload)   # junk the test itself published
        with self._cond:
            self.seen.append(Seen(kind, body, bool(msg.retain), time.monotonic()))
            self._cond.notify_all()
        if kind == "rating" and self.auto_receipt and isinstance(body, dict):
            self.receipt([body["rating_id"]])

    # --- what the device said ------------------------------------------------------

    def of(self, kind: str) -> list[Any]:
        with self._cond:
            return [s.body for s in self.seen if s.kind == kind]

    def rating_ids(self) -> list[str]:
        """Every rating_id seen, in arrival order, repeats included."""
        return [r["rating_id"] for r in self.of("rating")]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.of("event") if e and e.get("event") == name]

    def wait_for(self, kind: str, predicate: Callable[[Any], bool] = lambda b: True,
                 timeout: float = 10.0, after: int = 0) -> Any:
        """The first message of `kind` matching `predicate` among those seen from index
        `after` on (see `mark()`), waiting up to `timeout`; None if none came."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for s in self.seen[after:]:
                    if s.kind == kind and predicate(s.body):
                        return s.body
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def wait_event(self, name: str, timeout: float = 10.0, after: int = 0) -> Any:
        return self.wait_for("event", lambda e: bool(e) and e.get("event") == name,
                             timeout, after)

    def mark(self) -> int:
        """An index into everything seen so far: pass it as `after` to wait for news."""
        with self._cond:
            return len(self.seen)

    # --- talking to the device -------------------------------------------------------

    def publish(self, kind: str, payload: bytes | str, retain: bool = False) -> None:
        info = self.client.publish(f"{self.base}/{kind}", payload, qos=1, retain=retain)
        info.wait_for_publish(5)

    def receipt(self, rating_ids: list[str], status: str = "accepted",
                error: str | None = None) -> None:
        body = {"receipts": [{"rating_id": r, "status": status, "error": error}
                             for r in rating_ids]}
        self.client.publish(f"{self.base}/receipt", json.dumps(body), qos=1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def retained_status(broker: Mosquitto, device_id: str = DEVICE_ID,
                    timeout: float = 3.0) -> dict[str, Any] | None:
    """What a newcomer sees on the device's retained status topic right now."""
    got: list[dict[str, Any]] = []
    done = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2,
                         client_id=f"status-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5)

    def on_message(_c: Any, _ud: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.retain and msg.payload:
            got.append(json.loads(msg.payload))
        done.set()

    client.on_message = on_message
    client.on_connect = lambda c, *a: c.subscribe(f"{PREFIX}/{device_id}/status", qos=1)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        done.wait(timeout)
    finally:
        client.disconnect()
        client.loop_stop()
    return got[0] if got else None


def sim_status(device: DeviceProcess, timeout: float = 5.0) -> dict[str, Any]:
    """The daemon's `{"op": "status"}` answer over the sim socket (backlog, broker…)."""
    assert device.sim is not None
    device.sim.request_status()
    ev = device.sim.wait_for(lambda e: e.get("ev") == "status", timeout)
    assert ev is not None, "no status answer on the sim socket"
    return ev


def backlog_becomes(device: DeviceProcess, n: int, timeout: float) -> bool:
    return bool(wait_until(lambda: sim_status(device)["backlog"] == n, timeout, 0.1))


@pytest.fixture
def device_factory(tmp_path: Path) -> Iterator[Callable[..., DeviceProcess]]:
    """Make daemons: device_factory(broker_port, name="d1", mqtt={...}, ui={...})."""
    made: list[DeviceProcess] = []

    def make(mqtt_port: int, name: str = "device", **sections: dict[str, Any]
             ) -> DeviceProcess:
        sections.setdefault("ui", {}).setdefault("thanks_s", 0.3)
        sections["ui"].setdefault("lockout_s", 0.0)
        sections["ui"].setdefault("spontaneous_min_interval_s", 0)
        d = DeviceProcess(tmp_path / name, mqtt_port=mqtt_port, sections=sections)
        made.append(d)
        return d

    yield make
    for d in made:
        d.close()


def press_rating(device: DeviceProcess, level: int = 5, timeout: float = 5.0) -> None:
    """A spontaneous rating from the idle screen (reasons skipped); returns once `thanks`
    showed (so the rating is stored) and the screen is idle again."""
    assert device.sim is not None
    sim = device.sim
    if sim.screen is None or sim.screen.get("screen") != "idle":
        assert sim.wait_screen("idle", timeout), f"not idle:\n{device.log()}"
    sim.drain()
    sim.press(level)
    if level <= 2:  # the reasons screen: skip it
        assert sim.wait_screen("reasons", timeout), f"no reasons screen:\n{device.log()}"
        sim.press(1)
    assert sim.wait_screen("thanks", timeout), f"no thanks after a press:\n{device.log()}"
    assert sim.wait_screen("idle", timeout)


def rate_case(device: DeviceProcess, case_id: str, level: int = 5, timeout: float = 5.0
              ) -> str:
    """The window sends a case, the citizen presses `level` (3..5); the rating_id from
    the `rated` frame (sent only once the rating is stored)."""
    assert device.window is not None and device.sim is not None and level >= 3
    device.window.send("case_completed", case_id=case_id, service_name="不动产登记")
    assert device.sim.wait_screen("prompt", timeout, where=lambda e: e["case_id"] == case_id), \
        device.log()
    device.sim.press(level)
    frame = device.window.wait_for(
        lambda f: f.get("type") == "rated" and f.get("case_id") == case_id, timeout)
    assert frame is not None, device.log()
    rating_id: str = frame["rating_id"]
    return rating_id


# --- an MQTT-aware proxy ------------------------------------------------------------------

PUBLISH, PUBACK = 3, 4


class _Stream:
    """Splits a byte stream into MQTT control packets (fixed header + remaining length)."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self.buf += data
        packets: list[bytes] = []
        while True:
            length, mult, i = 0, 1, 1
            while True:
                if i >= len(self.buf):
                    return packets
                byte = self.buf[i]
                length += (byte & 0x7F) * mult
                mult *= 128
                i += 1
                if not byte & 0x80:
                    break
            if len(self.buf) < i + length:
                return packets
            packets.append(bytes(self.buf[:i + length]))
            del self.buf[:i + length]


def _body(packet: bytes) -> bytes:
    i = 1
    while packet[i] & 0x80:
        i += 1
    return packet[i + 1:]


class MqttProxy:
    """Forwards one device's TCP connection to the broker, counting rating PUBLISHes
    (QoS 1) the broker has not acknowledged yet; `max_inflight` is the most seen at once.
    Each PUBACK towards the device is held `puback_delay_s` before being forwarded."""

    def __init__(self, broker: Mosquitto, rating_topic: str, puback_delay_s: float = 0.0
                 ) -> None:
        self.broker = broker
        self.rating_topic = rating_topic.encode()
        self.puback_delay_s = puback_delay_s
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.inflight: set[int] = set()
        self.max_inflight = 0
        self.rating_publishes = 0
        self.refusing = False     # True: hang up on every new connection at once
        self._lock = threading.Lock()
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                device, _ = self.listener.accept()
            except OSError:
                return
            if self.refusing:
                device.close()
                continue
            try:
                broker = socket.create_connection((self.broker.host, self.broker.port))
            except OSError:      # the broker is down: so is the device's connection
                device.close()
                continue
            with self._lock:
                self.inflight.clear()     # a new connection starts with nothing in flight
            threading.Thread(target=self._pipe, args=(device, broker, True),
                             daemon=True).start()
            threading.Thread(target=self._pipe, args=(broker, device, False),
                             daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        stream = _Stream()
        try:
            while not self._closed.is_set():
                ready, _, _ = select.select([src], [], [], 0.2)
                if not ready:
                    continue
                data = src.recv(65536)
                if not data:
                    break
                for packet in stream.feed(data):
                    if not upstream and packet[0] >> 4 == PUBACK and self.puback_delay_s:
                        time.sleep(self.puback_delay_s)
                    self._observe(packet, upstream)
                    dst.sendall(packet)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def _observe(self, packet: bytes, upstream: bool) -> None:
        kind, body = packet[0] >> 4, _body(packet)
        with self._lock:
            if upstream and kind == PUBLISH and (packet[0] >> 1) & 3 == 1:
                topic_len = int.from_bytes(body[:2], "big")
                if body[2:2 + topic_len] == self.rating_topic:
                    pid = int.from_bytes(body[2 + topic_len:4 + topic_len], "big")
                    self.inflight.add(pid)
                    self.rating_publishes += 1
                    self.max_inflight = max(self.max_inflight, len(self.inflight))
            elif not upstream and kind == PUBACK:
                # Just before the device gets it: until then the slot is still taken.
                self.inflight.discard(int.from_bytes(body[:2], "big"))

    def close(self) -> None:
        self._closed.set()
        self.listener.close()
