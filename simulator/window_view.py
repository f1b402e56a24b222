"""What `hcp-sim window` prints: frames described for a technician, each line arriving
judged as the evaluator would judge it (with the evaluator's own codec), as human-readable
lines or one JSON object per line."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any

from common.serial_codec import EVALUATOR_TYPES, KEPT_FIELDS, Rejected, decode_line
from device.core.model import LEVEL_LABELS
from simulator.windowlink import Received, Sent

NAK_MEANING = {
    "bad_frame": "帧格式错误: a CRC-valid line that is not a JSON object with type and seq",
    "bad_field": "字段错误: a field is missing, too long, not a string or given twice, an "
                 "id holds a control character, or completed_at is not an ISO-8601 time "
                 "in 2000..2099",
    "duplicate_case": "案件重复: this case was rated in the last 24 h or is pending",
    "queue_full": "队列已满: 8 cases are already waiting for a rating",
    "unknown_type": "未知类型: the evaluator does not know this frame type",
}
# A line this long is shortened on screen (the whole of it is in --json output).
SHOW_MAX = 240


def _printable(text: str) -> str:
    """Control characters escaped: a line from the wire must not drive the terminal."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" if ord(c) < 256
                   else f"\\u{ord(c):04x}" for c in text)


def show_value(value: Any) -> str:
    if (isinstance(value, str) and value and value.isprintable()
            and not any(c.isspace() or c in "\"=" for c in value)):
        return value
    return _printable(json.dumps(value, ensure_ascii=False))


def show_line(line: bytes) -> str:
    text = _printable(line.rstrip(b"\n").decode("utf-8", "backslashreplace"))
    if len(text) > SHOW_MAX:
        return f"{text[:SHOW_MAX]}… ({len(line)} bytes)"
    return text


def describe(frame: dict[str, Any]) -> str:
    """`type seq=N field=value …`, with the level's label and the nak's meaning."""
    ftype = frame.get("type")
    parts = [show_value(ftype) if ftype is not None else "(no type)"]
    if "seq" in frame:
        parts.append(f"seq={show_value(frame['seq'])}")
    for name, value in frame.items():
        if name in ("type", "seq"):
            continue
        part = f"{show_value(name)}={show_value(value)}"
        if ftype == "rated" and name == "level" and value in LEVEL_LABELS:
            part += f" ({LEVEL_LABELS[value]})"
        parts.append(part)
    if ftype == "nak" and frame.get("error") in NAK_MEANING:
        parts.append(f"({NAK_MEANING[frame['error']]})")
    return " ".join(parts)


def crc_note(sent: Sent) -> str:
    if sent.frame is None:
        return ""
    if sent.crc_sent is None:
        return " (no CRC)"
    if sent.crc_sent != sent.crc_correct:
        return (f" (CRC {sent.crc_sent:04X}, deliberately wrong: correct is "
                f"{sent.crc_correct:04X})")
    return f" (CRC {sent.crc_sent:04X})"


@dataclass(frozen=True)
class Verdict:
    """How the evaluator treats one line seen by --listen."""

    ok: bool
    kind: str | None = None            # reject kind, counted in the summary
    detail: str = ""
    answer: str | None = None          # "ack", "nak <code>", "no answer"; None for replies
    ignored: tuple[str, ...] = ()      # fields the evaluator drops unread
    normalised: tuple[str, ...] = ()   # texts the evaluator shows and stores changed


def judge(item: Received, require_crc: bool) -> Verdict:
    """The evaluator's own decision (common.serial_codec.decode_line) for a window frame;
    SPEC §4's promises for one of the evaluator's frames."""
    ftype = item.type
    if ftype in EVALUATOR_TYPES and item.error in (None, "bad_field"):
        return Verdict(item.ok, item.error, item.detail)
    result = decode_line(item.line, require_crc)
    if isinstance(result, Rejected):
        detail = _crc_detail(item) if result.error == "crc" else result.detail
        return Verdict(False, result.error, detail,
                       f"nak {result.nak}" if result.nak else "no answer")
    frame = item.frame or {}
    kept = set(KEPT_FIELDS[result.type]) | {"type", "seq"}
    return Verdict(True, answer="ack",
                   ignored=tuple(name for name in frame if name not in kept),
                   normalised=tuple(name for name, value in result.fields.items()
                                    if frame.get(name) != value))


def _crc_detail(item: Received) -> str:
    if item.error == "crc" and item.crc_in_frame is not None:
        return f"CRC in frame {item.crc_in_frame:04X}, computed {item.crc_computed:04X}"
    return item.detail


