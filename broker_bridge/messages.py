"""What the bridge publishes (SPEC §7): receipts, dead letters and alerts, as bytes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from common.rating import DEVICE_ID_RE, InvalidRecord

DEADLETTER_SAMPLE = 2048  # bytes of a rejected payload kept in the dead letter


def receipt(rating_id: str, status: str, error: str | None) -> bytes:
    """One entry of a receipt message, as JSON. Put together from pieces rather than
    with json.dumps: the bridge makes one per rating."""
    return b'{"rating_id":%s,"status":%s,"error":%s}' % (
        _json_string(rating_id), _json_string(status),
        b"null" if error is None else _json_string(error))


def receipts(entries: list[bytes]) -> bytes:
    """The payload for `{prefix}/{device_id}/receipt`: `{"receipts": [entries]}`."""
    return b'{"receipts":[' + b",".join(entries) + b"]}"


def _json_string(text: str) -> bytes:
    return _encode_str(text).encode("utf-8")


def dead_letter(topic: str, device_id: str, payload: bytes, error: InvalidRecord,
                bridge_id: str) -> bytes:
    """The payload for `{prefix}/deadletter`: why, from where, and a sample of the
    message (cut at DEADLETTER_SAMPLE bytes; bytes that are not UTF-8 escaped)."""
    sample = payload[:DEADLETTER_SAMPLE]
    letter: dict[str, Any] = {
        "reason": error.reason,
        "detail": error.detail,
        "topic": topic,
        "device_id": device_id if DEVICE_ID_RE.fullmatch(device_id) else None,
        "rating_id": error.rating_id,
        "bridge": bridge_id,
        "at": utc_now(),
        "payload_bytes": len(payload),
        "payload_truncated": len(payload) > DEADLETTER_SAMPLE,
    }
    try:
        letter["payload"] = sample.decode("utf-8")
    except UnicodeDecodeError:
        letter["payload"] = sample.decode("latin-1").encode("unicode_escape").decode("ascii")
        letter["payload_escaped"] = True
    return compact(letter)


def platform_refuses_alert(bridge_id: str, status: int | None, detail: str) -> bytes:
    """The payload for `{prefix}/alerts` when the platform refuses whole batches."""
    return compact({
        "alert": "platform_refuses_batches",
        "severity": "critical",
        "bridge": bridge_id,
        "status": status,
        "detail": detail,
        "at": utc_now(),
        "hint": "check [platform] url and token_file; ratings are held, not lost",
    })


def compact(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# For a str, JSONEncoder.encode goes straight to the C string encoder.
_encode_str = json.JSONEncoder(ensure_ascii=False).encode


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
