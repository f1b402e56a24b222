"""The serial frame codec (SPEC §4): CRC, framing, every kind of rejection, field filtering."""

from __future__ import annotations

import json
from typing import Any

import pytest

from common.serial_codec import (
    MAX_LINE,
    Frame,
    Rejected,
    ack,
    crc16,
    decode_line,
    encode_frame,
    nak,
)


def line_of(frame: dict[str, Any]) -> bytes:
    """An encoded frame as the reader delivers it: without its newline."""
    encoded = encode_frame(frame)
    assert encoded.endswith(b"\n")
    return encoded[:-1]


def with_crc(body: bytes) -> bytes:
    return body + b"*" + f"{crc16(body):04X}".encode()


CASE = {
    "type": "case_completed", "seq": 7, "case_id": "HB-2026-000123",
    "service_code": "11421100MB1234567X", "service_name": "不动产登记（首次登记）",
    "dept_code": "421100-ZRZY", "staff_id": "S0042", "staff_name": "王晓梅",
    "completed_at": "2026-11-25T10:31:07+08:00",
}


def test_crc_check_value() -> None:
    assert crc16(b"123456789") == 0x29B1


def test_encoded_frame_is_one_line_with_uppercase_crc_over_the_json() -> None:
    encoded = encode_frame({"type": "ping", "seq": 1})
    body, crc = encoded.rstrip(b"\n").rsplit(b"*", 1)
    assert encoded.count(b"\n") == 1
    assert json.loads(body) == {"type": "ping", "seq": 1}
    assert crc == f"{crc16(body):04X}".encode() and crc == crc.upper() and len(crc) == 4


def test_round_trip_with_chinese_text() -> None:
    result = decode_line(line_of(CASE))
    assert result == Frame("case_completed", 7, {k: v for k, v in CASE.items()
                                                 if k not in ("type", "seq")})
    # The Chinese travels as UTF-8, not as \u escapes.
    assert "不动产登记".encode() in encode_frame(CASE)


def test_trailing_carriage_return_is_tolerated() -> None:
    assert decode_line(line_of({"type": "ping", "seq": 3}) + b"\r") == Frame("ping", 3, {})


def test_lowercase_crc_digits_are_accepted() -> None:
    body = b'{"type":"ping","seq":4}'
    assert decode_line(body + b"*" + f"{crc16(body):04x}".encode()) == Frame("ping", 4, {})


def test_bare_json_only_when_crc_not_required() -> None:
    bare = b'{"type":"ping","seq":9}'
    assert decode_line(bare, require_crc=False) == Frame("ping", 9, {})
    rejected = decode_line(bare, require_crc=True)
    assert isinstance(rejected, Rejected)
    assert (rejected.error, rejected.nak, rejected.seq) == ("no_crc", None, None)


def test_a_wrong_crc_is_rejected_even_when_crc_is_not_required() -> None:
    line = b'{"type":"ping","seq":9}*0000'
    for require_crc in (True, False):
        rejected = decode_line(line, require_crc=require_crc)
        assert isinstance(rejected, Rejected)
        # Its seq cannot be trusted: no answer at all.
        assert (rejected.error, rejected.nak, rejected.seq) == ("crc", None, None)


def test_a_crc_followed_by_a_newline_is_not_a_crc() -> None:
    # decode_line gets lines without '\n'; one that still has it is not silently accepted.
    result = decode_line(encode_frame({"type": "ping", "seq": 1}))
    assert isinstance(result, Rejected) and result.error == "no_crc"


def padded_ping(total: int) -> bytes:
    """A valid ping line of exactly `total` bytes (frame with CRC, without newline)."""
    skeleton = line_of({"type": "ping", "seq": 1, "pad": ""})
    pad = "x" * (total - len(skeleton))
    line = line_of({"type": "ping", "seq": 1, "pad": pad})
    assert len(line) == total
    return line


def test_frame_of_exactly_max_line_is_accepted_also_with_crlf() -> None:
    line = padded_ping(MAX_LINE)
    assert decode_line(line) == Frame("ping", 1, {})
    assert decode_line(line + b"\r") == Frame("ping", 1, {})


