"""An alert as the world sees it: the JSON published on `{prefix}/alerts` (QoS 1) and
posted to the webhook. docs/alerts.md describes every field."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from broker_bridge.watch.model import Alert


def iso_utc(t: float | None) -> str | None:
    """Epoch seconds as ISO-8601 UTC with milliseconds and a Z (like the devices)."""
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def alert_document(alert: Alert, watcher_id: str, now: float) -> dict[str, Any]:
    return {
        "alert": alert.kind,           # the name field of every alert on {prefix}/alerts
        "kind": alert.kind,
        "alert_id": alert.alert_id,
        "resolved": alert.resolved,
        "severity": alert.severity,
        "device_id": alert.device_id,
        "hall_id": alert.hall_id,
        "window_id": alert.window_id,
        "region_code": alert.region_code,
        "evidence": alert.evidence,
        "first_seen": iso_utc(alert.first_seen),
        "raised_at": iso_utc(alert.raised_at),
        "resolved_at": iso_utc(alert.resolved_at),
        "at": iso_utc(now),
        "watcher": watcher_id,
    }


def alert_payload(alert: Alert, watcher_id: str, now: float) -> bytes:
    return json.dumps(alert_document(alert, watcher_id, now), ensure_ascii=False,
                      separators=(",", ":")).encode("utf-8")
