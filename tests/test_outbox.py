"""The outbox as the daemon and the MQTT code use it: ratings until receipts, next seq,
case memory, rejected ratings, settings; fsync before store() returns; disk full; and a
cost per stored rating that does not grow with the backlog. Real files, real fsync."""

from __future__ import annotations

import errno
import json
import os
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from device.journal import JournalStorage
from device.journal_db import JournalDB, JournalTable
from device.outbox import JOURNAL_NAME, Outbox, StorageError
from tests.test_outbox_support import make_rating


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    box = Outbox(tmp_path / "data")
    box.open()
    yield box
    box.close()


def reopen(box: Outbox, data_dir: Path) -> Outbox:
    box.close()
    again = Outbox(data_dir)
    again.open()
    return again


def test_ratings_stay_pending_in_store_order_until_a_receipt(tmp_path: Path) -> None:
    data = tmp_path / "data"
    box = Outbox(data)
    report = box.open()
    assert (report.ratings, report.dropped_records, report.details) == (0, 0, [])
    assert data.is_dir()
    ratings = [make_rating(seq) for seq in range(1, 6)]
    for r in ratings:
        box.store(r)
    assert box.pending() == ratings
    assert box.pending_ids() == [r["rating_id"] for r in ratings]
    assert len(box) == 5
    assert box.get(ratings[2]["rating_id"]) == ratings[2]
    assert box.get("f" * 32) is None
    assert box.oldest_rated_at() == ratings[0]["rated_at"]

    assert box.remove([ratings[0]["rating_id"], ratings[3]["rating_id"], "0" * 32]) == 2
    assert box.remove([ratings[0]["rating_id"]]) == 0                     # a duplicate receipt
    assert box.oldest_rated_at() == ratings[1]["rated_at"]

    box = reopen(box, data)
    assert box.pending() == [ratings[1], ratings[2], ratings[4]]
    assert len(box) == 3
    box.remove(box.pending_ids())
    assert box.oldest_rated_at() is None and box.pending() == []
    box.close()


def test_open_report_counts_pending_ratings(tmp_path: Path) -> None:
    box = Outbox(tmp_path)
    box.open()
    for seq in range(3):
        box.store(make_rating(seq))
    box.close()
    again = Outbox(tmp_path)
    assert again.open().ratings == 3
    again.close()


def test_next_seq_survives_removal_restart_and_compaction(tmp_path: Path) -> None:
    box = Outbox(tmp_path, compact_min_bytes=4096)
    box.open()
    assert box.next_seq() == 1
    for seq in range(40, 60):
        box.store(make_rating(seq))
    assert box.next_seq() == 60
    box.remove(box.pending_ids())          # nothing pending: the seq must not fall back
    for _ in range(30):                    # and enough churn to compact a few times
        r = make_rating(10)                # an out-of-order seq does not lower next_seq
        box.store(r)
        box.remove([r["rating_id"]])
    assert (tmp_path / JOURNAL_NAME).stat().st_size < 4096 + 2048
    box = reopen(box, tmp_path)
    assert box.next_seq() == 60 and len(box) == 0
    box.close()


def test_case_memory_keeps_its_monotonic_stamp_for_the_same_boot_only(
        tmp_path: Path) -> None:
    box = Outbox(tmp_path)
    box.open()
    box.store(make_rating(1), case_id="CASE-A", case_rated_at=1000.0, case_rated_mono=50.0,
              boot_id="boot-1")
    box.store(make_rating(2), case_id="CASE-B", case_rated_at=1000.0)     # no stamp
    box = reopen(box, tmp_path)
    assert box.recent_cases_mono("boot-1") == {"CASE-A": 50.0}
    assert box.recent_cases_mono("boot-2") == {} and box.recent_cases_mono(None) == {}
    # Old by the wall clock; by this boot's monotonic clock, A is not: it stays.
    box.forget_cases_before(5000.0, mono=40.0, boot_id="boot-1")
    assert box.recent_cases() == {"CASE-A": 1000.0}
    box.forget_cases_before(5000.0, mono=60.0, boot_id="boot-1")       # old by both
    assert box.recent_cases() == {}
    box.close()