def test_frame_one_byte_too_long_is_rejected_without_answer() -> None:
    for line in (padded_ping(MAX_LINE + 1), padded_ping(MAX_LINE + 1) + b"\r",
                 b"x" * 1_000_000):
        rejected = decode_line(line)
        assert isinstance(rejected, Rejected)
        assert (rejected.error, rejected.nak) == ("too_long", None)


def test_bad_utf8_with_valid_crc_gets_no_answer() -> None:
    rejected = decode_line(with_crc(b'{"type":"ping","seq":5,"x":"\xff\xfe"}'))
    assert isinstance(rejected, Rejected)
    assert (rejected.error, rejected.nak, rejected.seq) == ("utf8", None, None)


@pytest.mark.parametrize("body", [
    b'{"type":"ping","seq":5',          # truncated
    b"not json at all",
    b"",
    b"[" * 3000,                         # nested deeper than the parser allows
    b"[" * 1500 + b"]" * 1500,           # well-formed but deeper than the recursion limit
])
def test_bad_json_with_valid_crc_gets_no_answer(body: bytes) -> None:
    rejected = decode_line(with_crc(body))
    assert isinstance(rejected, Rejected)
    assert (rejected.error, rejected.nak, rejected.seq) == ("json", None, None)


@pytest.mark.parametrize("body", [
    b"[1,2,3]", b'"ping"', b"42", b"null",
    b'{"type":"ping","seq":9223372036854775808}',    # 2**63: not a counter's value
    b'{"type":"ping","seq":-9223372036854775809}',
    b'{"type":"ping","seq":' + b"9" * 4000 + b"}",
    b'{"type":"ping","seq":1,"seq":2}',  # which one would the window expect back?
    b'{"type":"ping"}',                  # no seq
    b'{"type":"ping","seq":"5"}',        # seq not an integer
    b'{"type":"ping","seq":true}',       # a bool is not a seq
    b'{"type":"ping","seq":5.0}',
])
def test_bad_frame_without_readable_seq_gets_no_answer(body: bytes) -> None:
    rejected = decode_line(with_crc(body))
    assert isinstance(rejected, Rejected)
    assert (rejected.error, rejected.nak, rejected.seq) == ("bad_frame", None, None)


@pytest.mark.parametrize("body", [
    b'{"seq":12}',                       # no type
    b'{"type":5,"seq":12}',              # type not a string
    b'{"type":null,"seq":12}',
    b'{"type":"ping","seq":12,"type":"cancel"}',  # type given twice
])
def test_bad_frame_with_readable_seq_is_nakked(body: bytes) -> None:
    rejected = decode_line(with_crc(body))
    assert isinstance(rejected, Rejected)
    assert (rejected.error, rejected.nak, rejected.seq) == ("bad_frame", "bad_frame", 12)


@pytest.mark.parametrize("ftype", ["ack", "hello", "rated", "CASE_COMPLETED", ""])
def test_unknown_type_is_nakked(ftype: str) -> None:
    rejected = decode_line(line_of({"type": ftype, "seq": 21}))
    assert isinstance(rejected, Rejected)
    assert (rejected.error, rejected.nak, rejected.seq) == ("unknown_type", "unknown_type", 21)


@pytest.mark.parametrize(("change", "field"), [
    ({"case_id": 12345}, "case_id"),
    ({"case_id": ["A"]}, "case_id"),
    ({"case_id": "A" * 65}, "case_id"),
    ({"case_id": "   "}, "case_id"),
    ({"service_name": "名" * 129}, "service_name"),
    ({"staff_name": "名" * 33}, "staff_name"),
    ({"completed_at": "yesterday afternoon"}, "completed_at"),
    ({"completed_at": "2026-13-01T10:00:00"}, "completed_at"),
    ({"completed_at": 1764037867}, "completed_at"),
    ({"service_name": "\ud800"}, "service_name"),   # lone surrogate: not storable text
])
def test_bad_field_is_nakked(change: dict[str, Any], field: str) -> None:
    # ASCII-escaped JSON: a lone surrogate cannot even be encoded as UTF-8.
    rejected = decode_line(with_crc(json.dumps({**CASE, **change}).encode()))
    assert isinstance(rejected, Rejected)
    assert (rejected.error, rejected.nak, rejected.seq) == ("bad_field", "bad_field", 7)
    assert field in rejected.detail


