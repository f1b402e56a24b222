"""The window ⇄ evaluator serial protocol (SPEC §4): framing, CRC and field checks.

Pure functions over bytes, for both directions: the daemon decodes what the window sends
(`decode_line`), the technicians' window tool encodes frames (`encode`, also with a
deliberately wrong CRC) and reads the evaluator's replies (`inspect_line`,
`reply_problem`). One codec, so the tool can never disagree with the daemon.

Everything a window system sends is either refused or made safe to show: identifiers
(`case_id`, codes, `staff_id`) with a control, format or separator character are refused,
since they are keys to the business system and must come back exactly as sent; display
texts (`service_name`, `staff_name`, `reason`) are normalised by
`common.text.display_text`. docs/serial.md has the table.
"""

from __future__ import annotations

import binascii
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from common.text import display_text, has_unshowable, is_utf8
from common.urls import url_problem

MAX_LINE = 4096
# A window system's seq is echoed in our ack/nak: any integer type a window PC keeps a
# counter in fits signed 64 bits. Anything larger is not a counter; it is treated like an
# unreadable seq (no answer), so a 4000-digit number never travels further.
SEQ_MIN, SEQ_MAX = -(2**63), 2**63 - 1
WINDOW_TYPES = frozenset(
    {"case_completed", "cancel", "staff_login", "staff_logout", "pause", "resume", "ping"})
EVALUATOR_TYPES = frozenset({"ack", "nak", "hello", "rated", "expired"})
NAK_CODES = frozenset({"bad_frame", "bad_field", "duplicate_case", "queue_full",
                       "unknown_type"})
_CRC_RE = re.compile(rb"[0-9A-Fa-f]{4}")

# The fields the evaluator keeps per frame type; anything else is dropped unread so a
# window system's extra personal data (names, ID numbers, phones) cannot leak.
CASE_FIELDS = ("case_id", "service_code", "service_name", "dept_code", "staff_id",
               "staff_name", "completed_at")
