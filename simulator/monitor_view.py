"""What `hcp-sim monitor` knows about each device of a hall, from the device topics, and
the text it shows: one line per device. Pure (no MQTT, no clock of its own): messages go
in with the time they arrived, lines come out for a given time. Anything a message says
that is not what a device would send is skipped, never trusted and never printed raw."""

from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from device.core.model import LEVEL_LABELS

DEVICE_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_MESSAGE = 64 * 1024
MAX_DEVICES = 5000          # a flood of invented device ids must not eat the memory
KINDS = ("status", "telemetry", "rating", "event")


@dataclass
class DeviceRow:
    device_id: str
    online: bool | None = None        # retained status; None: not known yet
    version: str | None = None
    backlog: int | None = None
    oldest_pending_s: float | None = None
    telemetry_at: float | None = None  # when the last telemetry arrived (wall time)
    serial_errors: int | None = None
    rating_level: int | None = None
    rating_seq: int | None = None
    rating_at: float | None = None    # when it was rated (its rated_at, else arrival)
    hall_id: str | None = None
    event: str | None = None
    event_at: float | None = None
    heard_at: float = 0.0             # last message of any kind

    def hall(self) -> str | None:
        """The hall from the last rating, else from an id shaped region-hall-window."""
        if self.hall_id:
            return self.hall_id
        parts = self.device_id.split("-")
        return parts[1] if len(parts) >= 3 else None


class HallView:
    """Devices by id. Not thread-safe: the caller holds a lock around update and lines."""

    def __init__(self, hall: str | None = None) -> None:
        self.hall = hall
        self.devices: dict[str, DeviceRow] = {}
        self.skipped = 0                  # messages that were not what a device sends

    # --- messages in ---------------------------------------------------------------

    def update(self, topic: str, payload: bytes, now: float, prefix: str) -> bool:
        """Take one message on `{prefix}/{device_id}/{kind}`; False if it was skipped."""
        rest = topic[len(prefix) + 1:] if topic.startswith(prefix + "/") else ""
        device_id, _, kind = rest.partition("/")
        if kind not in KINDS or not DEVICE_ID_RE.fullmatch(device_id):
            return self._skip()
        if kind == "status" and not payload:
            self.devices.pop(device_id, None)   # retained status cleared: device removed
            return True
        body = _json_object(payload)
        if body is None:
            return self._skip()
        row = self.devices.get(device_id)
        if row is None:
            if len(self.devices) >= MAX_DEVICES:
                return self._skip()
            row = DeviceRow(device_id)
        ok = getattr(self, f"_{kind}")(row, body, now)
        if not ok:
            return self._skip()
        self.devices[device_id] = row
        row.heard_at = now
        return True

    def _skip(self) -> bool:
        self.skipped += 1
        return False

    def _status(self, row: DeviceRow, body: dict[str, Any], _now: float) -> bool:
        if not isinstance(body.get("online"), bool):
            return False
        row.online = body["online"]
        row.version = _text(body.get("version"), 16)
        return True

    def _telemetry(self, row: DeviceRow, body: dict[str, Any], now: float) -> bool:
        backlog = _count(body.get("backlog"))
        if backlog is None:
            return False
        row.backlog = backlog
        oldest = _seconds(body.get("oldest_pending_s"))
        row.oldest_pending_s = oldest
        row.serial_errors = _count(body.get("serial_errors"))
        row.telemetry_at = now
        return True

    def _rating(self, row: DeviceRow, body: dict[str, Any], now: float) -> bool:
        level, seq = body.get("level"), _count(body.get("seq"))
        if level not in LEVEL_LABELS or isinstance(level, bool) or seq is None:
            return False
        if row.rating_seq is not None and seq <= row.rating_seq:
            return True   # a re-sent or older rating: the newest stays on show
        row.rating_level, row.rating_seq = level, seq
        row.rating_at = _epoch(body.get("rated_at")) or now
        hall = _text(body.get("hall_id"), 32)
        row.hall_id = hall or row.hall_id
        return True

    def _event(self, row: DeviceRow, body: dict[str, Any], now: float) -> bool:
        name = _text(body.get("event"), 24)
        if not name:
            return False
        row.event, row.event_at = name, now
        return True

    # --- lines out -------------------------------------------------------------------

    def rows(self) -> list[DeviceRow]:
        rows = sorted(self.devices.values(), key=lambda r: r.device_id)
        if self.hall is not None:
            rows = [r for r in rows if r.hall() == self.hall]
        return rows

    def lines(self, now: float, max_rows: int | None = None) -> list[str]:
        """A header, a column line and one line per device (at most `max_rows` devices;
        a last line says how many more there are)."""
        rows = self.rows()
        online = sum(1 for r in rows if r.online)
        backlog = sum(r.backlog or 0 for r in rows)
        hall = f"hall {self.hall}: " if self.hall else ""
        head = (f"{hall}{len(rows)} device(s), {online} online, {backlog} rating(s) "
                f"waiting for a receipt")
        if self.skipped:
            head += f", {self.skipped} message(s) skipped"
        out = [head, _columns(COLUMNS)]
        shown = rows if max_rows is None else rows[:max(0, max_rows)]
        out += [_columns(_cells(r, now)) for r in shown]
        if len(shown) < len(rows):
            out.append(f"… {len(rows) - len(shown)} more (narrow with --hall)")
        return out


