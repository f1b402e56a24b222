"""Text the platform's store cannot keep is refused by the record check the bridge runs,
so the bridge dead-letters it (naming the field and the reason) instead of forwarding a
record the platform then refuses. Property: every record `check_record` accepts, the
platform's per-record check accepts too."""

from __future__ import annotations

import json
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from city_platform.records import Incoming, read_record
from common.rating import (
    CASE_FIELDS,
    STAFF_FIELDS,
    InvalidRecord,
    check_record,
    is_text,
    parse_rating,
)
from tests.support.ratings import make_rating

DEVICE = "421100-HG01-W03"
TZ = ZoneInfo("Asia/Shanghai")
LOCATION = ("region_code", "hall_id", "window_id")
TEXT_FIELDS = [*LOCATION, *(f"case.{k}" for k in CASE_FIELDS),
               *(f"staff.{k}" for k in STAFF_FIELDS)]


def with_value(record: dict[str, Any], field: str, value: Any) -> dict[str, Any]:
    outer, _, inner = field.partition(".")
    if inner:
        record[outer] = {**record[outer], inner: value}
    else:
        record[outer] = value
    return record


def dumps(record: dict[str, Any]) -> bytes:
    return json.dumps(record, ensure_ascii=False).encode("utf-8", "surrogatepass")


@pytest.mark.parametrize("field", TEXT_FIELDS)
@pytest.mark.parametrize("text", ["\x00", "C-1\x00", "王\x00芳"])
def test_a_nul_character_in_a_text_field_is_refused_naming_the_field(field: str,
                                                                      text: str) -> None:
    record = with_value(make_rating(DEVICE, level=2), field, text)
    # What the platform does with it (the reason the bridge must not forward it):
    assert not isinstance(read_record(json.loads(dumps(record)), TZ), Incoming)
    with pytest.raises(InvalidRecord) as caught:
        parse_rating(dumps(record), DEVICE)
    error = caught.value
    assert error.reason == "bad_field" and error.rating_id == record["rating_id"]
    assert error.detail.startswith(f"{field} ") and "NUL" in error.detail


@pytest.mark.parametrize("field", TEXT_FIELDS)
def test_a_lone_surrogate_in_a_text_field_is_refused_with_that_reason(field: str) -> None:
    record = with_value(make_rating(DEVICE, level=2), field, "W\ud800")
    with pytest.raises(InvalidRecord) as caught:
        parse_rating(json.dumps(record).encode(), DEVICE)   # "\ud800" as JSON writes it
    assert caught.value.detail.startswith(f"{field} ")
    assert "lone surrogate" in caught.value.detail


@pytest.mark.parametrize("field", TEXT_FIELDS)
def test_other_control_characters_pass_as_the_platform_takes_them(field: str) -> None:
    record = with_value(make_rating(DEVICE, level=2), field, "a\tb\x01\x7f\u2028")
    parse_rating(dumps(record), DEVICE)
    assert isinstance(read_record(json.loads(dumps(record)), TZ), Incoming)


def test_a_prompt_expired_case_id_with_a_nul_is_not_text() -> None:
    """hcp-bridge expired skips such an event (the platform refuses the gov record)."""
    assert is_text("C-1", 64)
    assert not is_text("C-1\x00", 64) and not is_text("C-\ud800", 64)


any_text = st.text(max_size=70) | st.text(st.sampled_from("a王\x00\x01\t\ud800\udfff "),
                                          max_size=8)
any_value = st.none() | st.booleans() | st.integers() | any_text | st.floats(
    allow_nan=False) | st.lists(any_text, max_size=2) | st.dictionaries(any_text, any_text,
                                                                        max_size=2)
ALL_FIELDS = sorted(make_rating(DEVICE)) + TEXT_FIELDS


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(ALL_FIELDS), any_text | any_value), max_size=4),
       st.integers(1, 5))
def test_every_record_the_check_accepts_the_platform_accepts(
        changes: list[tuple[str, Any]], level: int) -> None:
    record = make_rating(DEVICE, level=level)
    for field, value in changes:
        if field.partition(".")[2] and not isinstance(record.get(field.partition(".")[0]),
                                                      dict):
            continue
        with_value(record, field, value)
    try:
        check_record(record)
    except InvalidRecord:
        return
    # The platform decodes the posted JSON: what the bridge forwards, byte for byte.
    result = read_record(json.loads(json.dumps(record)), TZ)
    assert isinstance(result, Incoming), result