def test_cases_stay_unannounced_until_marked_and_the_mark_rides_on_the_next_write(
        tmp_path: Path) -> None:
    box = Outbox(tmp_path)
    box.open()
    a, b = make_rating(1), make_rating(2)
    box.store(a, case_id="CASE-A", case_rated_at=1000.0)
    box.store(b, case_id="CASE-B", case_rated_at=2000.0)
    box.store(make_rating(3))                                              # spontaneous
    assert box.unannounced_cases() == [("CASE-A", a["rating_id"], a["level"]),
                                       ("CASE-B", b["rating_id"], b["level"])]
    size = (tmp_path / JOURNAL_NAME).stat().st_size
    box.mark_announced(["CASE-A", "CASE-UNKNOWN"])
    assert [c for c, _, _ in box.unannounced_cases()] == ["CASE-B"]
    assert (tmp_path / JOURNAL_NAME).stat().st_size == size               # lazy: no write yet
    box.store(make_rating(4))
    box = reopen(box, tmp_path)
    assert [c for c, _, _ in box.unannounced_cases()] == ["CASE-B"]
    assert box.recent_cases() == {"CASE-A": 1000.0, "CASE-B": 2000.0}   # still remembered
    box.close()


def test_case_memory_is_stored_with_the_rating_and_forgotten_lazily(tmp_path: Path) -> None:
    box = Outbox(tmp_path)
    box.open()
    box.store(make_rating(1), case_id="CASE-A", case_rated_at=1000.0)
    box.store(make_rating(2), case_id="CASE-B", case_rated_at=2000.0)
    box.store(make_rating(3))                                              # spontaneous
    assert box.recent_cases() == {"CASE-A": 1000.0, "CASE-B": 2000.0}
    size = (tmp_path / JOURNAL_NAME).stat().st_size
    box.forget_cases_before(1500.0)
    assert box.recent_cases() == {"CASE-B": 2000.0}
    assert (tmp_path / JOURNAL_NAME).stat().st_size == size               # lazy: no write yet
    box.store(make_rating(4), case_id="CASE-A", case_rated_at=3000.0)    # rated again later
    box = reopen(box, tmp_path)
    assert box.recent_cases() == {"CASE-B": 2000.0, "CASE-A": 3000.0}
    box.close()


def test_rejected_ratings_keep_the_last_hundred(tmp_path: Path) -> None:
    box = Outbox(tmp_path)
    box.open()
    ratings = [make_rating(seq) for seq in range(105)]
    for r in ratings:
        box.record_rejected(r, f"bad field {r['seq']}")
    box.record_rejected(ratings[50], "rejected again")                     # moves to the end
    box = reopen(box, tmp_path)
    kept = box.rejected()
    assert len(kept) == 100
    assert [k["rating"]["seq"] for k in kept] == list(range(5, 50)) + list(range(51, 105)) + [50]
    assert kept[-1]["error"] == "rejected again" and kept[0]["error"] == "bad field 5"
    box.close()


def test_settings_persist(tmp_path: Path) -> None:
    box = Outbox(tmp_path)
    box.open()
    assert box.get_setting("ui") is None
    box.put_setting("ui", {"window_name": "03号窗口 不动产登记", "thanks_s": 2.5})
    box.put_setting("ui", {"window_name": "04号窗口", "thanks_s": 3})
    box.put_setting("flag", False)
    box = reopen(box, tmp_path)
    assert box.get_setting("ui") == {"window_name": "04号窗口", "thanks_s": 3}
    assert box.get_setting("flag") is False
    assert box.disk_free_mb() > 0
    box.close()


def test_using_a_closed_outbox_is_a_storage_error(tmp_path: Path) -> None:
    box = Outbox(tmp_path)
    with pytest.raises(StorageError, match="not open"):
        box.store(make_rating(1))
    box.open()
    box.close()
    with pytest.raises(StorageError, match="not open"):
        box.pending()


