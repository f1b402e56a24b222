"""The watcher's small state on disk: written atomically (temp file, fsync, rename,
directory fsync), so a power cut leaves either the old state or the new one, and a
restart does not raise again what is still open or in its cooldown."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from common.rating import decode_json_object

log = logging.getLogger("hcp.watch.state")


class StateError(Exception):
    """The state file cannot be written (disk full, permissions)."""


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Replace `path` with `state` as JSON, atomically and durably; raise StateError."""
    try:
        data = json.dumps(state, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate ("\ud800" in a hand-edited file): valid JSON, not UTF-8. Kept
        # as the escape it was read from.
        data = json.dumps(state, separators=(",", ":")).encode("ascii")
    except (ValueError, RecursionError) as e:
        raise StateError(f"cannot write {path}: the state is not JSON ({str(e)[:100]})"
                         ) from None
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as e:
        raise StateError(f"cannot write {path}: {e.strerror or e}") from None


def load_state(path: Path) -> dict[str, Any] | None:
    """The saved state, or None when there is none. A damaged file is set aside (renamed
    to *.damaged) and the watcher starts afresh: alerts may then be raised once more,
    which is better than not watching at all."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StateError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        # Strict, like every JSON the bridge reads (no repeated keys, no NaN).
        return decode_json_object(data)
    except (ValueError, RecursionError) as e:
        damaged = path.with_name(path.name + ".damaged")
        log.error("state file %s is damaged (%s); set aside as %s, starting afresh",
                  path, str(e)[:100], damaged.name)
        try:
            os.replace(path, damaged)
        except OSError:
            pass
        return None
