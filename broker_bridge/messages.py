"""What the bridge publishes (SPEC §7): receipts, dead letters and alerts, as bytes."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from common.rating import (
    DEVICE_ID_RE,
    MAX_PAYLOAD_BYTES,
    InvalidRecord,
    decode_json_object,
)

_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,31}")


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
    # "replace": a lone surrogate from outside must not make a receipt raise.
    return _encode_str(text).encode("utf-8", "replace")


def dead_letter(topic: str, device_id: str, payload: bytes, error: InvalidRecord,
                bridge_id: str) -> bytes:
    """The payload for `{prefix}/deadletter`: why, from where, how big, and which top-level
    keys the message had — never a value from it. A rejected message may carry anything a
    device sent (a name, an ID number, a phone number), and the dead-letter topic is read
    by the platform team's tools: it must not republish that. `error.detail` shows only
    small numbers and the protocol's own words (common/rating.py `_show`)."""
    valid_device = DEVICE_ID_RE.fullmatch(device_id) is not None
    keys, other_keys = _top_level_keys(payload, error)
    letter: dict[str, Any] = {
        "reason": error.reason,
        "detail": error.detail,
        "topic": topic if valid_device else None,
        "device_id": device_id if valid_device else None,
        "rating_id": error.rating_id,
        "bridge": bridge_id,
        "at": utc_now(),
        "payload_bytes": len(payload),
        "keys": keys,
        "other_keys": other_keys,
    }
    return compact(letter)


def _top_level_keys(payload: bytes, error: InvalidRecord) -> tuple[list[str] | None, int]:
    """The record's keys that are field names (a key that is not could itself be
    personal data: only counted), or None when the payload is not a JSON object."""
    if error.reason not in ("bad_schema", "bad_field", "device_mismatch") \
            or len(payload) > MAX_PAYLOAD_BYTES:
        return None, 0
    try:
        record = decode_json_object(payload)
    except InvalidRecord:
        return None, 0
    names = sorted(k for k in record if _FIELD_NAME.fullmatch(k))
    return names, len(record) - len(names)


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
