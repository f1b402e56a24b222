"""The device's clocks: monotonic time for timers, wall time for records, honesty about
whether the wall time can be trusted (a Pi has no RTC), and the wait for the daemon's
next event, so that the same loop runs in real time or, with FakeClock, in virtual time.
"""

from __future__ import annotations

import functools
import os
import queue
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, TypeVar

BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"

T = TypeVar("T")


class Clock(Protocol):
    """What the daemon's loop and its rooms read time from (never `time` directly)."""

    def monotonic(self) -> float: ...

    def wall(self) -> float: ...

    def synced(self) -> bool: ...

    def boot_id(self) -> str | None: ...

    def step_wall(self, offset_s: float) -> None: ...

    def next_event(self, events: queue.Queue[T], timeout: float | None) -> T | None: ...


def iso_utc(epoch: float) -> str:
    """`epoch` as SPEC §6 writes times: UTC, milliseconds, a `Z`."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")


@functools.cache
def _system_boot_id() -> str | None:
    try:
        with open(BOOT_ID_FILE, encoding="ascii") as f:
            return f.read().strip() or None
    except OSError:
        return None


@dataclass
class SystemClock:
    """Real clocks. `wall_offset_s` is a seam for tests that step the wall clock."""

    sync_file: str = "/run/systemd/timesync/synchronized"
    assume_synced: bool = False
    wall_offset_s: float = 0.0

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        """Seconds since the epoch (UTC)."""
        return time.time() + self.wall_offset_s

    def synced(self) -> bool:
        if self.assume_synced:
            return True
        return bool(self.sync_file) and os.path.exists(self.sync_file)

    def boot_id(self) -> str | None:
        """What `monotonic()` counts from: two stamps with the same boot id can be compared
        even across restarts of the daemon (CLOCK_MONOTONIC runs from boot). None: unknown."""
        return _system_boot_id()

    def step_wall(self, offset_s: float) -> None:
        self.wall_offset_s = offset_s

    def next_event(self, events: queue.Queue[T], timeout: float | None) -> T | None:
        """The next queued event, waiting up to `timeout` seconds (None: for ever);
        None when the time ran out first."""
        try:
            return events.get(timeout=timeout)
        except queue.Empty:
            return None


class VirtualTimeStall(RuntimeError):
    """FakeClock was asked to wait for ever: nothing queued and nothing scheduled."""


@dataclass
class FakeClock:
    """A clock for tests: time moves only when the test says so, or when the loop waits
    with nothing queued (trio's MockClock with autojump): it jumps to the deadline."""

    now: float = 1000.0
    wall_now: float = 1_795_000_000.0
    is_synced: bool = True
    wall_offset_s: float = 0.0   # as SystemClock's: `wall_now` plays the host's clock

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.wall_now + self.wall_offset_s

    def synced(self) -> bool:
        return self.is_synced

    def boot_id(self) -> str | None:
        return "fake-boot"

    def step_wall(self, offset_s: float) -> None:
        self.wall_offset_s = offset_s

    def advance(self, seconds: float) -> float:
        self.now += seconds
        self.wall_now += seconds
        return self.now

    def next_event(self, events: queue.Queue[T], timeout: float | None) -> T | None:
        try:
            return events.get_nowait()
        except queue.Empty:
            pass
        if timeout is None:
            raise VirtualTimeStall("nothing queued and no deadline: the loop would wait "
                                   "for ever")
        self.advance(max(0.0, timeout))
        return None