def test_an_unusable_data_dir_is_a_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StorageError, match="cannot create the outbox directory"):
        Outbox(blocker / "data")
    (tmp_path / "data" / JOURNAL_NAME).mkdir(parents=True)
    with pytest.raises(StorageError, match="cannot open the outbox"):
        Outbox(tmp_path / "data").open()


def test_store_returns_only_after_the_record_is_fsynced(
        outbox: Outbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """"Thanks shown" implies "survives a power cut": the rating's bytes are written and then
    fsync'ed, once, and nothing is written after that fsync before store() returns."""
    outbox.store(make_rating(1))
    journal = tmp_path / "data" / JOURNAL_NAME
    rating = make_rating(2)
    calls: list[str] = []
    real_pwrite, real_fsync = os.pwrite, os.fsync

    def pwrite(fd: int, data: Any, offset: int) -> int:
        calls.append("write")
        return real_pwrite(fd, data, offset)

    def fsync(fd: int) -> None:
        real_fsync(fd)
        on_disk = rating["rating_id"].encode() in journal.read_bytes()
        calls.append("fsync" if on_disk else "fsync before the rating was written")

    monkeypatch.setattr(os, "pwrite", pwrite)
    monkeypatch.setattr(os, "fsync", fsync)
    outbox.store(rating, case_id="CASE-2", case_rated_at=1.0)
    assert calls == ["write", "fsync"]


def test_disk_full_raises_storage_error_and_a_later_store_works(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    box = Outbox(data)
    box.open()
    kept = make_rating(1)
    box.store(kept, case_id="CASE-1", case_rated_at=1.0)
    journal_before = (data / JOURNAL_NAME).read_bytes()
    rating = make_rating(2)
    real_pwrite = os.pwrite
    calls: list[int] = []

    def disk_fills_up(fd: int, data: Any, offset: int) -> int:
        calls.append(1)
        if len(calls) == 1:            # half the record fits, then the disk is full
            return real_pwrite(fd, data[: len(data) // 2], offset)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as m:
        m.setattr(os, "pwrite", disk_fills_up)
        with pytest.raises(StorageError, match="No space left on device") as full:
            box.store(rating, case_id="CASE-2", case_rated_at=2.0)
        assert full.value.disk_full
        with pytest.raises(StorageError, match="No space left on device"):
            box.put_setting("ui", {"x": 1})
    assert (data / JOURNAL_NAME).read_bytes() == journal_before
    assert box.pending() == [kept] and box.next_seq() == 2
    assert box.recent_cases() == {"CASE-1": 1.0}

    box.store(rating, case_id="CASE-2", case_rated_at=2.0)                # space is back
    box = reopen(box, data)
    assert box.pending() == [kept, rating] and box.next_seq() == 3
    box.close()


def test_a_failed_receipt_write_keeps_the_ratings_pending(
        outbox: Outbox, monkeypatch: pytest.MonkeyPatch) -> None:
    r = make_rating(1)
    outbox.store(r)

    def eio(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    with monkeypatch.context() as m:
        m.setattr(os, "fsync", eio)
        with pytest.raises(StorageError, match="Input/output error") as failed:
            outbox.remove([r["rating_id"]])
    assert not failed.value.disk_full  # an I/O error is not cured by freeing space
    assert outbox.pending_ids() == [r["rating_id"]]
    assert outbox.remove([r["rating_id"]]) == 1


def test_cost_of_one_store_does_not_grow_with_the_backlog(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The structural half of the benchmark: one store appends the same bytes with one
    fsync at backlog 1 and at backlog 5,000, and never takes TinyDB's O(n) paths."""
    fsyncs: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        fsyncs.append(fd)
        real_fsync(fd)

    def o_n(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("an O(n) path on the hot path")

    def one_store(box: Outbox, journal: Path, seq: int) -> int:
        size = journal.stat().st_size
        rating = make_rating(seq, rating_id=f"{seq:032x}")
        fsyncs.clear()
        with monkeypatch.context() as m:
            m.setattr(os, "fsync", counting_fsync)
            for name in ("write", "compact", "_rewrite"):
                m.setattr(JournalStorage, name, o_n)
            m.setattr(JournalTable, "_update_table", o_n)
            box.store(rating, case_id=rating["case"]["case_id"], case_rated_at=1e9)
        assert len(fsyncs) == 1
        grown = journal.stat().st_size - size
        assert grown < 2 * len(json.dumps(rating, ensure_ascii=False).encode())
        return grown

    small = Outbox(tmp_path / "small")
    small.open()
    small.store(make_rating(1))
    at_small_backlog = one_store(small, tmp_path / "small" / JOURNAL_NAME, 100_000)
    small.close()

    # A backlog of 5,000 as a compaction leaves it (5,000 fsync'ed stores would be slow):
    # TinyDB's own full-write path, then a normal open that replays it.
    backlog = [make_rating(seq) for seq in range(2, 5002)]
    with JournalDB(tmp_path / "large" / JOURNAL_NAME) as db:
        db.storage.write({
            "ratings": {r["rating_id"]: r for r in backlog},
            "cases": {r["case"]["case_id"]: {"rated_at": 1e9} for r in backlog},
            "meta": {"next_seq": {"value": 5002}},
        })
    large = Outbox(tmp_path / "large")
    assert large.open().ratings == 5000
    at_large_backlog = one_store(large, tmp_path / "large" / JOURNAL_NAME, 100_000)
    assert at_large_backlog == at_small_backlog

    # receipts too: one record and one fsync for a batch, at any backlog
    journal = tmp_path / "large" / JOURNAL_NAME
    size = journal.stat().st_size
    fsyncs.clear()
    with monkeypatch.context() as m:
        m.setattr(os, "fsync", counting_fsync)
        m.setattr(JournalTable, "_update_table", o_n)
        assert large.remove(large.pending_ids()[:100]) == 100
    assert len(fsyncs) == 1
    assert journal.stat().st_size - size < 100 * 40
    large.close()


def test_a_second_process_cannot_open_the_same_outbox(tmp_path: Path) -> None:
    first = Outbox(tmp_path)
    first.open()
    with pytest.raises(StorageError, match="in use by another process"):
        Outbox(tmp_path).open()
    first.store(make_rating(1))                   # the first one is unaffected
    first.close()
    second = Outbox(tmp_path)
    assert second.open().ratings == 1             # and the lock goes with the first
    second.close()


def test_pending_ratings_cost_little_memory_and_opening_does_not_load_the_whole_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The device must stay small with a long backlog (docs/benchmarks.md, footprint): each
    pending rating and its case memory stay in memory as the ~0.7 KiB of JSON they were
    journaled as (decoded objects took 3.6 KiB), and opening streams the journal instead of
    reading it all and decoding every record before applying any (a transient peak of 6.5
    times the file, which the allocator then keeps)."""
    n = 3000
    box = Outbox(tmp_path)
    box.open()
    with monkeypatch.context() as m:
        m.setattr(os, "fsync", lambda fd: None)   # building the backlog is not the subject
        ratings = [make_rating(seq) for seq in range(1, n + 1)]
        for r in ratings:
            box.store(r, case_id=r["case"]["case_id"], case_rated_at=1.7e9 + r["seq"])
    box.close()
    file_size = (tmp_path / JOURNAL_NAME).stat().st_size

    tracemalloc.start()
    try:
        box = Outbox(tmp_path)
        assert box.open().ratings == n
        kept, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert kept / n < 1.25 * 1024, f"{kept / n:.0f} bytes kept per pending rating"
    assert peak - kept < file_size / 2, f"open peaked {peak - kept} bytes above what it kept"
    # and nothing is lost by the compact form
    assert box.get(ratings[1234]["rating_id"]) == ratings[1234]
    assert box.pending() == ratings and box.next_seq() == n + 1
    assert box.recent_cases()["CASE-2026-00000007"] == 1.7e9 + 7
    box.close()
