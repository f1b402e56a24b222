"""The rating record the core builds when a citizen rates (SPEC §6): the device's
identity, the level and reason, the case and clerk, and when it was pressed. A new or
renamed record field lands here; when and why a rating happens is device/core/machine.py's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from common.rating import SCHEMA_ID
from device.core.model import InputKind

__all__ = ["CASE_FIELDS", "Identity", "build_rating", "iso_ms"]

# What of a case_completed frame goes into the record's `case`.
CASE_FIELDS = ("case_id", "service_code", "service_name", "dept_code", "completed_at")


@dataclass(frozen=True)
class Identity:
    device_id: str
    region_code: str
    hall_id: str
    window_id: str


def build_rating(identity: Identity, *, rating_id: str, seq: int, level: int,
                 reason: str | None, case_fields: Mapping[str, Any] | None,
                 staff: Mapping[str, str | None] | None, input_kind: InputKind,
                 rated_wall: float, clock_synced: bool) -> dict[str, Any]:
    """The record of one rating; `case_fields` None for a spontaneous one. A clerk the
    case names wins over the one logged in at the window (`staff`)."""
    case_obj: dict[str, Any] | None = None
    if case_fields is not None:
        f = case_fields
        case_obj = {k: f.get(k) for k in CASE_FIELDS}
        if f.get("staff_id") or f.get("staff_name"):
            staff = {"staff_id": f.get("staff_id"), "staff_name": f.get("staff_name")}
    return {
        "schema": SCHEMA_ID,
        "rating_id": rating_id,
        "seq": seq,
        "device_id": identity.device_id,
        "region_code": identity.region_code,
        "hall_id": identity.hall_id,
        "window_id": identity.window_id,
        "level": level,
        "reason": reason,
        "trigger": "spontaneous" if case_fields is None else "case",
        "input": input_kind,
        "case": case_obj,
        "staff": dict(staff) if staff else None,
        "rated_at": iso_ms(rated_wall),
        "clock_synced": clock_synced,
    }


def iso_ms(epoch: float) -> str:
    """UTC ISO-8601 with milliseconds and a Z, as in SPEC §6."""
    dt = datetime.fromtimestamp(epoch, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
