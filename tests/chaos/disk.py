"""A device's data directory on its own small tmpfs, so the chaos run can fill the disk
under a running daemon and give the space back, without touching the host's disks.

Mounting needs root (or CAP_SYS_ADMIN) and a kernel that allows tmpfs mounts here; when
it does not, `SmallDisk.mount` raises `DiskUnavailable` with the reason, and the runner
runs without the disk-full fault and says so in its report.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from pathlib import Path

FILLER = ".chaos-filler"
CHUNK = 64 * 1024


class DiskUnavailable(Exception):
    """A size-limited filesystem cannot be mounted on this machine (the reason says why)."""


class SmallDisk:
    """A tmpfs of `size_mb` MiB mounted on `path` (an empty directory)."""

    def __init__(self, path: Path, size_mb: int = 8) -> None:
        self.path = path
        self.size_mb = size_mb
        self.mounted = False

    def mount(self) -> SmallDisk:
        self.path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            raise DiskUnavailable("not root: cannot mount a size-limited tmpfs")
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.size_mb}m,mode=0755", "tmpfs",
             str(self.path)], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            reason = done.stderr.strip() or f"exit status {done.returncode}"
            raise DiskUnavailable(f"mount -t tmpfs failed: {reason}")
        self.mounted = True
        return self

    def unmount(self) -> None:
        if not self.mounted:
            return
        # Lazy: a daemon killed a moment ago may still hold the directory open.
        subprocess.run(["umount", "-l", str(self.path)], capture_output=True, check=False)
        self.mounted = False

    @property
    def filler(self) -> Path:
        return self.path / FILLER

    def fill(self) -> int:
        """Write a filler file until the filesystem is full; returns the bytes written."""
        written = 0
        chunk = b"\0" * CHUNK
        with open(self.filler, "ab") as f:
            size = CHUNK
            while size:
                try:
                    n = os.write(f.fileno(), chunk[:size])
                    written += n
                except OSError as e:
                    if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                        raise
                    size //= 2  # take the last crumbs too: a nearly full disk still stores
        return written

    def free(self) -> None:
        """Give the space back."""
        with contextlib.suppress(FileNotFoundError):
            self.filler.unlink()

    def free_bytes(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize
