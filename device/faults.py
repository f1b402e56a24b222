"""Driver health: which part of the device (display, indicators, serial writes, keys,
voice) is failing, since when, and the `driver_fault` / `driver_recovered` events (and
`voice_unavailable`) that say so.

A failing driver never stops the daemon: the rating goes on with what works (SPEC: only
a failed outbox write stops a rating). One event when a part starts failing and one when
it works again, not one per failure: a dead panel redrawn every second must not flood
the event topic.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from common.text import log_text

log = logging.getLogger("hcp.device")

EventSink = Callable[[str, dict[str, Any]], None]
PARTS = ("display", "indicators", "serial", "keys", "voice")
# Parts whose loss also has an event of its own (SPEC §10), raised with its driver_fault.
UNAVAILABLE_EVENTS = {"voice": "voice_unavailable"}
ERROR_CHARS = 200


@dataclass
class Fault:
    error: str
    since: float       # monotonic time of the first failure
    failures: int = 1


class DriverHealth:
    """Fault state per part; `faults()` is what status and telemetry show."""

    def __init__(self, event: EventSink) -> None:
        self._event = event
        self._faults: dict[str, Fault] = {}
        # Replaced, never changed in place: the sim socket's thread reads it.
        self._snapshot: dict[str, str] = {}

    def failed(self, part: str, error: str, t: float) -> None:
        error = error[:ERROR_CHARS]
        fault = self._faults.get(part)
        if fault is not None:
            fault.failures += 1
            fault.error = error
            self._snapshot = {p: f.error for p, f in self._faults.items()}
            log.debug("%s still failing (%d): %s", part, fault.failures, log_text(error))
            return
        self._faults[part] = Fault(error, t)
        self._snapshot = {p: f.error for p, f in self._faults.items()}
        log.error("%s failed: %s; the device goes on without it and tries again",
                  part, log_text(error, ERROR_CHARS))
        self._event("driver_fault", {"part": part, "error": error})
        if part in UNAVAILABLE_EVENTS:
            self._event(UNAVAILABLE_EVENTS[part], {"error": error})

    def worked(self, part: str, t: float) -> None:
        fault = self._faults.pop(part, None)
        if fault is None:
            return
        self._snapshot = {p: f.error for p, f in self._faults.items()}
        down_s = round(max(0.0, t - fault.since), 1)
        log.warning("%s works again after %g s (%d failure(s))", part, down_s,
                    fault.failures)
        self._event("driver_recovered", {"part": part, "failures": fault.failures,
                                         "down_s": down_s})

    def is_failing(self, part: str) -> bool:
        return part in self._faults

    def faults(self) -> dict[str, str]:
        """{part: last error} for every part failing now (a copy: read from any thread)."""
        return dict(self._snapshot)
