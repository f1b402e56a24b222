"""What `hcp-device doctor` finds: one `Finding` per check, `ok`, `warn` or `FAIL` with
its fix, printed as exactly one line whatever the texts hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from device.status_view import t

Level = Literal["ok", "warn", "FAIL"]


@dataclass(frozen=True)
class Finding:
    level: Level
    part: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        """One line, whatever the texts hold (a driver's error, a daemon's answer)."""
        text = f"{self.level:<4} {t(self.part)}: {t(self.detail, 400)}"
        return text + (f" — fix: {t(self.fix, 400)}" if self.fix and self.level != "ok"
                       else "")


def ok(part: str, detail: str) -> Finding:
    return Finding("ok", part, detail)


def warn(part: str, detail: str, fix: str) -> Finding:
    return Finding("warn", part, detail, fix)


def fail(part: str, detail: str, fix: str) -> Finding:
    return Finding("FAIL", part, detail, fix)


def running_fault(daemon: dict[str, Any] | None, part: str) -> Finding | None:
    """A part the running daemon reports as failing; None when it is fine or no daemon
    answers (then the part is probed directly)."""
    if daemon is None:
        return None
    faults = daemon.get("faults")
    if isinstance(faults, dict) and part in faults:
        return fail(part, f"the running daemon reports: {faults[part]}",
                    "check the part's wiring; `journalctl -u hcp-device` has the detail")
    return ok(part, "working in the running daemon")
