"""The rating record of SPEC §6: what a valid `hcp.rating/1` message is, checked once.

Pure functions, no I/O: the bridge uses `parse_rating` on every MQTT payload, the
reference platform and the device tests use `check_record` on a decoded record.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, NamedTuple

SCHEMA_ID = "hcp.rating/1"
MAX_PAYLOAD_BYTES = 8 * 1024
LEVELS = frozenset({1, 2, 3, 4, 5})
BAD_LEVELS = frozenset({1, 2})  # 差评: the only levels that may carry a reason
TRIGGERS = frozenset({"case", "spontaneous"})
INPUTS = frozenset({"button", "touch", "sim"})

DEVICE_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
RATING_ID_RE = re.compile(r"[0-9a-f]{32}")
REASON_CODE_RE = re.compile(r"[A-Za-z0-9_-]{1,16}")
# For messages that are not valid JSON (or too large to parse): is a rating_id readable?
_RATING_ID_SCAN = re.compile(rb'"rating_id"\s*:\s*"([0-9a-f]{32})"')
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_DEVICE_ID_MATCH = DEVICE_ID_RE.fullmatch
_RATING_ID_MATCH = RATING_ID_RE.fullmatch
_REASON_CODE_MATCH = REASON_CODE_RE.fullmatch
_SURROGATE_SEARCH = _SURROGATE_RE.search
_LOCATION_KEYS = ("region_code", "hall_id", "window_id")
_FIELD_NAME_MATCH = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,31}").fullmatch
_SCHEMA_LIKE_MATCH = re.compile(r"hcp\.[a-z_]{1,16}/[0-9]{1,3}").fullmatch

# Field limits follow the serial protocol (common/serial_codec.py FIELD_LIMITS) so that
# anything the device may legitimately store passes; location codes get 64.
CASE_FIELDS: dict[str, int] = {
    "case_id": 64, "service_code": 64, "service_name": 128, "dept_code": 64, "completed_at": 40,
}
STAFF_FIELDS: dict[str, int] = {"staff_id": 64, "staff_name": 32}
REQUIRED_KEYS = frozenset({
    "schema", "rating_id", "seq", "device_id", "region_code", "hall_id", "window_id",
    "level", "trigger", "input", "rated_at", "clock_synced",
})
# Absent is read as null: a device may leave out what it does not have.
NULLABLE_KEYS = frozenset({"reason", "case", "staff"})
KNOWN_KEYS = REQUIRED_KEYS | NULLABLE_KEYS
# A device's counter never gets near it; beyond it a platform that reads JSON numbers as
# doubles (JavaScript, many JSON libraries) would silently round the number.
MAX_SEQ = 2**53 - 1
_PROTOCOL_WORDS = frozenset({SCHEMA_ID, *TRIGGERS, *INPUTS, *KNOWN_KEYS, *CASE_FIELDS,
                             *STAFF_FIELDS})
# The times a record may carry (rated_at; an expired prompt's `at`), as instants: a
# device clock outside this range is broken, and dates near year 1 or 9999 overflow
# every conversion to another time zone (a worker died on 0001-01-01T00:00:00+14:00).
# A Pi without a real-time clock never starts before its systemd's build date.
EARLIEST_TIME = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_TIME = datetime(2100, 1, 1, tzinfo=UTC)   # exclusive
TIME_RANGE_TEXT = "2000-01-01T00:00:00Z (inclusive) to 2100-01-01T00:00:00Z (exclusive)"


class InvalidRecord(ValueError):
    """Not a valid rating record. `reason` is a short code for the dead-letter topic and
    metrics (too_large, bad_utf8, bad_json, bad_schema, bad_field, device_mismatch,
    bad_topic); `detail` says what exactly; `rating_id` is set when one could be read."""

    def __init__(self, reason: str, detail: str, rating_id: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.rating_id = rating_id


class RatingMessage(NamedTuple):
    """A valid rating as received: the decoded record and the exact payload bytes (the
    bridge forwards those bytes unchanged, so the platform sees what the device sent).
    A NamedTuple rather than a frozen dataclass: one is made per rating, and a frozen
    dataclass takes four times as long to build."""

    rating_id: str
    device_id: str
    level: int
    record: Mapping[str, Any]
    payload: bytes


# The record of a RatingMessage made with keep_record=False.
NO_RECORD: Mapping[str, Any] = MappingProxyType({})


def parse_rating(payload: bytes, topic_device_id: str | None = None, *,
                 keep_record: bool = True) -> RatingMessage:
    """Decode and check one MQTT rating payload; raise InvalidRecord.

    `topic_device_id` is the device named by the topic; the record must name the same
    device (a device may only publish its own ratings). With `keep_record=False` the
    message's record is NO_RECORD: for a holder of many ratings that needs only their
    ids and bytes (the bridge, which forwards the bytes). The decoded record is then
    freed at once, and the next one decoded into the same memory: about 1.5 µs less per
    rating than decoding each into fresh memory while thousands are held.
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise InvalidRecord("too_large", f"payload is {len(payload)} bytes, "
                            f"at most {MAX_PAYLOAD_BYTES} allowed", scan_rating_id(payload))
    record = decode_json_object(payload)
    check_record(record)
    if topic_device_id is not None and record["device_id"] != topic_device_id:
        raise InvalidRecord("device_mismatch",
                            f"topic names device {topic_device_id!r}, record names "
                            f"{record['device_id']!r}", record["rating_id"])
    return RatingMessage(record["rating_id"], record["device_id"], record["level"],
                         record if keep_record else NO_RECORD, payload)