FIELD_LIMITS = {
    "case_id": 64, "service_code": 64, "service_name": 128, "dept_code": 64,
    "staff_id": 64, "staff_name": 32, "completed_at": 40, "reason": 64, "eval_url": 512,
}
KEPT_FIELDS: dict[str, tuple[str, ...]] = {
    # eval_url (SPEC §10): the case's own rating link, shown as a QR code, never stored.
    "case_completed": (*CASE_FIELDS, "eval_url"),
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
# Shown on the screen: normalised (line breaks and other control characters become one
# space). Every other text field is an identifier, kept exactly or refused.
DISPLAY_FIELDS = frozenset({"service_name", "staff_name", "reason"})

# completed_at is the window PC's clock: a PC with a flat CMOS battery may be years off,
# but a year before 2000 or after 2099 is not a time any case was completed, and offsets
# beyond ±14:00 exist nowhere (the edge of the representable range crashed the platform
# side once: issue 17).
EARLIEST_YEAR, LATEST_YEAR = 2000, 2099
MAX_UTC_OFFSET = timedelta(hours=14)

CrcMode = Literal["ok", "bad", "none"]
WRONG_CRC_MASK = 0x5A5A


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF); crc16(b"123456789") == 0x29B1."""
    return binascii.crc_hqx(data, 0xFFFF)


# --- encoding ------------------------------------------------------------------------

@dataclass(frozen=True)
class Encoded:
    """A wire line (with its '\\n'), the frame it carries (None for a raw line), the CRC it
    carries (None for bare JSON) and the correct CRC of its body (None when unknown)."""

    line: bytes
    frame: dict[str, Any] | None
    crc_sent: int | None
    crc_correct: int | None


def frame_line(body: bytes, crc: CrcMode = "ok",
               frame: dict[str, Any] | None = None) -> Encoded:
    """`body` as one wire line: with its correct CRC, a deliberately wrong one (for tests
    that the other side stays silent), or none (bare JSON, as a technician types it)."""
    correct = crc16(body)
    if crc == "none":
        return Encoded(body + b"\n", frame, None, correct)
    sent = correct if crc == "ok" else correct ^ WRONG_CRC_MASK
    return Encoded(body + b"*" + f"{sent:04X}".encode() + b"\n", frame, sent, correct)


def encode(frame: dict[str, Any], crc: CrcMode = "ok") -> Encoded:
    """`frame` as compact UTF-8 JSON on one wire line (see `frame_line`)."""
    body = json.dumps(frame, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return frame_line(body, crc, frame)


def encode_frame(frame: dict[str, Any]) -> bytes:
    """One wire line: compact JSON, '*', four uppercase hex CRC digits, newline."""
    return encode(frame).line


def ack(seq: int) -> dict[str, Any]:
    return {"type": "ack", "seq": seq}


def nak(seq: int, error: str) -> dict[str, Any]:
    return {"type": "nak", "seq": seq, "error": error}


# --- framing (either direction) ----------------------------------------------------------

@dataclass(frozen=True)
class Inspected:
    """A line decoded as far as its framing goes, whichever side sent it.

    `error` is None for a usable envelope (valid CRC, a JSON object with a string `type`
    and an integer `seq` in SEQ_MIN..SEQ_MAX, neither given twice); otherwise the reject
    kind (too_long, crc, no_crc, utf8, json, bad_frame) and `detail` says why. `frame` is
    the JSON object whenever the line parses as one, even with a bad CRC, so that a monitor
    can still show what it claimed to be; `seq` only when it can be trusted for an answer.
    """

    frame: dict[str, Any] | None
    error: str | None = None
    detail: str = ""
    seq: int | None = None
    crc_in_frame: int | None = None    # None: the line carried no *CRC suffix
    crc_computed: int | None = None
    repeated: frozenset[str] = field(default_factory=frozenset)  # keys given twice

    @property
    def ok(self) -> bool:
        return self.error is None


def inspect_line(line: bytes, require_crc: bool = True, peek: bool = True) -> Inspected:
    """Check one line's framing (without its '\\n'). Never raises.

    The 4096-byte limit applies to the frame itself: a tolerated trailing '\\r' is not
    counted, so a maximal frame is still accepted from a window system that ends lines
    with CRLF. With `peek` the JSON of a line with a bad or missing CRC is parsed too (for
    a monitor to show); without, such a line costs no parsing.
    """
    size = len(line) - (1 if line.endswith(b"\r") else 0)
    if size > MAX_LINE:
        return Inspected(None, "too_long", f"{size} bytes > {MAX_LINE}")
    body = line[:size]
    want: int | None = None
    star = body.rfind(b"*")
    # fullmatch: re's "$" would also match before a trailing newline.
    if star >= 0 and _CRC_RE.fullmatch(body[star + 1:]) is not None:
        want = int(body[star + 1:], 16)
        body = body[:star]
    got = crc16(body)
    framing: tuple[str, str] | None = None
    if want is not None and want != got:
        framing = ("crc", f"CRC {want:04X} in frame, {got:04X} computed")
    elif want is None and require_crc:
        framing = ("no_crc", "frame has no *CRC suffix")
    if framing is not None and not peek:
        return Inspected(None, *framing, None, want, got)
    obj, repeated, error, detail = _parse(body)
    frame = obj if isinstance(obj, dict) else None
    if framing is not None:
        # Its seq cannot be trusted: a line failing its CRC gets no answer.
        return Inspected(frame, *framing, None, want, got, repeated)
    if error is not None:
        return Inspected(None, error, detail, None, want, got)
    seq, seq_problem = _read_seq(frame, repeated)
    if frame is None or seq is None or not isinstance(frame.get("type"), str):
        return Inspected(frame, "bad_frame",
                         seq_problem or "not a JSON object with string type and integer seq",
                         seq, want, got, repeated)
    if "type" in repeated:
        return Inspected(frame, "bad_frame", "type given twice", seq, want, got, repeated)
    return Inspected(frame, None, "", seq, want, got, repeated)


def _parse(body: bytes) -> tuple[Any, frozenset[str], str | None, str]:
    """(JSON value, top-level keys given more than once, error kind, detail)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        # A CRC-valid line whose seq we cannot read: no answer is possible.
        return None, frozenset(), "utf8", f"bad UTF-8 at byte {e.start}"
    repeated: list[frozenset[str]] = [frozenset()]

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        # Called innermost first: the last call is for the top-level object.
        counts = Counter(name for name, _ in pairs)
        repeated[0] = frozenset(name for name, n in counts.items() if n > 1)
        return dict(pairs)

    try:
        obj = json.loads(text, object_pairs_hook=pairs_hook)
    except RecursionError:
        return None, frozenset(), "json", "bad JSON: too deeply nested"
    except ValueError as e:
        # JSONDecodeError, and the int-digits limit of int() that json also raises.
        return None, frozenset(), "json", f"bad JSON: {getattr(e, 'msg', 'invalid value')}"
    return obj, repeated[0] if isinstance(obj, dict) else frozenset(), None, ""


def _read_seq(obj: dict[str, Any] | None, repeated: frozenset[str]) -> tuple[int | None, str]:
    """The frame's seq if it can be answered, else None and why (or "" for the usual)."""
    if obj is None:
        return None, ""
    seq = obj.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool):
        return None, ""
    if "seq" in repeated:
        return None, "seq given twice"
    if not SEQ_MIN <= seq <= SEQ_MAX:
        return None, "seq outside the signed 64-bit range"
    return seq, ""


# --- window → evaluator ---------------------------------------------------------------------

@dataclass(frozen=True)
class Frame:
    """A well-formed frame from the window: type, seq and only the fields we keep, each
    within FIELD_LIMITS and free of control, format and separator characters."""

    type: str
    seq: int
    fields: dict[str, Any]


@dataclass(frozen=True)
class Rejected:
    """A line that is not a usable frame.

    `error` is the serial error kind counted in telemetry (crc, utf8, json, too_long, …);
    `nak` is the code to answer with, or None when the line gets no answer at all.
    `detail` names fields, never their values: it goes to the logs and to events.
    """

    error: str
    detail: str
    seq: int | None = None
    nak: str | None = None


