"""Start-up shared by every command of the product: exit codes, logging, loading a config
with every problem on its own line, and the systemd notify dance around a service loop."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Protocol, TypeVar

from common import sdnotify
from common.configschema import ConfigError

# sysexits.h, as systemd units and technicians read them.
EX_OK = 0
EX_USAGE = 64
EX_UNAVAILABLE = 69   # hardware or a peer missing: systemd retries slowly
EX_SOFTWARE = 70
EX_CANTCREAT = 73     # a data directory cannot be created, opened or locked
EX_CONFIG = 78        # a bad config: units say RestartPreventExitStatus=78, so no loop

T = TypeVar("T")


def stderr_is_journal() -> bool:
    """True when stderr is connected to journald (systemd sets JOURNAL_STREAM to the
    device and inode of the stream it gave us): the journal stamps lines itself."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    if not stream:
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return stream == f"{st.st_dev}:{st.st_ino}"


def setup_logging(level: str = "INFO") -> None:
    """Log to stderr; with a timestamp unless journald already adds one."""
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not stderr_is_journal():
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(stream=sys.stderr, level=level.upper(), format=fmt, force=True)


def load_config(loader: Callable[[str], T], path: str, prog: str = "") -> T | int:
    """`loader(path)`, or EX_CONFIG after printing one line per problem (no traceback)."""
    try:
        return loader(path)
    except ConfigError as e:
        prefix = f"{prog}: " if prog else ""
        for problem in e.problems:
            print(f"{prefix}{problem}", file=sys.stderr)
        return EX_CONFIG


class Service(Protocol):
    """A long-running loop that stops soon after `request_stop()` from a signal handler."""

    def request_stop(self) -> None: ...

    def run(self, on_tick: Callable[[], None], tick_s: float) -> None: ...


def run_service(service: Service, ready_status: str = "") -> int:
    """Run `service` under systemd's eyes: SIGTERM/SIGINT stop it, READY=1 once started,
    WATCHDOG=1 from its loop's tick (a hung loop stops the pings)."""
    sdnotify.stop_on_signals(service.request_stop)
    pinger = sdnotify.WatchdogPinger()
    sdnotify.notify("READY=1" + (f"\nSTATUS={ready_status}" if ready_status else ""))
    service.run(pinger.tick, min(1.0, pinger.interval or 1.0))
    return EX_OK
