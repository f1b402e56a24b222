"""The journal's files are private (docs/outbox.md): they hold clerks' names and every
rating, so the journal, its ``.tmp`` and its ``.corrupt-*`` copies are created 0600 whatever
the umask, and any found wider on open (written by an older version, 0644) is narrowed.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import BinaryIO

FILE_MODE = 0o600  # owner only: nothing else reads these files (see docs/outbox.md)


def tighten_modes(journal: Path) -> list[str]:
    """Narrow `journal` and its siblings (.tmp, .corrupt-*) to FILE_MODE where an older
    version or a umask left them readable by others; one note for each file changed or
    left as it was."""
    notes: list[str] = []
    names = [journal.name]
    with contextlib.suppress(OSError):
        names += sorted(entry.name for entry in os.scandir(journal.parent)
                        if entry.name.startswith(journal.name + ".")
                        and entry.is_file(follow_symlinks=False))
    for name in names:
        path = journal.parent / name
        try:
            mode = stat.S_IMODE(os.lstat(path).st_mode)
            if mode & ~FILE_MODE:
                os.chmod(path, FILE_MODE, follow_symlinks=False)
                notes.append(f"{name}: mode {mode:04o} narrowed to {FILE_MODE:04o}")
        except OSError as e:  # not ours to change: say so, it is not worth stopping for
            notes.append(f"{name}: could not narrow its mode to {FILE_MODE:04o} "
                         f"({e.strerror})")
    return notes


def create_private(path: Path) -> BinaryIO:
    """`path` opened for writing from empty, readable by its owner only, whatever the umask
    and whatever mode a leftover file of that name had."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        return os.fdopen(fd, "wb")
    except BaseException:
        os.close(fd)
        raise
