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


def drain(events: queue.Queue[Any]) -> list[Any]:
    """Everything queued now, in order, without the Stop events."""
    out: list[Any] = []
    while True:
        try:
            ev = events.get_nowait()
        except queue.Empty:
            return out
        if not isinstance(ev, Stop):
            out.append(ev)
