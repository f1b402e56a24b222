"""What every benchmark gets from the runner: a scratch directory, the run's size (full or
quick) and shared fixtures that are costly to build (an outbox with 10,000 pending)."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from bench.ratings import DEVICE_ID, make_rating
from device.outbox import Outbox

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Context:
    workdir: Path
    quick: bool
    _outboxes: dict[tuple[str, int], Path] = field(default_factory=dict)
    _dirs: int = 0

    def scratch(self, name: str) -> Path:
        """A new empty directory for one part of a benchmark."""
        self._dirs += 1
        path = self.workdir / f"{self._dirs:02d}-{name}"
        path.mkdir(parents=True)
        return path

    @property
    def backlog(self) -> int:
        """The "10,000 pending" of the issue (smaller in a quick run)."""
        return 300 if self.quick else 10_000

    def outbox_with_backlog(self, data_dir: Path, pending: int,
                            device_id: str = DEVICE_ID) -> None:
        """Put an outbox holding `pending` ratings of `device_id` in `data_dir`, as the
        daemon itself would have written it (one fsync'ed append per rating); built once
        per run and copied."""
        key = (device_id, pending)
        template = self._outboxes.get(key)
        if template is None:
            template = self.scratch(f"outbox-{pending}")
            box = Outbox(template)
            box.open()
            for seq in range(1, pending + 1):
                rating = make_rating(seq, device_id)
                box.store(rating, case_id=rating["case"]["case_id"])
            box.close()
            self._outboxes[key] = template
        shutil.copytree(template, data_dir, dirs_exist_ok=True)
        # The copy must be on disk, as the daemon's own fsync'ed file would be: otherwise
        # the device's first fsync writes out all of it (~25 ms at 10,000 ratings).
        for path in [data_dir, *data_dir.rglob("*")]:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
