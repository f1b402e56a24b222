"""The device's clocks: monotonic time for timers, wall time for records, and honesty
about whether the wall time can be trusted (a Pi has no RTC)."""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass

BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"


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


@dataclass
class FakeClock:
    """A clock for tests: time moves only when the test says so."""

    now: float = 1000.0
    wall_now: float = 1_795_000_000.0
    is_synced: bool = True

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.wall_now

    def synced(self) -> bool:
        return self.is_synced

    def boot_id(self) -> str | None:
        return "fake-boot"

    def advance(self, seconds: float) -> float:
        self.now += seconds
        self.wall_now += seconds
        return self.now
