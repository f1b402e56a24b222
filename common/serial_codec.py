"""The window ⇄ evaluator serial protocol (SPEC §4): framing, CRC and field checks.

Pure functions over bytes: the serial driver splits the stream into lines, this module
decides what each line means and which answer (if any) it deserves.
"""

from __future__ import annotations

import binascii
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

MAX_LINE = 4096
WINDOW_TYPES = frozenset(
    {"case_completed", "cancel", "staff_login", "staff_logout", "pause", "resume", "ping"})
_CRC_RE = re.compile(rb"[0-9A-Fa-f]{4}")

# The fields the evaluator keeps per frame type; anything else is dropped unread so a
# window system's extra personal data (names, ID numbers, phones) cannot leak.
CASE_FIELDS = ("case_id", "service_code", "service_name", "dept_code", "staff_id",
               "staff_name", "completed_at")
FIELD_LIMITS = {
    "case_id": 64, "service_code": 64, "service_name": 128, "dept_code": 64,
    "staff_id": 64, "staff_name": 32, "completed_at": 40, "reason": 64,
}
KEPT_FIELDS: dict[str, tuple[str, ...]] = {
    "case_completed": CASE_FIELDS,
    "cancel": ("case_id",),
    "staff_login": ("staff_id", "staff_name"),
    "staff_logout": (),
    "pause": ("reason",),
    "resume": (),
    "ping": (),
}
REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "case_completed": ("case_id",),
    "cancel": ("case_id",),
}


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF); crc16(b"123456789") == 0x29B1."""
    return binascii.crc_hqx(data, 0xFFFF)


def encode_frame(frame: dict[str, Any]) -> bytes:
    """One wire line: compact JSON, '*', four uppercase hex CRC digits, newline."""
    body = json.dumps(frame, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return body + b"*" + f"{crc16(body):04X}".encode() + b"\n"


@dataclass(frozen=True)
class Frame:
    """A well-formed frame from the window: type, seq and only the fields we keep."""

    type: str
    seq: int
    fields: dict[str, Any]


@dataclass(frozen=True)
class Rejected:
    """A line that is not a usable frame.

    `error` is the serial error kind counted in telemetry (crc, utf8, json, too_long, …);
    `nak` is the code to answer with, or None when the line gets no answer at all.
    """

    error: str
    detail: str
    seq: int | None = None
    nak: str | None = None


def _read_seq(obj: Any) -> int | None:
    if isinstance(obj, dict):
        seq = obj.get("seq")
        if isinstance(seq, int) and not isinstance(seq, bool):
            return seq
    return None


def decode_line(line: bytes, require_crc: bool = True) -> Frame | Rejected:
    """Decode one line (without its '\\n'). Never raises.

    The 4096-byte limit applies to the frame itself: a tolerated trailing '\\r' is not
    counted, so a maximal frame is still accepted from a window system that ends lines
    with CRLF.
    """
    size = len(line) - (1 if line.endswith(b"\r") else 0)
    if size > MAX_LINE:
        return Rejected("too_long", f"{size} bytes > {MAX_LINE}")
    line = line[:size]
    body = line
    star = line.rfind(b"*")
    # fullmatch: re's "$" would also match before a trailing newline.
    has_crc = star >= 0 and _CRC_RE.fullmatch(line[star + 1:]) is not None
    if has_crc:
        body = line[:star]
        want = int(line[star + 1:], 16)
        got = crc16(body)
        if want != got:
            return Rejected("crc", f"CRC {want:04X} in frame, {got:04X} computed")
    elif require_crc:
        return Rejected("no_crc", "frame has no *CRC suffix")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        # A CRC-valid line whose seq we cannot read: no answer is possible.
        return Rejected("utf8", f"bad UTF-8 at byte {e.start}")
    try:
        obj = json.loads(text)
    except RecursionError:
        return Rejected("json", "bad JSON: too deeply nested")
    except ValueError as e:
        # JSONDecodeError, and the int-digits limit of int() that json also raises.
        return Rejected("json", f"bad JSON: {getattr(e, 'msg', 'invalid value')}")
    seq = _read_seq(obj)
    if not isinstance(obj, dict) or seq is None or not isinstance(obj.get("type"), str):
        return Rejected("bad_frame", "not a JSON object with string type and integer seq",
                        seq=seq, nak="bad_frame" if seq is not None else None)
    ftype = obj["type"]
    if ftype not in WINDOW_TYPES:
        return Rejected("unknown_type", f"unknown type {ftype[:40]!r}", seq=seq,
                        nak="unknown_type")
    fields: dict[str, Any] = {}
    for name in KEPT_FIELDS[ftype]:
        if name not in obj or obj[name] is None:
            continue
        value = obj[name]
        if not isinstance(value, str):
            return Rejected("bad_field", f"{name} must be a string", seq=seq, nak="bad_field")
        if not _encodable(value):
            # A lone surrogate (JSON "\ud800") is valid JSON but cannot be re-encoded as
            # UTF-8: it would break the outbox and the MQTT publish much later.
            return Rejected("bad_field", f"{name} is not valid Unicode text", seq=seq,
                            nak="bad_field")
        limit = FIELD_LIMITS[name]
        if len(value) > limit:
            return Rejected("bad_field", f"{name} longer than {limit} characters", seq=seq,
                            nak="bad_field")
        fields[name] = value
    for name in REQUIRED_FIELDS.get(ftype, ()):
        if not fields.get(name, "").strip():
            return Rejected("bad_field", f"{name} is required", seq=seq, nak="bad_field")
    if "completed_at" in fields and not _iso8601(fields["completed_at"]):
        return Rejected("bad_field", "completed_at must be ISO-8601", seq=seq, nak="bad_field")
    return Frame(ftype, seq, fields)


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _iso8601(value: str) -> bool:
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def ack(seq: int) -> dict[str, Any]:
    return {"type": "ack", "seq": seq}


def nak(seq: int, error: str) -> dict[str, Any]:
    return {"type": "nak", "seq": seq, "error": error}
