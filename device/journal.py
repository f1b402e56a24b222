"""A crash-safe TinyDB storage: an append-only journal of checksummed records, replayed into
memory on open and compacted now and then, so that one write costs one append and one fsync.

File format: see device/journal_records.py (``<crc> <length> <json>\\n`` records, a header
first, then atomic batches of put and del ops).

Writing: a batch is one ``pwrite`` at the known end of the file followed by one ``fsync``;
memory changes only after both succeed. If either fails (ENOSPC, EIO) the file is truncated
back to its previous end and the OSError propagates, so the file stays a run of whole records.

Memory: each live document is kept as the bytes of its ``doc`` in the put op that wrote it
(compact JSON, ``ensure_ascii=False``), not as decoded objects: a 600-byte rating then costs
about 0.7 KiB instead of about 3.5 KiB of dicts and strings. A document is dumped once when
written, and those bytes go both to the file and to memory; readers (`TableView`) decode a
fresh copy on each access; compaction copies the bytes without encoding anything again.

Compaction: when the file is larger than ``compact_ratio`` times the live data and larger
than ``compact_min_bytes``, the live state is written as a header plus one put record per
document to ``<name>.tmp`` in the same directory, fsync'ed, renamed over the journal with
``os.replace``, and the directory is fsync'ed. A crash at any instant leaves either the old
or the new file, each complete; a leftover ``.tmp`` is deleted on open. Its cost is amortised:
the bytes it writes are at most 1/ratio of the bytes appended since the previous one. The size
of the live data is kept up to date by every write; it is weighed only after the file has grown
by at least as many bytes (and by ``compact_min_bytes``) since the last look, open or compaction.

Recovery: on open the file is memory-mapped and scanned record by record, each record applied
as soon as it is read (so opening needs little memory beyond the live documents themselves). A
record is kept when its prefix parses, its CRC matches and its JSON is a well-formed batch; the
newline after it is expected but a damaged one does not cost the record. Anything else is
damage: scanning resumes at the next position where a record prefix starts (normally the next
line), so every intact record survives, and each damaged byte range is reported with a reason.
A torn tail (the file ends inside a record: a write cut short by a power loss) is damage like
any other. A damaged file is then rewritten cleanly as in compaction, and the original is kept
beside it as ``<name>.corrupt-<UTC time>`` (hard link, or copy) for the technicians: never
deleted.

Concurrency: one writer thread (the daemon's core loop) and no locking between threads. A
second process opening the same directory is refused (``flock`` on the directory), since two
writers would overwrite each other's records.

Permissions: the journal, its ``.tmp`` and its ``.corrupt-*`` copies are private (0600; see
device/journal_files.py). Whether a journal could be opened at all, without opening it:
device/journal_probe.py.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import mmap
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from tinydb.storages import Storage

from device.journal_files import FILE_MODE, create_private, tighten_modes
from device.journal_records import (
    FORMAT,
    VERSION,
    Damage,
    JournalFormatError,
    Op,
    Record,
    Tables,
    TableView,
    del_op,
    dumps,
    frame,
    header,
    live_size,
    loads,
    put_bytes,
    put_op,
    put_size,
    records,
    scan,
)

# Re-exported: the outbox and the tests name them through this module.
__all__ = ["FORMAT", "VERSION", "Damage", "JournalFormatError", "JournalStorage", "Op",
           "Record", "TableView", "del_op", "frame", "put_op", "records", "scan"]

log = logging.getLogger(__name__)


class JournalStorage(Storage):
    """TinyDB storage over a journal file (see the module docstring for the format).

    `read()` is O(1) and returns read-only `TableView`s of the live tables. `write()` (TinyDB's
    generic path, e.g. `drop_tables`) rewrites the whole file: correct but O(n), for rare
    operations. Hot paths use `commit()`, directly or through `JournalTable`.
    """

    def __init__(self, path: str | os.PathLike[str], compact_min_bytes: int = 1 << 20,
                 compact_ratio: float = 4.0,
                 on_replay_put: Callable[[str, str, dict[str, Any]], None] | None = None) -> None:
        """`on_replay_put(table, doc_id, doc)` is called for every put op the open replays, in
        file order and including documents removed later, with the decoded document: a way to
        learn something from every document without decoding them all again afterwards."""
        self.path = Path(path)
        self._on_replay_put = on_replay_put
        self.compact_min_bytes = compact_min_bytes
        self.compact_ratio = compact_ratio
        self.damage: list[Damage] = []      # what the last open found
        self.notes: list[str] = []          # other things the last open wants logged
        self.moved_aside: list[Path] = []
        self._tables: Tables = {}
        self._lazy: list[bytes] = []        # ops applied in memory, written with the next commit
        self._size = 0                      # end of the last whole record in the file
        self._live = 0                      # bytes a compaction would write (put ops)
        self._compact_at = compact_min_bytes  # journal size at which to weigh a compaction
        self._fd = -1
        self._dir_fd = -1                   # held open and flock'ed: one process at a time
        try:
            self._open()
        except BaseException:
            self._release()
            raise

    # TinyDB's Storage interface -------------------------------------------------------

    def read(self) -> dict[str, Mapping[str, Any]] | None:  # type: ignore[override]  # views
        if not self._tables:
            return None
        return {name: TableView(docs) for name, docs in self._tables.items()}

    def write(self, data: Mapping[str, Mapping[str, Any]]) -> None:
        tables: Tables = {}
        for name, docs in data.items():
            if isinstance(docs, TableView):   # unchanged since read(): keep the bytes
                tables[name] = dict(docs.raw)
            else:  # through JSON, ids included, to hold exactly what a replay would
                tables[name] = {doc_id: dumps(doc)
                                for doc_id, doc in loads(dumps(docs)).items()}
        self._rewrite(tables)

    def close(self) -> None:
        if self._fd >= 0 and self._lazy:
            with contextlib.suppress(OSError):
                self.commit([])
        self._release()

    # Journal operations ------------------------------------------------------------------

    def commit(self, ops: list[Op], lazy: bool = False) -> None:
        """Apply `ops` as one atomic record: appended and fsync'ed before memory changes.

        With `lazy`, memory changes now and the ops ride along with the next commit (or the
        next compaction): for changes whose loss in a crash is harmless."""
        # Each document is dumped once: those bytes are both written and kept in memory.
        raws = [dumps(op[3]) if op[0] == "put" else b"" for op in ops]
        parts = [put_bytes(op[1], op[2], raw) if op[0] == "put" else dumps(op)
                 for op, raw in zip(ops, raws, strict=True)]
        if not lazy:
            record = frame(b'{"ops":[' + b",".join(self._lazy + parts) + b"]}")
            self._append(header() + record if self._size == 0 else record)
            self._lazy.clear()
        for op, raw in zip(ops, raws, strict=True):
            if op[0] == "put":
                self._put(op[1], op[2], raw)
            else:
                self._delete(op[1], op[2])
        if lazy:
            self._lazy.extend(parts)
        elif self._size >= self._compact_at:
            self._maybe_compact()

    def compact(self) -> None:
        """Rewrite the journal as a snapshot of the live state (atomic; see module docstring)."""
        self._rewrite(self._tables)

    def view(self, table: str) -> TableView:
        """The live documents of `table` (empty if it does not exist), in O(1)."""
        return TableView(self._tables.get(table, {}))

    @property
    def size(self) -> int:
        """Bytes of whole records in the journal file."""
        return self._size

    # Internals ---------------------------------------------------------------------------

    def _put(self, table: str, doc_id: str, raw: bytes) -> None:
        """Put one document into memory, keeping `_live` exact."""
        docs = self._tables.setdefault(table, {})
        old = docs.get(doc_id)
        if old is not None:
            self._live -= put_size(table, doc_id, old)
        self._live += put_size(table, doc_id, raw)
        docs[doc_id] = raw

    def _delete(self, table: str, doc_ids: Iterable[str]) -> None:
        docs = self._tables.get(table, {})
        for doc_id in doc_ids:
            old = docs.pop(doc_id, None)
            if old is not None:
                self._live -= put_size(table, doc_id, old)

    def _append(self, record: bytes) -> None:
        self._check_open()
        start = self._size
        try:
            view = memoryview(record)
            done = 0
            while done < len(record):
                done += os.pwrite(self._fd, view[done:], start + done)
            os.fsync(self._fd)
        except OSError:
            # Leave only whole records behind; if even this fails, the next append overwrites
            # from `start`, and a reopen would report and clean whatever is left.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, start)
                os.fsync(self._fd)
            raise
        self._size = start + len(record)

    def _open(self) -> None:
        self.path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        self._dir_fd = os.open(self.path.parent, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fcntl.flock(self._dir_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # Two writers would overwrite each other's records: refuse the second one.
            raise OSError(errno.EBUSY, f"{self.path.parent} is in use by another process",
                          str(self.path)) from None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp_path())  # a compaction that never reached os.replace
        created = not self.path.exists()
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        if created:
            os.fsync(self._dir_fd)
        self.notes.extend(tighten_modes(self.path))
        self._size = os.fstat(self._fd).st_size
        if self._size:
            with self._contents() as buf:
                self._replay(buf)
        self._live = live_size(self._tables)
        self._compact_at = self._size + self.compact_min_bytes
        if self.damage:
            self._recover()

    @contextlib.contextmanager
    def _contents(self) -> Iterator[bytes | mmap.mmap]:
        """The file's bytes for a replay: mapped, not read, so that its pages are the kernel's
        cache and go when it is unmapped, rather than heap that the allocator keeps."""
        try:
            buf = mmap.mmap(self._fd, self._size, access=mmap.ACCESS_READ)
        except OSError:  # a file system that cannot map files (ENODEV): read it whole
            with open(self.path, "rb") as f:
                yield f.read()
            return
        with buf:
            yield buf

    def _replay(self, buf: bytes | mmap.mmap) -> None:
        tables, on_put = self._tables, self._on_replay_put
        for record, raws in records(buf, self.damage):
            if "journal" in record:
                if record["version"] > VERSION:
                    raise JournalFormatError(
                        f"{self.path} was written by journal format version "
                        f"{record['version']}; this software reads up to {VERSION}")
                continue
            for i, op in enumerate(record["ops"]):
                if op[0] == "put":
                    if on_put is not None:
                        on_put(op[1], op[2], op[3])
                    raw = raws[i] if i < len(raws) else None
                    tables.setdefault(op[1], {})[op[2]] = dumps(op[3]) if raw is None else raw
                else:
                    docs = tables.get(op[1], {})
                    for doc_id in op[2]:
                        docs.pop(doc_id, None)

    def _recover(self) -> None:
        """Rewrite the kept records cleanly; keep the damaged original beside it."""
        aside = self.path.with_name(
            f"{self.path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
        n = 1
        while aside.exists():
            aside = aside.with_name(f"{aside.name.split('~')[0]}~{n}")
            n += 1
        try:
            self._rewrite(self._tables, keep_original_as=aside)
        except OSError as e:
            # Still usable: appends go after the damage, and the next open tries again.
            self.notes.append(f"{self.path.name}: could not rewrite the damaged journal "
                              f"({e}); kept it as it is")
            return
        self.moved_aside.append(aside)

    def _rewrite(self, tables: Tables, keep_original_as: Path | None = None) -> None:
        self._check_open()
        tmp = self._tmp_path()
        live = 0
        try:
            with create_private(tmp) as f:
                f.write(header())
                for name, docs in tables.items():
                    for doc_id, raw in docs.items():
                        put = put_bytes(name, doc_id, raw)
                        live += len(put)
                        f.write(frame(b'{"ops":[' + put + b"]}"))
                f.flush()
                os.fsync(f.fileno())
            if keep_original_as is not None:
                try:
                    os.link(self.path, keep_original_as)  # the journal's inode: 0600
                except OSError:  # e.g. a file system without hard links
                    with open(self.path, "rb") as src, create_private(keep_original_as) as dst:
                        shutil.copyfileobj(src, dst)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        os.fsync(self._dir_fd)
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        self._size = os.fstat(self._fd).st_size
        self._tables = tables
        self._live = live
        self._lazy.clear()
        self._compact_at = self._size + max(self.compact_min_bytes, self._size)

    def _maybe_compact(self) -> None:
        """Compact if the journal is over `compact_ratio` times the live data; if not, look
        again only after as many bytes more again (a compaction's rewrite is O(n)).

        The live size is kept by every write: summing it here, as this once did, took 0.3 s
        with 10,000 ratings pending — on the store of whichever key press crossed the mark."""
        live = self._live
        if self._size <= self.compact_ratio * live:
            self._compact_at = self._size + max(self.compact_min_bytes, live)
            return
        try:
            self.compact()
        except OSError as e:
            # The commit itself is durable; try again after another `compact_min_bytes`.
            self._compact_at = self._size + self.compact_min_bytes
            log.warning("journal compaction of %s failed (will retry later): %s", self.path, e)

    def _check_open(self) -> None:
        if self._fd < 0:
            raise OSError(errno.EBADF, "the journal is closed", str(self.path))

    def _release(self) -> None:
        for fd in (self._fd, self._dir_fd):
            if fd >= 0:
                os.close(fd)  # closing the directory also drops the flock
        self._fd = self._dir_fd = -1

    def _tmp_path(self) -> Path:
        return self.path.with_name(self.path.name + ".tmp")
