"""`hcp-device status`: the running daemon's answer on its status socket (device/control.py)
as lines a technician reads at a glance, or as one JSON object for scripts."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, TextIO

from common.text import display_text
from device.control import NoDaemon, ask_status, status_socket_path

EX_NO_DAEMON = 3   # SPEC §13: no daemon answered


def status_command(data_dir: Path, as_json: bool, out: TextIO = sys.stdout,
                   err: TextIO = sys.stderr) -> int:
    path = status_socket_path(data_dir)
    try:
        status = ask_status(path)
    except NoDaemon as e:
        print(f"hcp-device status: {e}", file=err)
        return EX_NO_DAEMON
    if as_json:
        print(json.dumps(status, ensure_ascii=False, sort_keys=True), file=out)
    else:
        for line in status_lines(status):
            print(line, file=out)
    return 0


def status_lines(s: dict[str, Any]) -> list[str]:
    """Human-readable lines; every value is looked up defensively (another version of
    the daemon may answer with other keys) and shown as one line of safe text."""
    broker = s.get("broker") or ("connected" if s.get("mqtt_connected") else "offline")
    connects = s.get("broker_connects")
    oldest = s.get("oldest_pending_s")
    lines = [
        f"device:        {t(s.get('device_id', '?'))}  version {t(s.get('version', '?'))}"
        f"  up {duration(s.get('uptime_s'))}",
        f"broker:        {t(broker)}"
        + (f" ({connects} connection(s) since start)" if _number(connects) else ""),
        f"serial:        {'open' if s.get('serial_open') else 'closed'}"
        f", {t(s.get('serial_errors', 0))} error(s)"
        + (f", last frame {t(s['last_frame'])}" if s.get("last_frame") else ""),
        f"outbox:        {t(s.get('backlog', '?'))} pending"
        + (f", oldest {duration(oldest)} old" if _number(oldest) else ""),
    ]
    last = s.get("last_rating")
    if isinstance(last, dict):
        lines.append(f"last rating:   level {t(last.get('level'))} at "
                     f"{t(last.get('rated_at'))}")
    else:
        lines.append("last rating:   none since start")
    rejected = s.get("last_rejected")
    if isinstance(rejected, dict):
        lines.append(f"last rejected: {t(rejected.get('rating_id'))} at "
                     f"{t(rejected.get('at'))}: {t(rejected.get('reason'))}")
    lines.append(f"receipts:      {t(s.get('receipts', 0))} since start, "
                 f"{t(s.get('rejected', 0))} rejected")
    lines.append(f"pending cases: {t(s.get('pending_cases', 0))}")
    synced = s.get("clock_synced")
    lines.append("clock:         " + ("synchronised" if synced else
                                      "not synchronised (ratings carry clock_synced=false)"
                                      if synced is not None else "?"))
    faults = s.get("faults")
    if isinstance(faults, dict) and faults:
        for part, error in sorted(faults.items()):
            lines.append(f"fault:         {t(part)}: {t(error)}")
    else:
        lines.append("faults:        none")
    return lines


def t(value: object, limit: int = 200) -> str:
    """Any value from the answer as one line of at most `limit` characters."""
    text = display_text(str(value))
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def duration(seconds: object) -> str:
    if (not isinstance(seconds, int | float) or isinstance(seconds, bool)
            or not math.isfinite(seconds)):
        return "?"
    s = int(seconds)
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    if s < 2 * 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"
