"""What the platform takes from one posted record (SPEC §6 or the gov profile's default
names, docs/gov-profile.md): checked once, turned into the columns the store keeps.

Pure functions, no I/O. A record that is not valid becomes a `rejected` result naming
the reason; it is never stored (nothing was accepted, so nothing is lost).
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, tzinfo
from typing import Any, NamedTuple

from broker_bridge.profile import (
    EXPIRED,
    ID_FIELD,
    check_gov_record,
    parse_gov_time,
)
from common.rating import InvalidRecord, check_record

RATING, EXPIRED_PROMPT = "rating", "expired"
# The record as stored and forwarded: compact, UTF-8 text as is. One encoder for every
# record (json.dumps with options builds a new one per call: a sixth of the time).
_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class Incoming(NamedTuple):
    """One valid record, as the store's columns. `rated_at` is UTC; `local_day` is its
    date in the platform's time zone (what reports and deadlines count by)."""

    kind: str                  # RATING or EXPIRED_PROMPT
    rating_id: str             # rating_id, or the gov record's assessId
    device_id: str
    region_code: str
    hall_id: str
    window_id: str
    level: int                 # 0 for an expired prompt
    reason: str | None
    spontaneous: bool
    case_id: str | None
    staff_id: str | None
    rated_at: datetime
    local_day: date
    raw_time: str              # the record's own time text, as sent
    gov: bool                  # posted in the gov profile's names
    record: str                # the record as JSON text, stored and forwarded as is


class Rejected(NamedTuple):
    rating_id: str | None
    error: str


def read_record(record: Any, tz: tzinfo) -> Incoming | Rejected:
    """Check one posted record; never raises for bad input."""
    if isinstance(record, dict) and "schema" not in record and ID_FIELD in record:
        return _read_gov(record, tz)
    try:
        check_record(record)
    except InvalidRecord as e:
        return Rejected(e.rating_id or _loose_id(record), f"{e.reason}: {e.detail}")
    rated = datetime.fromisoformat(record["rated_at"]).astimezone(UTC)
    case = record.get("case") or {}
    staff = record.get("staff") or {}
    return Incoming(
        RATING, record["rating_id"], record["device_id"], record["region_code"],
        record["hall_id"], record["window_id"], int(record["level"]), record.get("reason"),
        record["trigger"] == "spontaneous", case.get("case_id"), staff.get("staff_id"),
        rated, rated.astimezone(tz).date(), record["rated_at"], False,
        _ENCODE(record))


def _read_gov(record: dict[str, Any], tz: tzinfo) -> Incoming | Rejected:
    """A gov record: its assessTime is local time in the platform's zone, its
    satisfaction in the default direction (1 = 非常不满意 … 5 = 非常满意)."""
    try:
        kind = check_gov_record(record)
    except InvalidRecord as e:
        return Rejected(e.rating_id or _loose_id(record), f"{e.reason}: {e.detail}")
    except TypeError:
        # check_gov_record looks a value up in a table: a list or an object there is
        # unhashable (found by tests/test_city_records.py).
        return Rejected(_loose_id(record), "bad_field: gov record: a field holds a list or "
                        "an object where a value belongs")
    local = parse_gov_time(record["assessTime"])
    assert local is not None  # checked above
    moment = local.replace(tzinfo=tz)
    device = str(record["deviceCode"])
    detail = record.get("evalDetail") or ""
    case_id = record.get("projectNo") or None
    staff_id = record.get("handleUserId")
    return Incoming(
        EXPIRED_PROMPT if kind == EXPIRED else RATING, str(record[ID_FIELD]), device,
        str(record.get("areaCode") or ""), str(record.get("hallCode") or "?"),
        str(record.get("windowCode") or device),
        0 if kind == EXPIRED else int(record["satisfaction"]),
        (str(detail).split(",")[0] or None) if kind != EXPIRED else None,
        case_id is None, None if case_id is None else str(case_id),
        None if staff_id is None else str(staff_id), moment.astimezone(UTC), local.date(),
        str(record["assessTime"]), True,
        _ENCODE(record))


def _loose_id(record: Any) -> str | None:
    for key in ("rating_id", ID_FIELD):
        rid = record.get(key) if isinstance(record, dict) else None
        if isinstance(rid, str):
            return rid
    return None


def iso_utc(moment: datetime) -> str:
    """2026-11-25T02:31:07.125Z: sorts as text in the order of time (SQLite)."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
