"""What the bridge publishes (SPEC §7): receipts, dead letters and alerts, as bytes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from broker_bridge.record import DEVICE_ID_RE, InvalidRecord

DEADLETTER_SAMPLE = 2048  # bytes of a rejected payload kept in the dead letter


def receipt(rating_id: str, status: str, error: str | None) -> dict[str, Any]:
    """One entry of a receipt message."""
    return {"rating_id": rating_id, "status": status, "error": error}


def receipts(entries: list[dict[str, Any]]) -> bytes:
    """The payload for `{prefix}/{device_id}/receipt`."""
    return compact({"receipts": entries})


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


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
