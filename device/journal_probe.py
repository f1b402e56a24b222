"""Whether a journal could be opened at a path, found without creating or changing
anything: the preflight of `hcp-device check-config` and `hcp-device doctor`.
"""

from __future__ import annotations

import fcntl
import os
import pwd
from pathlib import Path


def probe(path: Path) -> str | None:
    """Why a journal at `path` could not be opened by `JournalStorage`, or None; found
    without creating or changing anything (for `hcp-device check-config`).

    The same rules `_open` meets by doing: the directory can be created (its nearest
    existing ancestor is a writable directory) or is a writable directory, it can be
    flock'ed (one held by a running daemon is fine: it goes with that daemon), and an
    existing journal is a regular file we may read and write."""
    directory = path.parent
    existing = directory
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if existing != directory:
        if not existing.is_dir():
            return f"cannot be created: {existing} is not a directory"
        if not os.access(existing, os.W_OK | os.X_OK):
            return f"cannot be created: {existing} is not writable by {_user()}"
        return None
    if not directory.is_dir():
        return "is not a directory"
    if not os.access(directory, os.R_OK | os.W_OK | os.X_OK):
        return f"is not readable and writable by {_user()}"
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        return f"cannot be opened: {e.strerror}"
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pass  # a running daemon holds it
    except OSError as e:  # e.g. ENOLCK on a network file system
        return f"cannot be locked: {e.strerror}"
    finally:
        os.close(fd)  # also drops the lock
    if os.path.lexists(path):
        if not path.is_file():
            return f"{path.name} is not a regular file"
        if not os.access(path, os.R_OK | os.W_OK):
            return f"{path.name} is not readable and writable by {_user()}"
    return None


def _user() -> str:
    try:
        return f"user {pwd.getpwuid(os.geteuid()).pw_name}"
    except KeyError:  # a uid without a passwd entry (a container)
        return f"uid {os.geteuid()}"
