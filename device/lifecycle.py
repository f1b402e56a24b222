"""Signals and the orderly stop: SIGTERM/SIGINT become a Stop event at once, and what
was queued before it is sorted into what the stop must still handle and what it leaves.
"""

from __future__ import annotations

import os
import queue
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Stop:
    reason: str
    t: float = 0.0


def install_signal_handlers(request_stop: Callable[[str], None]) -> None:
    """SIGTERM/SIGINT call `request_stop(signal name)`.

    The kernel may deliver the signal to any thread; Python runs its handler only in the
    main thread, and only once that thread wakes up — which it would not, blocked in
    queue.get until its next deadline. The C-level handler always writes to the wakeup
    fd, whatever thread it runs on, so a small thread waiting on that fd turns the
    signal into an event at once."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)

    def relay() -> None:
        while True:
            data = os.read(read_fd, 1)
            if not data:
                return
            request_stop(signal.Signals(data[0]).name)

    threading.Thread(target=relay, name="signals", daemon=True).start()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)  # the relay thread does the work


def drain(events: queue.Queue[Any], skip: tuple[type, ...] = ()) -> tuple[list[Any], int]:
    """What the stop must still handle (everything queued now, in order, without Stop
    events and without events of the `skip` types), and how many were skipped.

    The stop skips the window system's lines: each may need an answer written to a port
    the window system may not be reading, and one that gets none is sent again to the
    next run (SPEC §4). Key presses, broker news and driver news are handled."""
    out: list[Any] = []
    skipped = 0
    while True:
        try:
            ev = events.get_nowait()
        except queue.Empty:
            return out, skipped
        if isinstance(ev, skip):
            skipped += 1
        elif not isinstance(ev, Stop):
            out.append(ev)
