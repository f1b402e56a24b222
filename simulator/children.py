"""Child processes the tools start must never outlive them (a demo left behind is a
broker on a port and a bridge posting to nowhere)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """`preexec_fn` for Popen: SIGTERM the child when its parent dies, however it dies,
    and give it its own process group so a Ctrl-C reaches only the parent, which then
    stops its children in order."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    os.setpgrp()