def test_missing_case_id_is_nakked() -> None:
    for ftype in ("case_completed", "cancel"):
        rejected = decode_line(line_of({"type": ftype, "seq": 8, "service_name": "户籍"}))
        assert isinstance(rejected, Rejected)
        assert (rejected.error, rejected.nak, rejected.seq) == ("bad_field", "bad_field", 8)


def test_case_id_of_64_characters_is_accepted() -> None:
    result = decode_line(line_of({"type": "cancel", "seq": 2, "case_id": "办" * 64}))
    assert result == Frame("cancel", 2, {"case_id": "办" * 64})


def test_null_optional_fields_are_dropped() -> None:
    result = decode_line(line_of({**CASE, "staff_name": None, "dept_code": None}))
    assert isinstance(result, Frame)
    assert "staff_name" not in result.fields and "dept_code" not in result.fields


def test_personal_data_and_unlisted_fields_are_dropped() -> None:
    frame = {**CASE, "applicant_name": "张三", "id_number": "420102199001011234",
             "phone": "13800138000", "extra": {"nested": True}}
    result = decode_line(line_of(frame))
    assert isinstance(result, Frame)
    assert set(result.fields) == {"case_id", "service_code", "service_name", "dept_code",
                                  "staff_id", "staff_name", "completed_at"}
    kept = json.dumps(result.fields, ensure_ascii=False)
    for secret in ("张三", "420102199001011234", "13800138000"):
        assert secret not in kept


def test_each_type_keeps_only_its_own_fields() -> None:
    everything = {k: v for k, v in CASE.items() if k not in ("type", "seq")}
    everything["reason"] = "午休"
    expected = {
        "cancel": {"case_id"},
        "staff_login": {"staff_id", "staff_name"},
        "staff_logout": set(),
        "pause": {"reason"},
        "resume": set(),
        "ping": set(),
    }
    for ftype, kept in expected.items():
        result = decode_line(line_of({"type": ftype, "seq": 1, **everything}))
        assert isinstance(result, Frame), ftype
        assert set(result.fields) == kept, ftype


def test_rejection_details_never_repeat_field_values() -> None:
    # Details go to the logs; a window system's data must not.
    frame = {**CASE, "staff_name": "张三" * 20}
    rejected = decode_line(line_of(frame))
    assert isinstance(rejected, Rejected)
    assert "张三" not in rejected.detail


def test_ack_and_nak_frames() -> None:
    assert decode_ack(encode_frame(ack(41))) == {"type": "ack", "seq": 41}
    assert decode_ack(encode_frame(nak(42, "queue_full"))) == {
        "type": "nak", "seq": 42, "error": "queue_full"}


def decode_ack(encoded: bytes) -> dict[str, Any]:
    body, crc = encoded.rstrip(b"\n").rsplit(b"*", 1)
    assert int(crc, 16) == crc16(body)
    result: dict[str, Any] = json.loads(body)
    return result


def test_seq_at_the_ends_of_the_64_bit_range_is_answered() -> None:
    for seq in (-(2**63), 2**63 - 1, 0):
        assert decode_line(line_of({"type": "ping", "seq": seq})) == Frame("ping", seq, {})


# -- text from the window: normalised for the screen, or refused (issue 17) ---------------

@pytest.mark.parametrize(("ftype", "field", "sent", "kept"), [
    ("case_completed", "service_name", "不动产登记\r\n", "不动产登记"),
    ("case_completed", "service_name", "户籍\u2028迁移\u2029（省内）", "户籍 迁移 （省内）"),
    ("case_completed", "staff_name", "王\t晓梅\x00", "王 晓梅"),
    ("staff_login", "staff_name", "\u202e王晓梅\u200b", "王晓梅"),
    ("pause", "reason", "午休\x1b[2J\x07", "午休 [2J"),
    ("pause", "reason", "\r\n", ""),
])
def test_display_texts_are_normalised(ftype: str, field: str, sent: str, kept: str) -> None:
    frame = {"type": ftype, "seq": 3, field: sent}
    if ftype == "case_completed":
        frame["case_id"] = "HB-1"
    result = decode_line(line_of(frame))
    assert isinstance(result, Frame)
    assert result.fields[field] == kept


