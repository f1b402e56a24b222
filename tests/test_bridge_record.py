"""The SPEC §6 rating record check: what the bridge forwards, and why it refuses the rest."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.rating import (
    MAX_PAYLOAD_BYTES,
    NO_RECORD,
    InvalidRecord,
    check_record,
    parse_rating,
    scan_rating_id,
)
from tests.support.ratings import encode, make_rating

DEVICE = "421100-HG01-W03"


def refused(payload: bytes, topic_device: str | None = DEVICE) -> InvalidRecord:
    with pytest.raises(InvalidRecord) as caught:
        parse_rating(payload, topic_device)
    return caught.value


def test_a_valid_record_is_forwarded_byte_for_byte() -> None:
    record = make_rating(DEVICE, level=2)
    payload = encode(record)
    rating = parse_rating(payload, DEVICE)
    assert rating.rating_id == record["rating_id"]
    assert rating.device_id == DEVICE and rating.level == 2
    assert rating.payload is payload
    assert rating.record == record


def test_a_rating_held_without_its_record_keeps_its_ids_and_bytes() -> None:
    """What the bridge holds while a rating waits for the platform: its ids, its level
    and the device's bytes, not the decoded record."""
    record = make_rating(DEVICE, level=1)
    payload = encode(record)
    rating = parse_rating(payload, DEVICE, keep_record=False)
    assert rating == parse_rating(payload, DEVICE)._replace(record=NO_RECORD)
    assert rating.payload is payload and not rating.record
    with pytest.raises(TypeError):
        rating.record["level"] = 5  # type: ignore[index]
    with pytest.raises(InvalidRecord):
        parse_rating(encode({**record, "level": 9}), DEVICE, keep_record=False)


@pytest.mark.parametrize("changes", [
    {"reason": None, "case": None, "staff": None, "trigger": "spontaneous"},
    {"level": 1, "reason": None},
    {"input": "touch", "clock_synced": False, "rated_at": "2026-11-25T10:31:07+08:00"},
    {"staff": {"staff_id": None, "staff_name": None}},
    {"case": {"case_id": "C1"}},
    {"rated_at": "2000-01-01T08:00:00+08:00"},          # the first instant accepted
    {"rated_at": "2099-12-31T23:59:59.999999-00:00"},   # the last
])
def test_valid_variants(changes: dict[str, Any]) -> None:
    record = make_rating(DEVICE, level=5)
    record.update(changes)
    parse_rating(encode(record), DEVICE)


def test_absent_nullable_fields_read_as_null() -> None:
    record = make_rating(DEVICE, level=4, trigger="spontaneous")
    for key in ("reason", "case", "staff"):
        del record[key]
    parse_rating(encode(record), DEVICE)


@pytest.mark.parametrize(("changes", "reason", "words"), [
    ({"level": 9}, "bad_field", "level"),
    ({"level": 0}, "bad_field", "level"),
    ({"level": True}, "bad_field", "level"),
    ({"level": 4.0}, "bad_field", "level"),
    ({"level": "5"}, "bad_field", "level"),
    ({"schema": "hcp.rating/2"}, "bad_schema", "schema"),
    ({"seq": -1}, "bad_field", "seq"),
    ({"rating_id": "5F0C1D2E8A9B4C7D9E1F2A3B4C5D6E7F"}, "bad_field", "rating_id"),
    ({"device_id": "bad id"}, "bad_field", "device_id"),
    ({"region_code": ""}, "bad_field", "region_code"),
    ({"trigger": "auto"}, "bad_field", "trigger"),
    ({"input": "voice"}, "bad_field", "input"),
    ({"trigger": "case", "case": None}, "bad_field", "case"),
    ({"trigger": "spontaneous"}, "bad_field", "spontaneous"),
    ({"case": {"case_id": ""}}, "bad_field", "case_id"),
    ({"case": {"case_id": "C1", "applicant_id": "420100199001011234"}}, "bad_schema",
     "applicant_id"),
    ({"staff": {"staff_id": "S1", "staff_name": "x" * 33}}, "bad_field", "staff_name"),
    ({"reason": "R99 bad"}, "bad_field", "reason"),
    ({"rated_at": "yesterday"}, "bad_field", "rated_at"),
    ({"rated_at": "2026-11-25T02:31:07"}, "bad_field", "rated_at"),
    ({"rated_at": "0001-01-01T00:00:00+14:00"}, "bad_field", "rated_at is outside"),
    ({"seq": 2**53}, "bad_field", "seq must be an integer 0..2^53-1"),
    ({"seq": 10**400}, "bad_field", "got an integer of about 401 digits"),
    ({"rated_at": "9999-12-31T23:59:59-14:00"}, "bad_field", "rated_at is outside"),
    ({"rated_at": "1999-12-31T23:59:59.999999Z"}, "bad_field", "rated_at is outside"),
    ({"rated_at": "2100-01-01T08:00:00+08:00"}, "bad_field", "rated_at is outside"),
    ({"clock_synced": "yes"}, "bad_field", "clock_synced"),
    ({"phone": "13800000000"}, "bad_schema", "phone"),
])
def test_invalid_fields_are_refused_with_a_reason(changes: dict[str, Any], reason: str,
                                                  words: str) -> None:
    record = make_rating(DEVICE, level=2)
    record.update(changes)
    error = refused(encode(record))
    assert error.reason == reason
    assert words in error.detail
    if changes.keys() != {"rating_id"}:
        assert error.rating_id == record["rating_id"]


