"""An alert as the world sees it: the JSON published on `{prefix}/alerts` (QoS 1) and
posted to the webhook, with a one-line Chinese `summary` for the hall's managers.
docs/alerts.md describes every field."""

from __future__ import annotations

import json
from datetime import UTC, datetime, tzinfo
from typing import Any

from broker_bridge.timezones import BEIJING
from broker_bridge.watch.model import Alert
from broker_bridge.watch.summary import summary


def iso_utc(t: float | None) -> str | None:
    """Epoch seconds as ISO-8601 UTC with milliseconds and a Z (like the devices)."""
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def alert_document(alert: Alert, watcher_id: str, now: float, tz: tzinfo = BEIJING,
                   window_name: str | None = None) -> dict[str, Any]:
    """The message; `tz` is the hall's time zone (the summary's times are local) and
    `window_name` the window's configured name, if any."""
    return {
        "alert": alert.kind,           # the name field of every alert on {prefix}/alerts
        "kind": alert.kind,
        "alert_id": alert.alert_id,
        "resolved": alert.resolved,
        "severity": alert.severity,
        "device_id": alert.device_id,
        "hall_id": alert.hall_id,
        "window_id": alert.window_id,
        "window_name": window_name,
        "region_code": alert.region_code,
        "evidence": alert.evidence,
        "first_seen": iso_utc(alert.first_seen),
        "raised_at": iso_utc(alert.raised_at),
        "resolved_at": iso_utc(alert.resolved_at),
        "at": iso_utc(now),
        "watcher": watcher_id,
        "summary": summary(alert, tz, now, window_name),
    }


def alert_payload(alert: Alert, watcher_id: str, now: float, tz: tzinfo = BEIJING,
                  window_name: str | None = None) -> bytes:
    return json.dumps(alert_document(alert, watcher_id, now, tz, window_name),
                      ensure_ascii=False, separators=(",", ":")).encode("utf-8")
