"""The device's outbox: every rating is stored durably here until an end-to-end receipt names
it, together with the small state that must survive restarts (next seq, recently rated
cases, rejected ratings, settings). TinyDB over the crash-safe journal of device/journal.py.

Single writer: only the daemon's core loop may call the mutating methods; nothing here locks.
"""

from __future__ import annotations

import errno
import math
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device.journal import JournalFormatError, JournalStorage, Op, del_op, put_op
from device.journal_db import JournalDB, JournalTable
from device.journal_probe import probe

JOURNAL_NAME = "outbox.journal"
RATINGS, CASES, META, REJECTED, SETTINGS = "ratings", "cases", "meta", "rejected", "settings"
REJECTED_KEPT = 100


class StorageError(Exception):
    """The outbox could not store or open durably (disk full, I/O error, unreadable file)."""

    @property
    def disk_full(self) -> bool:
        """True when the cause was a full disk (or quota): space coming back cures it."""
        cause = self.__cause__
        return isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT)


@dataclass
class OpenReport:
    """What `Outbox.open()` found: for the daemon to log and publish."""

    ratings: int            # ratings pending after open
    dropped_records: int    # journal records skipped as corrupt/torn
    dropped_bytes: int
    # human-readable, e.g. "outbox.journal: bytes 1200-1380: bad checksum"
    details: list[str] = field(default_factory=list)
    moved_aside: list[Path] = field(default_factory=list)


