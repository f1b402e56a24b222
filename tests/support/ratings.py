"""Rating records and a device-like MQTT publisher for bridge and platform tests.

`make_rating()` builds a valid SPEC §6 record. `FleetPublisher` publishes ratings as
devices do (paho, QoS 1, on `{prefix}/{device_id}/rating`) for many device ids over one
connection, and collects the receipts the bridge sends back to those devices.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

_seq = itertools.count(1)


DEVICE_ID = "421100-HG01-W03"
_START = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)


def make_rating(device_id: str = DEVICE_ID, level: int = 5, *, seq: int | None = None,
                **overrides: Any) -> dict[str, Any]:
    """A valid, realistic hcp.rating/1 record (about 600 bytes of JSON: a case with
    Chinese service and staff names); keyword arguments replace fields."""
    seq = next(_seq) if seq is None else seq
    region, hall, window = (device_id.split("-") + ["421100", "HG01", "W03"])[:3]
    record: dict[str, Any] = {
        "schema": "hcp.rating/1",
        "rating_id": uuid.uuid4().hex,
        "seq": seq,
        "device_id": device_id,
        "region_code": region or "421100",
        "hall_id": hall or "HG01",
        "window_id": window or "W03",
        "level": level,
        "reason": "R02" if level <= 2 else None,
        "trigger": "case",
        "input": "button",
        "case": {"case_id": f"C-{uuid.uuid4().hex[:12]}", "service_code": "11420000",
                 "service_name": "不动产登记", "dept_code": "D01",
                 "completed_at": "2026-11-25T10:31:00+08:00"},
        "staff": {"staff_id": "S007", "staff_name": "王芳"},
        "rated_at": "2026-11-25T02:31:07.125Z",
        "clock_synced": True,
    }
    record.update(overrides)
    return record


def numbered_rating(seq: int, device_id: str = DEVICE_ID) -> dict[str, Any]:
    """Rating number `seq` of a run: its level cycles 5, 4, … 1 with the number, its
    time moves on 7 s a rating, its case id is the number."""
    rated_at = _START + timedelta(seconds=seq * 7, milliseconds=seq % 1000)
    record = make_rating(device_id, 5 - seq % 5, seq=seq,
                         rated_at=rated_at.isoformat(timespec="milliseconds")
                         .replace("+00:00", "Z"))
    record["case"]["case_id"] = f"CASE-2026-{seq:08d}"
    return record


def encode(record: dict[str, Any]) -> bytes:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class FleetPublisher:
    """One MQTT connection that speaks for many devices."""

    def __init__(self, host: str, port: int, prefix: str = "hcp/v1",
                 client_id: str | None = None, username: str | None = None,
                 password: str | None = None, ca_file: Path | None = None,
                 receipts_of: str = "+", protocol: str = "5") -> None:
        """`receipts_of`: the device id whose receipts to collect ("+" = every device,
        which needs the broker's permission to read every receipt topic); `protocol`:
        "5" or "3.1.1" (a broker such as NATS that speaks only 3.1.1)."""
        self.prefix = prefix
        self.receipts: dict[str, list[dict[str, Any]]] = defaultdict(list)  # by device id
        self.deadletters: list[dict[str, Any]] = []
        self.alerts: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._acked: set[int] = set()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                   client_id=client_id or f"fleet-{uuid.uuid4().hex[:8]}",
                                   protocol=mqtt.MQTTv5 if protocol == "5" else mqtt.MQTTv311)
        self._client.max_inflight_messages_set(100)
        if username is not None:
            self._client.username_pw_set(username, password)
        if ca_file is not None:
            self._client.tls_set(ca_certs=str(ca_file))
        self._client.on_message = self._on_message
        self._client.on_publish = self._on_publish
        subscribed = threading.Event()
        self._client.on_subscribe = lambda *a: subscribed.set()
        self._client.connect(host, port)
        self._client.loop_start()
        self._client.subscribe([(f"{prefix}/{receipts_of}/receipt", 1),
                                (f"{prefix}/deadletter", 1), (f"{prefix}/alerts", 1)])
        if not subscribed.wait(5):
            raise TimeoutError("fleet publisher: no SUBACK within 5 s")

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        body = json.loads(message.payload)
        with self._lock:
            if message.topic.endswith("/receipt"):
                device = message.topic[len(self.prefix) + 1:].split("/")[0]
                self.receipts[device].extend(body["receipts"])
            elif message.topic.endswith("/deadletter"):
                self.deadletters.append(body)
            else:
                self.alerts.append(body)

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any,
                    properties: Any) -> None:
        with self._lock:
            self._acked.add(mid)

    def publish_record(self, record: dict[str, Any], device_id: str | None = None) -> int:
        """Publish a record on the rating topic of `device_id` (default: its own)."""
        return self.publish_raw(device_id or record["device_id"], encode(record))

    def publish_raw(self, device_id: str, payload: bytes, qos: int = 1) -> int:
        info = self._client.publish(f"{self.prefix}/{device_id}/rating", payload, qos=qos)
        return info.mid

    def wait_published(self, mids: list[int], timeout: float = 10.0) -> None:
        """Wait for the broker's PUBACK of every mid (the device's "delivered")."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self._acked.issuperset(mids):
                    return
            time.sleep(0.02)
        raise TimeoutError("broker did not acknowledge every rating")

    def receipted_ids(self) -> dict[str, str]:
        """rating_id → last receipt status, over every device."""
        with self._lock:
            return {r["rating_id"]: r["status"] for items in self.receipts.values()
                    for r in items}

    def receipts_for(self, device_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.receipts.get(device_id, ()))

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
