"""Shared helpers for the outbox tests (no tests here: the name only keeps it among the
outbox's own files). `make_rating` builds a realistic SPEC §6 record (~600 bytes of JSON)."""

from __future__ import annotations

import uuid
from typing import Any


def make_rating(seq: int, rating_id: str | None = None, level: int = 5) -> dict[str, Any]:
    return {
        "schema": "hcp.rating/1",
        "rating_id": rating_id or uuid.uuid4().hex,
        "seq": seq,
        "device_id": "421100-HG01-W03",
        "region_code": "421100", "hall_id": "HG01", "window_id": "W03",
        "level": level,
        "reason": "R02" if level <= 2 else None,
        "trigger": "case",
        "input": "button",
        "case": {"case_id": f"CASE-2026-{seq:08d}", "service_code": "11421100MB1234567X",
                 "service_name": "不动产登记（转移登记）", "dept_code": "421100-ZRZY",
                 "completed_at": "2026-11-25T10:31:02+08:00"},
        "staff": {"staff_id": "S0042", "staff_name": "王晓红"},
        "rated_at": f"2026-11-25T02:31:{seq % 60:02d}.125Z",
        "clock_synced": True,
    }