COLUMNS = ("DEVICE", "STATUS", "BACKLOG", "OLDEST", "LAST RATING", "SERIAL ERR",
           "LAST EVENT")
WIDTHS = (24, 7, 7, 7, 22, 10, 30)
RIGHT = {2, 3, 5}


def _cells(r: DeviceRow, now: float) -> tuple[str, ...]:
    status = {True: "online", False: "offline", None: "?"}[r.online]
    oldest = "-"
    if r.oldest_pending_s is not None and r.backlog:
        # Telemetry comes every telemetry_s: age the figure to now.
        oldest = duration(r.oldest_pending_s + max(0.0, now - (r.telemetry_at or now)))
    rating = "-"
    if r.rating_level is not None and r.rating_at is not None:
        rating = (f"{r.rating_level} {LEVEL_LABELS[r.rating_level]} "
                  f"{duration(now - r.rating_at)} ago")
    event = "-"
    if r.event is not None and r.event_at is not None:
        event = f"{r.event} {duration(now - r.event_at)} ago"
    return (r.device_id, status, "-" if r.backlog is None else str(r.backlog), oldest,
            rating, "-" if r.serial_errors is None else str(r.serial_errors), event)


def _columns(cells: tuple[str, ...]) -> str:
    parts = [pad(c, w, right=i in RIGHT) for i, (c, w) in enumerate(zip(cells, WIDTHS,
                                                                       strict=True))]
    return "  ".join(parts).rstrip()


def width(text: str) -> int:
    """Terminal columns: CJK characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def pad(text: str, columns: int, right: bool = False) -> str:
    """`text` cut or padded to exactly `columns` terminal columns."""
    out, used = "", 0
    for ch in text:
        w = width(ch)
        if used + w > columns:
            break
        out, used = out + ch, used + w
    fill = " " * (columns - used)
    return fill + out if right else out + fill


def duration(seconds: float) -> str:
    """A short age: 42s, 3m05s, 2h10m, 3d04h."""
    s = max(0, math.floor(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _json_object(payload: bytes) -> dict[str, Any] | None:
    if len(payload) > MAX_MESSAGE:
        return None
    try:
        obj = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def _seconds(v: Any) -> float | None:
    """A finite, non-negative number of seconds, else None."""
    if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v >= 0:
        return float(v)
    return None


def _count(v: Any) -> int | None:
    """A non-negative integer as a device sends it, else None."""
    return v if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**53 else None


def _text(v: Any, limit: int) -> str | None:
    """Printable text only (no escape sequences reach the terminal), cut to `limit`."""
    if not isinstance(v, str):
        return None
    clean = "".join(ch for ch in v[:limit * 4] if ch.isprintable())
    return clean[:limit] or None


def _epoch(v: Any) -> float | None:
    if not isinstance(v, str) or len(v) > 40:
        return None
    try:
        dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        return None
    return dt.timestamp()
