"""Numbers a device sends in its status and telemetry, bounded before they become a
metric, a float or a time: anything outside the bounds is refused with a reason that
names the device and the field, and never raises (a retained message with a 400-digit
`backlog` used to stop the bridge at every start). docs/bridge.md lists the bounds.

Also the rate-limited warning both the bridge and the watcher use for such refusals.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

# Ratings waiting on one device. A hall's busiest window rates a few hundred cases a
# day, so ten million is decades of ratings: anything larger is not a count.
MAX_BACKLOG = 10_000_000
# Durations (oldest_pending_s, uptime_s): ten years.
MAX_SECONDS = 10 * 366 * 86400.0

REFUSALS_LOGGED_PER_MIN = 20


class Refused(ValueError):
    """A device number outside its bounds; the message says which and why."""


def count(value: Any, device_id: str, field: str, limit: int = MAX_BACKLOG) -> int | None:
    """`value` as a count 0..limit; None when absent (null); raise Refused otherwise."""
    if value is None:
        return None
    if type(value) is not int:
        raise Refused(f"{field} from {device_id} must be an integer 0..{limit}, got "
                      f"{describe(value)}")
    if not 0 <= value <= limit:
        raise Refused(f"{field} from {device_id} is {describe(value)}, outside 0..{limit}")
    return value


def seconds(value: Any, device_id: str, field: str, limit: float = MAX_SECONDS
            ) -> float | None:
    """`value` as a duration 0..limit seconds; None when absent; raise Refused otherwise."""
    if value is None:
        return None
    if type(value) is int:
        # Compare as an int first: float() of a 400-digit int raises OverflowError.
        if 0 <= value <= limit:
            return float(value)
    elif type(value) is float:
        if 0.0 <= value <= limit:  # NaN fails both comparisons
            return value
    else:
        raise Refused(f"{field} from {device_id} must be a number of seconds, got "
                      f"{describe(value)}")
    raise Refused(f"{field} from {device_id} is {describe(value)}, outside 0..{limit:.0f} s")


def describe(value: Any) -> str:
    """A value for a log line without echoing what a device sent: numbers by size, other
    things by type (a string might be someone's name)."""
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, int):
        if -10**12 < value < 10**12:
            return str(value)
        digits = int(value.bit_length() * 0.30103) + 1
        return f"an integer of about {digits} digits"
    if isinstance(value, float):
        return repr(value) if abs(value) < 1e12 or value != value else f"{value:.3g}"
    if isinstance(value, str):
        return f"a string of {len(value)} characters"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


class QuietWarnings:
    """Warnings about what devices sent, at most `per_min` a minute (then one line saying
    more were left out): a device that floods bad telemetry must not flood the journal."""

    def __init__(self, log: logging.Logger, clock: Callable[[], float],
                 per_min: int = REFUSALS_LOGGED_PER_MIN, level: int = logging.WARNING
                 ) -> None:
        self._log = log
        self._clock = clock
        self._per_min = per_min
        self._level = level
        self._window = (-60.0, 0)

    def warn(self, text: str) -> None:
        start, n = self._window
        now = self._clock()
        if now - start >= 60:
            start, n = now, 0
        if n < self._per_min:
            self._log.log(self._level, "%s", text)
        elif n == self._per_min:
            self._log.log(self._level, "more like this this minute; not logging them")
        self._window = (start, n + 1)