def decode_line(line: bytes, require_crc: bool = True) -> Frame | Rejected:
    """Decode one line from the window (without its '\\n'). Never raises."""
    seen = inspect_line(line, require_crc, peek=False)
    if seen.error is not None or seen.frame is None or seen.seq is None:
        answer = "bad_frame" if seen.error == "bad_frame" and seen.seq is not None else None
        return Rejected(seen.error or "bad_frame", seen.detail, seq=seen.seq, nak=answer)
    return window_frame(seen.frame, seen.seq, seen.repeated)


def window_frame(obj: dict[str, Any], seq: int,
                 repeated: frozenset[str] = frozenset()) -> Frame | Rejected:
    """The checks of a window frame's type and fields, after its envelope passed."""
    ftype = obj["type"]
    if ftype not in WINDOW_TYPES:
        return Rejected("unknown_type", f"unknown type {_show_type(ftype)}", seq=seq,
                        nak="unknown_type")
    fields: dict[str, Any] = {}
    for name in KEPT_FIELDS[ftype]:
        if name not in obj or obj[name] is None:
            continue
        problem = _field_problem(name, obj[name], repeated)
        if problem:
            return Rejected("bad_field", f"{name} {problem}", seq=seq, nak="bad_field")
        value: str = obj[name]
        fields[name] = display_text(value) if name in DISPLAY_FIELDS else value
    for name in REQUIRED_FIELDS.get(ftype, ()):
        if not fields.get(name, "").strip():
            return Rejected("bad_field", f"{name} is required", seq=seq, nak="bad_field")
    return Frame(ftype, seq, fields)


def _show_type(ftype: str) -> str:
    # A type can be anything a window system put there, a citizen's name included: only
    # the evaluator's own type names (a sign of a looped-back line) are repeated.
    if ftype in EVALUATOR_TYPES:
        return f"{ftype!r} (a type the evaluator sends)"
    return f"({len(ftype)} characters, not shown)"


def _field_problem(name: str, value: Any, repeated: frozenset[str]) -> str | None:
    """Why a kept field cannot be used, in words that never repeat its value."""
    if name in repeated:
        return "given twice"
    if not isinstance(value, str):
        return "must be a string"
    if not is_utf8(value):
        # A lone surrogate (JSON "\ud800") is valid JSON but cannot be re-encoded as
        # UTF-8: it would break the outbox and the MQTT publish much later.
        return "is not valid Unicode text"
    limit = FIELD_LIMITS[name]
    if len(value) > limit:
        return f"longer than {limit} characters"
    if name not in DISPLAY_FIELDS and has_unshowable(value):
        return "contains a control, format or line-separator character"
    if name == "completed_at":
        return time_problem(value)
    if name == "eval_url":
        return url_problem(value)
    return None


def time_problem(value: str) -> str | None:
    """Why `value` is not a sane ISO-8601 time for completed_at, or None."""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return "must be ISO-8601, e.g. 2026-11-25T10:31:07+08:00"
    if not EARLIEST_YEAR <= moment.year <= LATEST_YEAR:
        return f"year {moment.year} is outside {EARLIEST_YEAR}..{LATEST_YEAR}"
    offset = moment.utcoffset()
    if offset is not None and (abs(offset) > MAX_UTC_OFFSET
                               or offset % timedelta(minutes=1)):
        return "UTC offset must be whole minutes within ±14:00"
    return None


# --- evaluator → window ---------------------------------------------------------------------

# What a window system may rely on in the evaluator's frames (SPEC §4); other fields may
# be added by later versions and are not checked.
_REPLY_TEXT = {"case_id": 64, "rating_id": 64, "device_id": 64, "version": 64}


def reply_problem(frame: dict[str, Any]) -> str | None:
    """Why an evaluator frame (its envelope already checked) breaks SPEC §4, or None.

    For the window tool and tests: a window system reading our frames would trip on it.
    """
    ftype = frame.get("type")
    required = {"nak": ("error",), "rated": ("case_id", "level", "rating_id"),
                "expired": ("case_id",)}.get(str(ftype), ())
    missing = [name for name in required if name not in frame]
    if ftype not in EVALUATOR_TYPES:
        return f"unknown type {_show_type(str(ftype))}"
    if missing:
        return f"{', '.join(missing)} missing"
    if ftype == "nak" and frame["error"] not in NAK_CODES:
        return "error is not one of " + ", ".join(sorted(NAK_CODES))
    level = frame.get("level")
    if "level" in frame and (not isinstance(level, int) or isinstance(level, bool)
                             or not 1 <= level <= 5):
        return "level must be an integer 1..5"
    for name, limit in _REPLY_TEXT.items():
        value = frame.get(name)
        if name in frame and (not isinstance(value, str) or not value or len(value) > limit
                              or not is_utf8(value) or has_unshowable(value)):
            return f"{name} must be text of 1..{limit} showable characters"
    return None
