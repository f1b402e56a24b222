"""The systemd notify protocol without a dependency: READY=1, WATCHDOG=1, STOPPING=1.

Both daemons use it (the bridge through common.sdnotify). Without NOTIFY_SOCKET
(not started by systemd, or Type=simple) every call is a harmless no-op.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable
from types import FrameType


def notify(state: str) -> bool:
    """Send `state` (e.g. "READY=1", "STATUS=connected", "WATCHDOG=1") to systemd.

    Returns True when a message was sent, False when there is no NOTIFY_SOCKET or it
    cannot be reached (systemd restarting, socket gone): never raises.
    """
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode("utf-8"))
        return True
    except OSError:
        return False


def watchdog_interval() -> float | None:
    """How often to send WATCHDOG=1 (seconds): half of WATCHDOG_USEC, or None when the
    watchdog is off or meant for another process (WATCHDOG_PID)."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    return int(usec) / 2 / 1_000_000


class WatchdogPinger:
    """Sends WATCHDOG=1 as often as systemd asked; call `tick()` from the main loop, so a
    hung loop stops the pings and systemd restarts the service."""

    def __init__(self) -> None:
        self.interval = watchdog_interval()
        self._next = 0.0

    def tick(self) -> None:
        if self.interval is not None and time.monotonic() >= self._next:
            notify("WATCHDOG=1")
            self._next = time.monotonic() + self.interval


def stop_on_signals(request_stop: Callable[[], None]) -> None:
    """SIGTERM and SIGINT: tell systemd we are stopping, then ask the service to stop."""
    def on_signal(signum: int, frame: FrameType | None) -> None:
        notify("STOPPING=1")
        request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