def test_a_reason_on_a_good_rating_is_refused() -> None:
    error = refused(encode(make_rating(DEVICE, level=5, reason="R01")))
    assert error.reason == "bad_field" and "level 5" in error.detail


def test_missing_field() -> None:
    record = make_rating(DEVICE)
    del record["rated_at"]
    error = refused(encode(record))
    assert error.reason == "bad_schema" and "rated_at" in error.detail


def test_spoofed_device_in_the_topic() -> None:
    record = make_rating("421100-HG01-W01")
    error = refused(encode(record), topic_device=DEVICE)
    assert error.reason == "device_mismatch"
    assert error.rating_id == record["rating_id"]


def test_oversized_payload_is_refused_unparsed_but_its_rating_id_is_read() -> None:
    record = make_rating(DEVICE, padding="x" * 1_000_000)
    error = refused(encode(record))
    assert error.reason == "too_large" and str(len(encode(record))) in error.detail
    assert error.rating_id == record["rating_id"]


def test_a_record_wrapped_in_an_array_is_refused_with_its_rating_id() -> None:
    record = make_rating(DEVICE)
    error = refused(b"[" + encode(record) + b"]")
    assert error.reason == "bad_json" and "not an object" in error.detail
    assert error.rating_id == record["rating_id"]  # so the device gets a rejected receipt


def test_payload_of_exactly_8_kib_is_not_too_large() -> None:
    payload = encode(make_rating(DEVICE))
    payload = payload[:-1] + b" " * (MAX_PAYLOAD_BYTES - len(payload)) + b"}"
    assert len(payload) == MAX_PAYLOAD_BYTES
    parse_rating(payload, DEVICE)
    assert refused(payload[:-1] + b" }").reason == "too_large"


@pytest.mark.parametrize(("payload", "reason"), [
    (b"{not json", "bad_json"),
    (b"", "bad_json"),
    (b"[1, 2]", "bad_json"),
    (b"\xff\xfe{}", "bad_utf8"),
    (b"\xef\xbb\xbf{}", "bad_json"),                       # UTF-8 BOM
    (b'{"level": NaN}', "bad_json"),
    (b'{"level": 5, "level": 9}', "bad_json"),             # repeated key
    (b"[" * 4000 + b"]" * 4000, "bad_json"),               # deep nesting
    (b'{"level": 1' + b"0" * 5000 + b"}", "bad_json"),     # int() digit limit
])
def test_undecodable_payloads(payload: bytes, reason: str) -> None:
    assert refused(payload).reason == reason


def test_rating_id_is_read_from_broken_json_when_present() -> None:
    record = make_rating(DEVICE)
    error = refused(encode(record)[:-5])
    assert error.reason == "bad_json"
    assert error.rating_id == record["rating_id"]


def test_lone_surrogate_is_not_text() -> None:
    payload = encode(make_rating(DEVICE)).replace("王芳".encode(), b"\\ud800")
    error = refused(payload)
    assert error.reason == "bad_field" and "staff_name" in error.detail
    emoji = encode(make_rating(DEVICE)).replace("王芳".encode(), b"\\ud83d\\ude00")
    parse_rating(emoji, DEVICE)


def test_check_record_refuses_non_objects() -> None:
    with pytest.raises(InvalidRecord):
        check_record(["not", "a", "record"])


def test_scan_rating_id() -> None:
    assert scan_rating_id(b'{"x": 1, "rating_id" : "' + b"a" * 32 + b'"') == "a" * 32
    assert scan_rating_id(b'{"rating_id": "ABC"}') is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash_the_parser(payload: bytes) -> None:
    try:
        parse_rating(payload, DEVICE)
    except InvalidRecord as e:
        assert e.reason in {"bad_json", "bad_utf8", "bad_schema", "bad_field",
                            "device_mismatch", "too_large"}


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(make_rating(DEVICE))),
                       st.none() | st.booleans() | st.integers() | st.text(max_size=20)
                       | st.lists(st.integers(), max_size=2), max_size=8))
def test_mutated_records_are_refused_or_valid_never_crash(changes: dict[str, Any]) -> None:
    record = {**make_rating(DEVICE, level=2), **changes}
    try:
        rating = parse_rating(json.dumps(record).encode(), DEVICE)
    except InvalidRecord:
        return
    assert 1 <= rating.level <= 5 and rating.device_id == DEVICE
