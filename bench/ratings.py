"""Rating records for the benchmarks: realistic SPEC §6 records (about 600 bytes of JSON,
a case with Chinese service and staff names), valid for the bridge and the platform."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

DEVICE_ID = "421100-HG01-W03"
_START = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)


def make_rating(seq: int, device_id: str = DEVICE_ID) -> dict[str, Any]:
    """The record a case rating of window W03 would make; `seq` also picks the level."""
    level = 5 - seq % 5
    rated_at = _START + timedelta(seconds=seq * 7, milliseconds=seq % 1000)
    return {
        "schema": "hcp.rating/1",
        "rating_id": uuid.uuid4().hex,
        "seq": seq,
        "device_id": device_id,
        "region_code": "421100", "hall_id": "HG01",
        "window_id": device_id.rsplit("-", 1)[-1],
        "level": level,
        "reason": "R02" if level <= 2 else None,
        "trigger": "case",
        "input": "button",
        "case": {"case_id": f"CASE-2026-{seq:08d}", "service_code": "11421100MB1234567X",
                 "service_name": "不动产登记（转移登记）", "dept_code": "421100-ZRZY",
                 "completed_at": "2026-11-25T10:31:02+08:00"},
        "staff": {"staff_id": "S0042", "staff_name": "王晓红"},
        "rated_at": rated_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "clock_synced": True,
    }