class Style:
    """ANSI colour only for a terminal, and never when NO_COLOR is set (no-color.org)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    @classmethod
    def for_stream(cls, stream: IO[str]) -> Style:
        isatty = getattr(stream, "isatty", None)
        return cls(bool(isatty and isatty()) and not os.environ.get("NO_COLOR"))

    def _paint(self, code: str, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.enabled else text

    def good(self, text: str) -> str:
        return self._paint("32", text)

    def bad(self, text: str) -> str:
        return self._paint("1;31", text)

    def warn(self, text: str) -> str:
        return self._paint("33", text)

    def dim(self, text: str) -> str:
        return self._paint("2", text)


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at).astimezone().isoformat(timespec="milliseconds")


def _line_text(line: bytes) -> str:
    return line.rstrip(b"\n").decode("utf-8", "backslashreplace")


class Output:
    """Everything the tool prints: human lines or (--json) one JSON object per line."""

    def __init__(self, as_json: bool, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stdout
        self.as_json = as_json
        self.style = Style(False) if as_json else Style.for_stream(self.stream)
        self._lock = threading.Lock()
        self._reader_gone = False

    def _emit(self, text: str) -> None:
        with self._lock:
            if self._reader_gone:
                return
            try:
                print(text, file=self.stream, flush=True)
            except BrokenPipeError:
                # `… | head -1`: keep running to the real outcome and exit code, quietly.
                self._reader_gone = True
                _silence(self.stream)

    def _record(self, record: dict[str, Any]) -> None:
        self._emit(json.dumps(record, ensure_ascii=False))

    def sent(self, sent: Sent) -> None:
        if self.as_json:
            self._record({
                "dir": "out", "at": _iso(time.time()), "line": _line_text(sent.line),
                "frame": sent.frame,
                "crc": None if sent.crc_sent is None else f"{sent.crc_sent:04X}",
                "crc_correct": None if sent.crc_correct is None else f"{sent.crc_correct:04X}",
            })
        elif sent.frame is None:
            self._emit(f"→ raw {show_line(sent.line)}")
        else:
            note = crc_note(sent)
            if sent.crc_sent != sent.crc_correct:
                note = self.style.warn(note)
            self._emit(f"→ {describe(sent.frame)}{note}")

    def received(self, item: Received) -> None:
        if self.as_json:
            self._record(self._in_record(item))
        elif item.ok and item.frame is not None:
            self._emit(f"← {self._paint_reply(item.frame)}")
        else:
            marker = self.style.bad(f"✗ {_marker(item.error)}")
            self._emit(f"← {marker} {_crc_detail(item)}: {show_line(item.line)}")

    def listened(self, item: Received, verdict: Verdict) -> None:
        if self.as_json:
            record = self._in_record(item)
            record.update(ok=verdict.ok, error=verdict.kind,
                          detail=verdict.detail or None, answer=verdict.answer,
                          ignored_fields=list(verdict.ignored),
                          normalised_fields=list(verdict.normalised))
            self._record(record)
            return
        clock = self.style.dim(datetime.fromtimestamp(item.at).strftime("%H:%M:%S.%f")[:-3])
        what = describe(item.frame) if item.frame is not None else ""
        crc = (f" (CRC {item.crc_in_frame:04X})" if item.crc_in_frame is not None
               else " (no CRC)")
        answer = f" → {verdict.answer}" if verdict.answer else ""
        if verdict.ok:
            text = f"{clock} {self.style.good('✓')} {what}{crc}{answer}"
            if verdict.ignored:
                text += " " + self.style.warn(
                    f"⚠ ignored fields (never stored): {', '.join(verdict.ignored)}")
            if verdict.normalised:
                text += " " + self.style.warn(
                    "⚠ shown and stored with line breaks and control characters as spaces: "
                    + ", ".join(verdict.normalised))
            self._emit(text)
            return
        marker = self.style.bad(f"✗ {_marker(verdict.kind)}")
        head = f"{what}: " if what else ""
        self._emit(f"{clock} {marker} {head}{verdict.detail}{answer}")
        self._emit(f"      {self.style.dim('line:')} {show_line(item.line)}")

    def summary(self, lines: int, rejected: Counter[str]) -> None:
        total_bad = sum(rejected.values())
        if self.as_json:
            self._record({"summary": {"lines": lines, "ok": lines - total_bad,
                                      "rejected": dict(rejected)}})
            return
        kinds = ", ".join(f"{kind} {n}" for kind, n in rejected.most_common())
        bad = f"{total_bad} rejected ({kinds})" if total_bad else "0 rejected"
        self._emit(f"── {lines} line(s): {lines - total_bad} ok, {bad}")

    def result(self, result: str, code: int) -> None:
        if self.as_json:
            self._record({"result": result, "exit": code})

    def _in_record(self, item: Received) -> dict[str, Any]:
        record: dict[str, Any] = {"dir": "in", "at": _iso(item.at),
                                  "line": _line_text(item.line), "frame": item.frame,
                                  "error": item.error, "detail": item.detail or None}
        if item.crc_in_frame is not None:
            record["crc"] = f"{item.crc_in_frame:04X}"
        if item.error == "crc" and item.crc_computed is not None:
            record["crc_computed"] = f"{item.crc_computed:04X}"
        return record

    def _paint_reply(self, frame: dict[str, Any]) -> str:
        text = describe(frame)
        ftype = frame.get("type")
        if ftype == "nak" or ftype == "expired":
            return self.style.bad(text)
        if ftype == "ack" or ftype == "rated":
            return self.style.good(text)
        return text


def _silence(stream: IO[str]) -> None:
    """Point a stream whose reader has gone at /dev/null, so that the flush at exit
    does not raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def _marker(kind: str | None) -> str:
    names = {"crc": "CRC", "no_crc": "NO CRC", "utf8": "UTF-8", "json": "JSON",
             "too_long": "TOO LONG", "bad_frame": "BAD FRAME", "bad_field": "BAD FIELD",
             "unknown_type": "UNKNOWN TYPE"}
    return names.get(kind or "", (kind or "REJECTED").upper())
