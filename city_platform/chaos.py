"""Chaos controls for tests and demos: make the ratings endpoint misbehave for a while
(errors, 429 + Retry-After, hangs, slowness, lost answers), so the bridge's retry and
exactly-once behaviour can be shown against a misbehaving platform. Off (mode normal)
unless someone asks, and only reachable when the server was started with chaos enabled.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

CHAOS_MODES = ("normal", "error", "hang", "slow", "drop")
MAX_FOR_S = 30 * 86_400


@dataclass
class ChaosMode:
    """How the ratings endpoint misbehaves (only POST {path}; counts stay honest).

    error: answer `status` (e.g. 503, 500, 429, 401) with `retry_after` if set;
    hang:  read the request, never answer, close after `for_s` (or when changed);
    slow:  store, then wait `delay_s` before answering;
    drop:  store, then close the connection without answering (the answer is lost).
    `for_s` / `requests` limit how long / how many requests; then back to normal.
    """

    mode: str = "normal"
    status: int = 503
    retry_after: str | None = None
    delay_s: float = 2.0
    for_s: float | None = None
    requests: int | None = None
    until: float | None = None  # monotonic deadline derived from for_s


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


class Chaos:
    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._mode = ChaosMode()

    def set(self, spec: dict[str, Any]) -> ChaosMode:
        """Replace the current mode; raise ValueError on a bad spec."""
        unknown = set(spec) - {"mode", "status", "retry_after", "delay_s", "for_s", "requests"}
        if unknown:
            raise ValueError(f"unknown keys: {', '.join(sorted(unknown))}")
        mode = ChaosMode(**spec)
        if not isinstance(mode.mode, str) or mode.mode not in CHAOS_MODES:
            raise ValueError(f"mode must be one of {', '.join(CHAOS_MODES)}")
        if not _is_int(mode.status) or not 100 <= mode.status <= 599:
            raise ValueError("status must be an HTTP status code")
        # Checked here, not where a ratings request uses them: a bad one there would
        # fail that request after its batch was stored, or split its headers.
        if not _is_number(mode.delay_s) or not 0 <= mode.delay_s <= 3600:
            raise ValueError("delay_s must be a number of seconds, 0..3600")
        if mode.for_s is not None and not (_is_number(mode.for_s)
                                           and 0 <= mode.for_s <= MAX_FOR_S):
            raise ValueError(f"for_s must be null or a number of seconds, 0..{MAX_FOR_S}")
        if mode.requests is not None and not (_is_int(mode.requests) and mode.requests >= 0):
            raise ValueError("requests must be null or a whole number, at least 0")
        if mode.retry_after is not None:
            if not (_is_int(mode.retry_after) or isinstance(mode.retry_after, str)):
                raise ValueError("retry_after must be null, a number or a text")
            mode.retry_after = str(mode.retry_after)
            if not (mode.retry_after.isprintable() and len(mode.retry_after) <= 64):
                raise ValueError("retry_after must be one printable line of at most 64 "
                                 "characters (it becomes a header)")
        if mode.for_s is not None:
            mode.until = time.monotonic() + float(mode.for_s)
        with self._lock:
            self._mode = mode
            self._lock.notify_all()
        return mode

    def take(self) -> ChaosMode:
        """The mode for one request (counting it against `requests`)."""
        with self._lock:
            mode = self._mode
            expired = mode.until is not None and time.monotonic() >= mode.until
            if mode.mode == "normal" or expired or mode.requests == 0:
                self._mode = ChaosMode()
                return self._mode
            if mode.requests is not None:
                mode.requests -= 1
            return mode

    def current(self) -> dict[str, Any]:
        with self._lock:
            mode = self._mode
            out = asdict(mode)
            out.pop("until")
            out["remaining_s"] = (None if mode.until is None
                                  else max(0.0, round(mode.until - time.monotonic(), 3)))
            return out

    def hang(self, mode: ChaosMode) -> None:
        """Block while `mode` is still the current one and its time has not run out."""
        with self._lock:
            while self._mode is mode:
                left = None if mode.until is None else mode.until - time.monotonic()
                if left is not None and left <= 0:
                    return
                self._lock.wait(timeout=left if left is not None else 1.0)