@pytest.mark.parametrize(("ftype", "field", "sent"), [
    ("case_completed", "case_id", "HB-1\nINFO forged log line"),
    ("cancel", "case_id", "HB-1\r"),
    ("case_completed", "case_id", "HB\u202e1"),        # a bidi override hides the real key
    ("case_completed", "case_id", "HB\u20281"),
    ("case_completed", "service_code", "11421100\x00MB"),
    ("case_completed", "dept_code", "ZRZY\u200b"),
    ("staff_login", "staff_id", "S0042\x7f"),
    ("case_completed", "completed_at", "2026-11-25\x0010:31:07"),  # fromisoformat takes it
])
def test_identifiers_with_control_characters_are_refused(ftype: str, field: str,
                                                         sent: str) -> None:
    # They are keys to the business system: changed, the rated frame would name a case
    # the window never sent.
    frame = {"type": ftype, "seq": 4, field: sent}
    if field != "case_id" and ftype != "staff_login":
        frame["case_id"] = "HB-1"
    rejected = decode_line(line_of(frame))
    assert isinstance(rejected, Rejected)
    assert (rejected.error, rejected.nak, rejected.seq) == ("bad_field", "bad_field", 4)
    assert rejected.detail.startswith(field) and sent not in rejected.detail


def test_identifiers_keep_their_spaces_exactly() -> None:
    result = decode_line(line_of({"type": "cancel", "seq": 1, "case_id": " HB 2026  01 "}))
    assert result == Frame("cancel", 1, {"case_id": " HB 2026  01 "})


@pytest.mark.parametrize(("sent", "why"), [
    ("0001-01-01T00:00:00+14:00", "year 1 is outside 2000..2099"),
    ("9999-12-31T23:59:59-14:00", "year 9999"),
    ("1970-01-01T08:00:00+08:00", "year 1970"),
    ("2026-11-25T10:31:07+15:00", "UTC offset"),
    ("2026-11-25T10:31:07+08:00:30", "UTC offset"),
])
def test_completed_at_outside_a_sane_range_is_refused_with_the_reason(sent: str,
                                                                      why: str) -> None:
    rejected = decode_line(line_of({**CASE, "completed_at": sent}))
    assert isinstance(rejected, Rejected)
    assert (rejected.error, rejected.nak) == ("bad_field", "bad_field")
    assert rejected.detail.startswith("completed_at") and why in rejected.detail


@pytest.mark.parametrize("sent", ["2000-01-01T00:00:00+14:00", "2099-12-31T23:59:59-12:00",
                                  "2026-11-25T02:31:07Z", "2026-11-25T10:31:07",
                                  "2026-11-25"])
def test_completed_at_within_the_range_is_kept_as_sent(sent: str) -> None:
    result = decode_line(line_of({**CASE, "completed_at": sent}))
    assert isinstance(result, Frame) and result.fields["completed_at"] == sent


def test_a_kept_field_given_twice_is_refused() -> None:
    body = b'{"type":"cancel","seq":6,"case_id":"A","case_id":"B"}'
    rejected = decode_line(with_crc(body))
    assert isinstance(rejected, Rejected)
    assert (rejected.error, rejected.nak, rejected.seq) == ("bad_field", "bad_field", 6)
    assert rejected.detail == "case_id given twice"


def test_an_ignored_field_given_twice_is_still_ignored() -> None:
    body = b'{"type":"cancel","seq":6,"case_id":"A","phone":"1","phone":"2"}'
    assert decode_line(with_crc(body)) == Frame("cancel", 6, {"case_id": "A"})


def test_an_unknown_type_is_not_repeated_in_the_detail() -> None:
    # The type can hold anything, a citizen's name included; the detail goes to the log
    # and to the serial_error event.
    rejected = decode_line(line_of({"type": "申请人张三 420102199001011234", "seq": 5}))
    assert isinstance(rejected, Rejected) and rejected.nak == "unknown_type"
    assert "张三" not in rejected.detail and "4201" not in rejected.detail
    looped = decode_line(line_of({"type": "rated", "seq": 5}))
    assert isinstance(looped, Rejected) and "'rated'" in looped.detail
