"""What the platform takes from one posted record (SPEC §6 or the gov profile's default
names, docs/gov-profile.md): checked once, turned into the columns the store keeps.

Pure functions, no I/O. A record that is not valid becomes a `rejected` result naming
the reason; it is never stored (nothing was accepted, so nothing is lost).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, tzinfo
from typing import Any, NamedTuple

from broker_bridge.profile import (
    EXPIRED,
    ID_FIELD,
    check_gov_record,
    parse_gov_time,
)
from common.rating import (
    EARLIEST_TIME,
    LATEST_TIME,
    TIME_RANGE_TEXT,
    InvalidRecord,
    check_record,
    show_key,
)

RATING, EXPIRED_PROMPT = "rating", "expired"
# The record as stored and forwarded: compact, UTF-8 text as is. One encoder for every
# record (json.dumps with options builds a new one per call: a sixth of the time).
# allow_nan=False: a NaN or Infinity (the server's json.loads takes them) is not JSON,
# and stored as `NaN` no reader takes it (PostgreSQL's record::json, the province).
_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
# How the encoder writes a NUL character: PostgreSQL text cannot hold one, so a record
# with one would fail its whole batch (a 503 the bridge retries forever). Searched in the
# encoded text first (C speed); only a hit walks the record to name the field.
_NUL_ESCAPE = "\\u0000"
_SURROGATE = re.compile("[\ud800-\udfff]")   # not UTF-8: no store or answer can hold it
# A gov record's columns: a value (text or a whole number) of at most this many
# characters, or null; anything else is refused, not stored as its Python repr.
GOV_COLUMNS = ("areaCode", "hallCode", "windowCode", "evalDetail", "projectNo",
               "handleUserId")
MAX_GOV_COLUMN = 64


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
    text = _ENCODE(record)
    if _NUL_ESCAPE in text:
        where = _text_problem(record)
        if where is not None:
            return Rejected(record["rating_id"], f"bad_field: {where}")
    rated = datetime.fromisoformat(record["rated_at"]).astimezone(UTC)
    case = record.get("case") or {}
    staff = record.get("staff") or {}
    return Incoming(
        RATING, record["rating_id"], record["device_id"], record["region_code"],
        record["hall_id"], record["window_id"], int(record["level"]), record.get("reason"),
        record["trigger"] == "spontaneous", case.get("case_id"), staff.get("staff_id"),
        rated, rated.astimezone(tz).date(), record["rated_at"], False, text)


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
    rating_id = str(record[ID_FIELD])
    try:
        text = _ENCODE(record)
    except ValueError:
        return Rejected(rating_id, "bad_field: gov record: a number is NaN or Infinity, "
                        "which is not JSON")
    except RecursionError:   # what json.loads just took may be too deep to write again
        return Rejected(rating_id, "bad_field: gov record: nested too deeply")
    if _NUL_ESCAPE in text or (not text.isascii() and _SURROGATE.search(text)):
        where = _text_problem(record)
        if where is not None:
            return Rejected(rating_id, f"bad_field: gov record: {where}")
    for key in GOV_COLUMNS:
        value = record.get(key)
        if not (value is None or (isinstance(value, str) and len(value) <= MAX_GOV_COLUMN)
                or (type(value) is int and abs(value) < 10 ** (MAX_GOV_COLUMN - 1))):
            return Rejected(rating_id, f"bad_field: gov record: {key} must be null, a string "
                            f"or an integer of at most {MAX_GOV_COLUMN} characters")
    local = parse_gov_time(record["assessTime"])
    assert local is not None  # checked above
    # The local year first: converting year 1 (or 9999) to UTC overflows.
    moment = local.replace(tzinfo=tz)
    if not (1999 <= local.year <= 2100 and EARLIEST_TIME <= moment < LATEST_TIME):
        return Rejected(rating_id, f"bad_field: gov record: assessTime is outside "
                        f"{TIME_RANGE_TEXT}")
    device = str(record["deviceCode"])
    detail = record.get("evalDetail") or ""
    case_id = record.get("projectNo") or None
    staff_id = record.get("handleUserId")
    return Incoming(
        EXPIRED_PROMPT if kind == EXPIRED else RATING, rating_id, device,
        str(record.get("areaCode") or ""), str(record.get("hallCode") or "?"),
        str(record.get("windowCode") or device),
        0 if kind == EXPIRED else int(record["satisfaction"]),
        (str(detail).split(",")[0] or None) if kind != EXPIRED else None,
        case_id is None, None if case_id is None else str(case_id),
        None if staff_id is None else str(staff_id), moment.astimezone(UTC), local.date(),
        str(record["assessTime"]), True, text)


def _text_problem(record: Any) -> str | None:
    try:
        return _not_text(record, "")
    except RecursionError:
        return "a value nested too deeply holds a NUL character or a lone surrogate"


def _not_text(value: Any, where: str) -> str | None:
    """Where in a decoded record a key or a string holds a NUL character or a lone
    surrogate, and which; None when nowhere."""
    if isinstance(value, str):
        if "\x00" in value:
            return f"{where or 'a value'} holds a NUL character (U+0000)"
        if _SURROGATE.search(value):
            return f"{where or 'a value'} holds a lone surrogate (not UTF-8 text)"
        return None
    items: Any = ()
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    for key, item in items:
        shown = str(key) if isinstance(key, int) else show_key(key).strip("'")
        name = f"{where}[{shown}]" if isinstance(key, int) else (
            f"{where}.{shown}" if where else shown)
        if isinstance(key, str):
            found = _not_text(key, f"a key in {where or 'the record'}")
            if found is not None:
                return found
        found = _not_text(item, name)
        if found is not None:
            return found
    return None


def _loose_id(record: Any) -> str | None:
    """The id a rejected record is answered by: only text (a lone surrogate could not
    be sent back at all, and the answer of the whole batch with it)."""
    for key in ("rating_id", ID_FIELD):
        rid = record.get(key) if isinstance(record, dict) else None
        if isinstance(rid, str):
            return None if _SURROGATE.search(rid) else rid
    return None


def iso_utc(moment: datetime) -> str:
    """2026-11-25T02:31:07.125Z: sorts as text in the order of time (SQLite)."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
