"""What `hcp-sim window` puts on the wire: the frame (or raw line) that a command line or
an interactive prompt line names, with its seq, CRC mode and generated case_id; a line
that names none is a UsageError with one line for the user.
"""

from __future__ import annotations

import argparse
import difflib
import json
import random
import shlex
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NoReturn

from common.serial_codec import WINDOW_TYPES, frame_line
from common.text import is_utf8
from simulator.windowlink import CrcMode, Sent, encode, inspect_line, time_seq

# In the order of SPEC §4, for help texts and suggestions.
FRAME_TYPES = ("case_completed", "cancel", "staff_login", "staff_logout", "pause", "resume",
               "ping", "raw")


class UsageError(Exception):
    """A command line that cannot be run; the message is one line for the user."""


class Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of printing and exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


# --- building the frame ---------------------------------------------------------------

@dataclass(frozen=True)
class Request:
    """What to put on the wire: a frame (with its CRC mode) or a raw line."""

    frame: dict[str, Any] | None
    raw: bytes | None = None
    crc: CrcMode = "ok"

    @property
    def claimed(self) -> dict[str, Any]:
        """The frame as the evaluator would read it (parsed back for a raw line)."""
        if self.frame is not None:
            return self.frame
        parsed = inspect_line((self.raw or b"").rstrip(b"\n"), require_crc=False).frame
        return parsed or {}

    @property
    def seq(self) -> int | None:
        seq = self.claimed.get("seq")
        return seq if isinstance(seq, int) and not isinstance(seq, bool) else None

    @property
    def case_id(self) -> str | None:
        claimed = self.claimed
        case_id = claimed.get("case_id")
        if claimed.get("type") == "case_completed" and isinstance(case_id, str):
            return case_id
        return None

    def encoded(self) -> Sent:
        if self.frame is not None:
            return encode(self.frame, self.crc)
        return Sent(self.raw or b"\n", None, None, None)


def generated_case_id(now: datetime | None = None) -> str:
    """SIM-YYYYMMDD-HHMMSS-xxxx: readable in the evaluator's log, unique enough per run."""
    now = now or datetime.now()
    return f"SIM-{now:%Y%m%d-%H%M%S}-{random.getrandbits(16):04x}"


def parse_fields(tokens: list[str]) -> dict[str, Any]:
    """`name=text` gives a string; `name:=json` a JSON value (to test bad fields)."""
    fields: dict[str, Any] = {}
    for token in tokens:
        name, sep, value = token.partition("=")
        if not sep or not name or name == ":":
            raise UsageError(f"expected field=value, got {token!r}")
        if not is_utf8(token):
            raise UsageError(f"field {name.rstrip(':')!r} holds bytes that are not UTF-8; "
                             "use raw to send such a line")
        if name.endswith(":"):
            try:
                fields[name[:-1]] = json.loads(value)
            except ValueError:
                raise UsageError(f"{name[:-1]}:= needs a JSON value, got {value!r}") from None
        else:
            fields[name] = value
    return fields


def build_request(frame_type: str, tokens: list[str], seq: int | None = None,
                  crc: CrcMode = "ok", add_crc: bool = False) -> Request:
    if frame_type == "raw":
        if seq is not None:
            raise UsageError("--seq does not apply to raw (the line is sent as given)")
        if crc != "ok":
            raise UsageError("--bad-crc/--no-crc do not apply to raw; use --add-crc or "
                             "write the CRC yourself")
        if not tokens:
            raise UsageError("raw needs the line to send")
        # Bytes that are not UTF-8 reach argv (and input()) as surrogates: send them as typed.
        body = " ".join(tokens).encode("utf-8", "surrogateescape")
        return Request(None, frame_line(body).line if add_crc else body + b"\n")
    if add_crc:
        raise UsageError("--add-crc only applies to raw")
    if frame_type not in WINDOW_TYPES:
        close = difflib.get_close_matches(frame_type, FRAME_TYPES, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise UsageError(f"unknown frame type {frame_type!r}{hint}; one of: "
                         f"{', '.join(FRAME_TYPES)}")
    fields = parse_fields(tokens)
    frame: dict[str, Any] = {"type": fields.pop("type", frame_type),
                             "seq": fields.pop("seq", time_seq() if seq is None else seq)}
    if frame_type == "case_completed":
        frame["case_id"] = fields.pop("case_id") if "case_id" in fields else generated_case_id()
        fields.setdefault("completed_at",
                          datetime.now().astimezone().isoformat(timespec="seconds"))
    frame.update(fields)
    return Request(frame, None, crc)


def crc_mode(bad_crc: bool, no_crc: bool) -> CrcMode:
    return "bad" if bad_crc else "none" if no_crc else "ok"


def line_parser() -> Parser:
    p = Parser(prog="", add_help=False, allow_abbrev=False)
    p.add_argument("--seq", type=int)
    crc = p.add_mutually_exclusive_group()
    crc.add_argument("--bad-crc", action="store_true")
    crc.add_argument("--no-crc", action="store_true")
    p.add_argument("type")
    p.add_argument("fields", nargs="*")
    return p


def interactive_request(text: str) -> Request | None:
    """One prompt line as a request; None for an empty line. Raises UsageError."""
    text = text.strip()
    if not text:
        return None
    if text == "raw" or text.startswith("raw "):
        line = text[3:].strip()
        add_crc = line.endswith(" --add-crc") or line == "--add-crc"
        if add_crc:
            line = line[:-len("--add-crc")].rstrip()
        return build_request("raw", [line] if line else [], add_crc=add_crc)
    try:
        tokens = shlex.split(text)
    except ValueError as e:
        raise UsageError(str(e)) from None
    args = line_parser().parse_intermixed_args(tokens)
    return build_request(args.type, args.fields, args.seq,
                         crc_mode(args.bad_crc, args.no_crc))