def decode_json_object(payload: bytes) -> dict[str, Any]:
    """Strict JSON: UTF-8 only, no NaN/Infinity, no repeated keys (a record with two
    `level` keys could mean one thing to us and another to the platform)."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidRecord("bad_utf8", f"not UTF-8 (byte {e.start})",
                            scan_rating_id(payload)) from None
    try:
        obj = _DECODER.decode(text)
    except RecursionError:
        raise InvalidRecord("bad_json", "too deeply nested", scan_rating_id(payload)) from None
    except ValueError as e:
        raise InvalidRecord("bad_json", str(e)[:200], scan_rating_id(payload)) from None
    if not isinstance(obj, dict):
        raise InvalidRecord("bad_json", f"a JSON {type(obj).__name__}, not an object",
                            scan_rating_id(payload))
    return obj


def check_record(record: Any) -> None:
    """Raise InvalidRecord unless `record` (decoded JSON) is a valid hcp.rating/1 record.

    The bridge runs this on every rating, so a valid record costs only comparisons and
    C-level set, regex and string operations; messages are put together on failure."""
    if not isinstance(record, dict):
        raise InvalidRecord("bad_schema", "record is not an object")
    get = record.get
    rid = get("rating_id")
    rating_id = rid if isinstance(rid, str) and _RATING_ID_MATCH(rid) else None

    def bad(reason: str, detail: str) -> InvalidRecord:
        return InvalidRecord(reason, detail, rating_id)

    if get("schema") != SCHEMA_ID:
        raise bad("bad_schema", f"schema must be {SCHEMA_ID!r}, got {_show(get('schema'))}")
    keys = record.keys()
    if not keys >= REQUIRED_KEYS:
        raise bad("bad_schema", "missing " + ", ".join(sorted(REQUIRED_KEYS - keys)))
    if not keys <= KNOWN_KEYS:
        # Unknown fields are refused, not passed on: they could carry personal data.
        raise bad("bad_schema", "unknown field " + ", ".join(
            sorted(show_key(k) for k in keys - KNOWN_KEYS)))
    if rating_id is None:
        raise bad("bad_field", "rating_id must be 32 lowercase hex digits")
    seq = record["seq"]
    if not _is_int(seq) or not 0 <= seq <= MAX_SEQ:
        raise bad("bad_field", f"seq must be an integer 0..2^53-1, got {_show(seq)}")
    device_id = record["device_id"]
    if not isinstance(device_id, str) or not _DEVICE_ID_MATCH(device_id):
        raise bad("bad_field", "device_id must match [A-Za-z0-9_-]{1,64}")
    for key in _LOCATION_KEYS:
        if not _text(record[key], 64):
            raise bad("bad_field", f"{key} " + _text_fault(
                record[key], "must be a non-empty string of at most 64 characters"))
    level = record["level"]
    if not _is_int(level) or level not in LEVELS:
        raise bad("bad_field", f"level must be 1..5, got {_show(level)}")
    reason = get("reason")
    if reason is not None:
        if not isinstance(reason, str) or not _REASON_CODE_MATCH(reason):
            raise bad("bad_field", "reason must be null or a reason code ([A-Za-z0-9_-]{1,16})")
        if level not in BAD_LEVELS:
            raise bad("bad_field", f"reason given for level {level}; only levels 1 and 2 "
                      "take a reason")
    trigger = record["trigger"]
    if not isinstance(trigger, str) or trigger not in TRIGGERS:
        raise bad("bad_field", f"trigger must be case or spontaneous, got {_show(trigger)}")
    input_ = record["input"]
    if not isinstance(input_, str) or input_ not in INPUTS:
        raise bad("bad_field", f"input must be button, touch or sim, got {_show(input_)}")
    case = get("case")
    if case is None:
        if trigger == "case":
            raise bad("bad_field", "trigger is case but case is null")
    else:
        if trigger == "spontaneous":
            raise bad("bad_field", "a spontaneous rating has no case")
        _check_object(case, "case", CASE_FIELDS, bad)
        case_id = case.get("case_id")
        if not (isinstance(case_id, str) and case_id.strip()):
            raise bad("bad_field", "case.case_id is required")
    staff = get("staff")
    if staff is not None:
        _check_object(staff, "staff", STAFF_FIELDS, bad)
    rated_at = record["rated_at"]
    if aware_time(rated_at) is None:   # parsed once for a valid record; why, only if not
        if not isinstance(rated_at, str) or not _aware_iso8601(rated_at):
            raise bad("bad_field", "rated_at must be an ISO-8601 time with a UTC offset or Z")
        raise bad("bad_field", f"rated_at is outside {TIME_RANGE_TEXT}")
    if not isinstance(record["clock_synced"], bool):
        raise bad("bad_field", "clock_synced must be true or false")


def scan_rating_id(payload: bytes) -> str | None:
    """Best effort for a payload that cannot be decoded: the first rating_id in it."""
    found = _RATING_ID_SCAN.search(payload, 0, 64 * 1024)
    return found.group(1).decode("ascii") if found else None


def _check_object(value: Any, name: str, fields: dict[str, int], bad: Any) -> None:
    if not isinstance(value, dict):
        raise bad("bad_field", f"{name} must be an object or null")
    if not value.keys() <= fields.keys():
        raise bad("bad_schema", f"unknown field {name}." + f", {name}.".join(
            sorted(show_key(k) for k in value.keys() - fields.keys())))
    for key, text in value.items():
        # _text(text, limit, allow_empty=True) inlined: this runs for every field of
        # every rating.
        if text is None or (isinstance(text, str) and len(text) <= fields[key]
                            and "\x00" not in text
                            and (text.isascii() or _SURROGATE_SEARCH(text) is None)):
            continue
        raise bad("bad_field", f"{name}.{key} " + _text_fault(
            text, f"must be a string of at most {fields[key]} characters or null"))


def is_text(value: Any, limit: int) -> bool:
    """A non-empty string of at most `limit` characters that is valid text: no lone
    surrogate ("\ud800" is valid JSON but cannot be encoded as UTF-8) and no NUL
    character (PostgreSQL text cannot hold one: the platform refuses such a record)."""
    return _text(value, limit)


def _text(value: Any, limit: int, allow_empty: bool = False) -> bool:
    if not isinstance(value, str) or len(value) > limit or (not allow_empty and not value):
        return False
    # What the platform's store refuses (city_platform/records.py): a NUL character and
    # a lone surrogate ("\ud800" is valid JSON but not valid text). Refused here, the
    # bridge dead-letters the record instead of forwarding one the platform refuses.
    # One `in` and isascii() keep the common case at C speed.
    return "\x00" not in value and (value.isascii() or _SURROGATE_SEARCH(value) is None)


def _text_fault(value: Any, shape: str) -> str:
    """Why a text field was refused (made only on failure): `shape` when the value is
    not a string of the right size, else what it holds that no store keeps."""
    if isinstance(value, str) and "\x00" in value:
        return "holds a NUL character (U+0000), which the platform's store cannot keep"
    if isinstance(value, str) and _SURROGATE_SEARCH(value) is not None:
        return "holds a lone surrogate (not UTF-8 text)"
    return shape


def _is_int(value: Any) -> bool:
    # `type() is int` first: what the JSON decoder makes, and never a bool.
    return type(value) is int or (isinstance(value, int) and not isinstance(value, bool))


def _aware_iso8601(value: str) -> bool:
    try:
        return len(value) <= 40 and datetime.fromisoformat(value).tzinfo is not None
    except ValueError:
        return False


def aware_time(value: Any) -> datetime | None:
    """`value` as an instant when it is an ISO-8601 time with a UTC offset (at most 40
    characters) within EARLIEST_TIME..LATEST_TIME; None otherwise. A time this returns
    converts to any time zone and to a POSIX timestamp without overflow."""
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    # The local year first: comparing with an aware bound converts to UTC, which
    # overflows at the ends of the range datetime can hold.
    if moment.tzinfo is None or not 1999 <= moment.year <= 2100:
        return None
    try:
        inside = EARLIEST_TIME <= moment < LATEST_TIME
    except (OverflowError, ValueError):  # an offset tzinfo cannot give: defence only
        return None
    return moment if inside else None


def _show(value: Any) -> str:
    """A field value for an error message (dead letters, receipts, logs) that never
    repeats free text: a device could put a name or an ID number in any field. Small
    numbers and the protocol's own words are shown; the rest only by type and size."""
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, int):
        if -10**6 < value < 10**6:
            return repr(value)
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    if isinstance(value, float):
        return repr(value) if -10**6 < value < 10**6 else "a number out of range"
    if isinstance(value, str):
        if value in _PROTOCOL_WORDS or _SCHEMA_LIKE_MATCH(value):
            return repr(value)
        return f"a string of {len(value)} characters"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


def show_key(key: str) -> str:
    """A key for an error message: a field name as it is, anything else by its length."""
    return repr(key) if _FIELD_NAME_MATCH(key) else f"a key of {len(key)} characters"


def _no_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"repeated key {show_key(key)}")
            seen.add(key)
    return obj


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# One decoder for every payload: json.loads() with hooks builds a new one (and its
# scanner) per call, a measurable share of the bridge's CPU per rating.
_DECODER = json.JSONDecoder(object_pairs_hook=_no_repeated_keys, parse_constant=_no_constants)