class Outbox:
    """Pending ratings in store order, plus the device state that must survive restarts.

    A method that writes returns only once its journal record is fsync'ed (except
    `forget_cases_before`, which is lazy); on any OSError it raises `StorageError` and changes
    nothing, and a later call works again once the cause (e.g. a full disk) is gone.
    Each pending rating is held as the JSON bytes it was journaled with (about 0.7 KiB, see
    docs/outbox.md); `get` and `pending` decode them afresh, so the caller owns what it gets,
    and `pending` costs a decode per rating: the daemon fetches one rating at a time.
    """

    def __init__(self, data_dir: Path, *, compact_min_bytes: int = 1 << 20,
                 compact_ratio: float = 4.0) -> None:
        self._dir = Path(data_dir)
        try:
            # Made here, only the owner and its group may look in (as systemd's
            # StateDirectoryMode=0750); the files in it are the owner's alone (0600).
            self._dir.mkdir(mode=0o750, parents=True, exist_ok=True)
        except OSError as e:
            raise StorageError(f"cannot create the outbox directory {self._dir}: {e}") from e
        self._compact_min_bytes = compact_min_bytes
        self._compact_ratio = compact_ratio
        self._db: JournalDB | None = None
        self._next_seq = 1

    @staticmethod
    def probe(data_dir: Path) -> str | None:
        """Why the outbox could not be opened in `data_dir`, or None; creates nothing."""
        return probe(Path(data_dir) / JOURNAL_NAME)

    # Lifecycle ---------------------------------------------------------------------------

    def open(self) -> OpenReport:
        """Load the outbox, recovering from torn or corrupted records (never refuses to start
        over damage: it drops what is unreadable, keeps the rest and says what it dropped)."""
        self.close()
        path = self._dir / JOURNAL_NAME
        top_seq = 0

        def note_seq(table: str, doc_id: str, doc: dict[str, Any]) -> None:
            # Every rating the journal still holds, pending or since removed, raises next_seq:
            # learned during the replay, which decodes each rating anyway, rather than by
            # decoding every pending one again afterwards.
            nonlocal top_seq
            seq = doc.get("seq") if table == RATINGS else None
            if isinstance(seq, int) and seq > top_seq:
                top_seq = seq

        try:
            self._db = JournalDB(path, compact_min_bytes=self._compact_min_bytes,
                                 compact_ratio=self._compact_ratio, on_replay_put=note_seq)
        except (OSError, JournalFormatError) as e:
            raise StorageError(f"cannot open the outbox {path}: {e}") from e
        journal = self._db.journal
        self._next_seq = max(self._meta("next_seq", 1), top_seq + 1)
        return OpenReport(
            ratings=len(self),
            dropped_records=sum(d.records for d in journal.damage),
            dropped_bytes=sum(d.end - d.start for d in journal.damage),
            details=[f"{JOURNAL_NAME}: bytes {d.start}-{d.end}: {d.reason}"
                     for d in journal.damage] + journal.notes,
            moved_aside=list(journal.moved_aside),
        )

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # Ratings -----------------------------------------------------------------------------

    def store(self, rating: dict[str, Any], case_id: str | None = None,
              case_rated_at: float | None = None, case_rated_mono: float | None = None,
              boot_id: str | None = None) -> None:
        """Durably append `rating` (fsync'ed before this returns), with its case memory and
        the advanced next seq in the same record. The case memory keeps the wall time, and
        the monotonic time with the boot it counts from when both are given."""
        rating_id, seq = rating["rating_id"], rating["seq"]
        if not isinstance(rating_id, str) or not isinstance(seq, int):
            raise ValueError("a rating needs a str rating_id and an int seq")
        ops = [put_op(RATINGS, rating_id, rating)]
        if case_id is not None:
            rated_at = time.time() if case_rated_at is None else case_rated_at
            # rating_id and level: enough to tell the window system again after a restart
            # if its `rated` frame may not have reached it (see `unannounced_cases`).
            memory: dict[str, Any] = {"rated_at": rated_at, "rating_id": rating_id,
                                      "level": rating.get("level")}
            if case_rated_mono is not None and boot_id:
                memory.update(boot=boot_id, mono=case_rated_mono)
            ops.append(put_op(CASES, case_id, memory))
        if seq + 1 > self._next_seq:
            ops.append(put_op(META, "next_seq", {"value": seq + 1}))
        self._commit(ops, f"cannot store rating {rating_id}")
        self._next_seq = max(self._next_seq, seq + 1)

    def remove(self, rating_ids: Iterable[str]) -> int:
        """Forget these ratings (receipts came); one fsync'ed record for all. Returns how many
        were pending. Losing a removal in a crash only means a harmless re-send."""
        try:
            return len(self._table(RATINGS).remove(doc_ids=rating_ids))
        except OSError as e:
            raise StorageError(f"cannot record receipts: {e}") from e

    def get(self, rating_id: str) -> dict[str, Any] | None:
        return self._table(RATINGS).get_doc(rating_id)

    def pending(self) -> list[dict[str, Any]]:
        """Pending ratings in store order (which is seq order)."""
        return list(self._table(RATINGS).all())

    def pending_ids(self) -> list[str]:
        return list(self._table(RATINGS).view())

    def __len__(self) -> int:
        return len(self._table(RATINGS).view())

    def oldest_rated_at(self) -> str | None:
        oldest = next(iter(self._table(RATINGS).view().values()), None)
        return None if oldest is None else oldest.get("rated_at")

    def next_seq(self) -> int:
        """The first seq to use: above every seq ever stored, even of ratings since removed."""
        return self._next_seq

    def reserve_frame_seqs(self, count: int) -> int:
        """The first of `count` fresh numbers for the evaluator's own serial frames, above
        every number reserved before, even by an earlier run: durable before it returns,
        so a crash can leave a gap but never a number used twice."""
        start = self._meta("frame_seq_next", 1)
        if not isinstance(start, int) or start < 1:
            start = 1
        self._commit([put_op(META, "frame_seq_next", {"value": start + count})],
                     "cannot reserve frame numbers")
        return start

    # Duplicate-case memory ---------------------------------------------------------------

    def recent_cases(self) -> dict[str, float]:
        """case_id -> rated_at (epoch seconds), as stored; the caller filters by age. An
        entry without a number there (only a crafted or foreign file has one) is left
        out: it cannot say how old it is, and forget_cases_before drops it."""
        return {case_id: float(doc["rated_at"])
                for case_id, doc in self._table(CASES).view().items()
                if _number(doc.get("rated_at"))}

    def recent_cases_mono(self, boot_id: str | None) -> dict[str, float]:
        """case_id -> monotonic time of the rating, for the cases stamped in boot `boot_id`
        (other boots' monotonic times mean nothing now)."""
        if not boot_id:
            return {}
        return {case_id: doc["mono"] for case_id, doc in self._table(CASES).view().items()
                if doc.get("boot") == boot_id and isinstance(doc.get("mono"), int | float)}

    def mark_announced(self, case_ids: Iterable[str]) -> None:
        """The window system has these cases' `rated` frames, as far as can be told. Lazy:
        written with the next record; a crash before it only means telling it again."""
        table = self._table(CASES)
        ops: list[Op] = []
        for case_id in case_ids:
            doc = table.get_doc(case_id)
            if doc is not None and not doc.get("announced"):
                ops.append(put_op(CASES, case_id, {**doc, "announced": True}))
        if ops:
            self._journal.commit(ops, lazy=True)

    def unannounced_cases(self) -> list[tuple[str, str, int]]:
        """(case_id, rating_id, level), oldest first, of the remembered cases whose `rated`
        frame is not known to have reached the window system."""
        found = [(float(doc["rated_at"]) if _number(doc.get("rated_at")) else 0.0, case_id,
                  doc["rating_id"], doc["level"])
                 for case_id, doc in self._table(CASES).view().items()
                 if not doc.get("announced") and isinstance(doc.get("rating_id"), str)
                 and isinstance(doc.get("level"), int)]
        return [(case_id, rating_id, level) for _, case_id, rating_id, level in sorted(found)]

    def forget_cases_before(self, epoch: float, mono: float | None = None,
                            boot_id: str | None = None) -> None:
        """Drop case memory older than `epoch` by the wall clock and, where a case carries a
        monotonic stamp of boot `boot_id`, older than `mono` by that too. Lazy: written with
        the next record, so a crash may bring some back, which the caller's age filter makes
        harmless."""
        def old(doc: dict[str, Any]) -> bool:
            wall = doc.get("rated_at")
            if isinstance(wall, int | float) and wall >= epoch:
                return False
            stamp = doc.get("mono")
            return not (mono is not None and boot_id and doc.get("boot") == boot_id
                        and isinstance(stamp, int | float) and stamp >= mono)

        forgotten = [case_id for case_id, doc in self._table(CASES).view().items() if old(doc)]
        if forgotten:
            self._journal.commit([del_op(CASES, forgotten)], lazy=True)

    # Rejected ratings (for technicians) ----------------------------------------------------

    def record_rejected(self, rating: dict[str, Any], error: str) -> None:
        """Keep this rating the platform rejected; only the last `REJECTED_KEPT` are kept."""
        key = str(rating.get("rating_id") or f"unknown-{time.time_ns()}")
        table = self._table(REJECTED).view()
        kept = [k for k in table if k != key]
        ops: list[Op] = [del_op(REJECTED, [key])] if key in table else []
        if len(kept) >= REJECTED_KEPT:
            ops.append(del_op(REJECTED, kept[:len(kept) - REJECTED_KEPT + 1]))
        ops.append(put_op(REJECTED, key, {"rating": rating, "error": error,
                                          "rejected_at": time.time()}))
        self._commit(ops, f"cannot record rejected rating {key}")

    def rejected(self) -> list[dict[str, Any]]:
        """Oldest first: `{"rating": {...}, "error": "...", "rejected_at": epoch}`."""
        return list(self._table(REJECTED).all())

    # Settings ------------------------------------------------------------------------------

    def get_setting(self, name: str) -> Any | None:
        doc = self._table(SETTINGS).get_doc(name)
        return None if doc is None else doc.get("value")

    def put_setting(self, name: str, value: Any) -> None:
        self._commit([put_op(SETTINGS, name, {"value": value})], f"cannot save setting {name}")

    # Disk ----------------------------------------------------------------------------------

    def disk_free_mb(self) -> float:
        """Free space where the outbox lives, in MiB."""
        try:
            return shutil.disk_usage(self._dir).free / (1 << 20)
        except OSError as e:
            raise StorageError(f"cannot read free space of {self._dir}: {e}") from e

    # Internals -----------------------------------------------------------------------------

    @property
    def _journal(self) -> JournalStorage:
        if self._db is None:
            raise StorageError("the outbox is not open")
        return self._db.journal

    def _table(self, name: str) -> JournalTable:
        if self._db is None:
            raise StorageError("the outbox is not open")
        return self._db.journal_table(name)

    def _meta(self, name: str, default: Any) -> Any:
        doc = self._table(META).get_doc(name)
        return default if doc is None else doc.get("value", default)

    def _commit(self, ops: list[Op], what: str) -> None:
        try:
            self._journal.commit(ops)
        except OSError as e:
            raise StorageError(f"{what}: {e.strerror or e}") from e


def _number(value: Any) -> bool:
    """A finite int or float (not a bool): what a stored time must be."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:   # an int too large for a float
        return False
