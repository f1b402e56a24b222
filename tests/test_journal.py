"""Unit tests of the journal storage: TinyDB round trips, torn tails at every offset,
compaction, write failures (ENOSPC, EIO) and recovery rules. Real files, real fsync."""

from __future__ import annotations

import errno
import json
import mmap
import os
from pathlib import Path
from typing import Any

import pytest
from tinydb import Query

from device.journal import JournalFormatError, JournalStorage, frame, put_op, scan
from device.journal_db import JournalDB, keyed
from device.journal_records import dumps


def open_db(path: Path, **kwargs: Any) -> JournalDB:
    return JournalDB(path, **kwargs)


def contents(db: JournalDB) -> dict[str, dict[str, Any]]:
    return {name: dict(db.journal_table(name).view()) for name in sorted(db.tables())}


def test_tinydb_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "j"
    with open_db(path) as db:
        people = db.journal_table("people")
        people.insert(keyed("a", {"name": "王晓红", "n": 1}))
        people.insert(keyed("b", {"name": "李明", "n": 2}))
        people.insert(keyed("c", {"name": "张伟", "n": 3}))
        people.upsert(keyed("b", {"n": 20}))                 # merge, like TinyDB
        people.remove(doc_ids=["a", "missing"])
        people.update({"seen": True}, Query().n == 3)                   # generic O(n) path
        db.journal_table("other").insert(keyed("k", {"x": [1, 2]}))
        db.journal_table("gone").insert(keyed("z", {}))
        db.journal_table("gone").truncate()
        before = contents(db)
        assert people.search(Query().seen == True) == [{"name": "张伟", "n": 3, "seen": True}]  # noqa: E712
        assert people.get_doc("b") == {"name": "李明", "n": 20}
        b = people.get_doc("b")
        assert b is not None and str(b.doc_id) == "b"

    with open_db(path) as db:
        assert contents(db) == before
        assert list(db.journal_table("people").view()) == ["b", "c"]   # insertion order
        assert db.journal.damage == []


def test_inserting_without_an_explicit_id_or_twice_is_refused(tmp_path: Path) -> None:
    with open_db(tmp_path / "j") as db:
        table = db.journal_table("t")
        with pytest.raises(ValueError, match="explicit"):
            table.insert({"no": "id"})
        table.insert(keyed("x", {}))
        with pytest.raises(ValueError, match="already exists"):
            table.insert(keyed("x", {}))


def test_drop_table_uses_the_full_rewrite_path_and_persists(tmp_path: Path) -> None:
    path = tmp_path / "j"
    with open_db(path) as db:
        db.journal_table("keep").insert(keyed("1", {"v": 1}))
        db.journal_table("drop").insert(keyed("2", {"v": 2}))
        db.drop_table("drop")
    with open_db(path) as db:
        assert contents(db) == {"keep": {"1": {"v": 1}}}


def build_journal(path: Path, n: int) -> list[bytes]:
    """A journal of `n` single-put records; returns its lines (each with its newline)."""
    with open_db(path) as db:
        for i in range(n):
            db.journal_table("t").insert(keyed(str(i), {"i": i, "pad": "好" * 50}))
    return path.read_bytes().splitlines(keepends=True)


def test_torn_tail_at_every_byte_offset_of_the_last_record(tmp_path: Path) -> None:
    lines = build_journal(tmp_path / "full", 4)
    head, last = b"".join(lines[:-1]), lines[-1]
    for cut in range(len(last)):
        d = tmp_path / f"cut{cut}"
        d.mkdir()
        path = d / "j"
        path.write_bytes(head + last[:cut])
        with open_db(path) as db:
            ids = list(db.journal_table("t").view())
            if cut == len(last) - 1:                 # only the newline is missing
                assert ids == ["0", "1", "2", "3"]
            else:
                assert ids == ["0", "1", "2"], cut
            if cut == 0:                             # a clean file: nothing to report
                assert db.journal.damage == [] and db.journal.moved_aside == []
                continue
            (damage,) = db.journal.damage
            assert damage.end == len(head) + cut
            if cut < len(last) - 1:
                assert (damage.start, damage.records) == (len(head), 1)
            # the evidence is kept byte for byte, and the journal itself is clean again
            (aside,) = db.journal.moved_aside
            assert aside.read_bytes() == head + last[:cut]
            assert scan(path.read_bytes())[1] == []
            db.journal_table("t").insert(keyed("new", {"after": cut}))
        with open_db(path) as db:
            assert db.journal.damage == []
            assert list(db.journal_table("t").view())[-1] == "new"


def test_a_damaged_record_terminator_loses_no_record(tmp_path: Path) -> None:
    path = tmp_path / "j"
    lines = build_journal(path, 3)
    data = bytearray(path.read_bytes())
    newline_of_second = len(lines[0]) + len(lines[1]) - 1
    data[newline_of_second] = ord("X")
    path.write_bytes(bytes(data))
    with open_db(path) as db:
        assert list(db.journal_table("t").view()) == ["0", "1", "2"]
        (damage,) = db.journal.damage
        assert (damage.start, damage.end, damage.records) == (newline_of_second,
                                                              newline_of_second + 1, 0)


def test_damage_from_a_terminator_into_the_next_record_counts_that_record(
        tmp_path: Path) -> None:
    """Zeros from record 0's newline into record 1's start (line 0 is the header): record 0
    is intact and kept, record 1 is lost, and the report must count it (it said 0 records:
    the whole range was taken for a damaged terminator)."""
    path = tmp_path / "j"
    lines = build_journal(path, 4)
    data = bytearray(path.read_bytes())
    newline_of_second = len(lines[0]) + len(lines[1]) - 1
    data[newline_of_second:newline_of_second + 11] = bytes(11)
    path.write_bytes(bytes(data))
    with open_db(path) as db:
        assert list(db.journal_table("t").view()) == ["0", "2", "3"]
        damage = db.journal.damage
        assert sum(d.records for d in damage) == 1
        assert (damage[0].start, damage[-1].end) == (newline_of_second,
                                                     sum(map(len, lines[:3])))


def test_merged_records_after_a_lost_newline_are_both_recovered() -> None:
    a = frame(dumps({"ops": [put_op("t", "a", {})]}))
    b = frame(dumps({"ops": [put_op("t", "b", {})]}))
    records, damage = scan(b"garbage" + a[:-1] + b)
    assert [r["ops"][0][2] for r in records] == ["a", "b"]
    assert [(d.start, d.end, d.records) for d in damage] == [(0, 7, 1),
                                                             (7 + len(a) - 1, 7 + len(a) - 1, 0)]


def test_records_with_valid_checksum_but_unknown_shape_are_dropped() -> None:
    good = frame(dumps({"ops": [put_op("t", "a", {})]}))
    odd = frame(dumps({"ops": [["rename", "t", "a", "b"]]}))
    records, damage = scan(odd + good)
    assert len(records) == 1
    assert [(d.start, d.end, d.reason) for d in damage] == [(0, len(odd), "not a journal record")]


def test_newer_format_version_is_refused_not_misread(tmp_path: Path) -> None:
    path = tmp_path / "j"
    path.write_bytes(frame(dumps({"journal": "hcp-outbox", "version": 99})))
    with pytest.raises(JournalFormatError, match="version 99"):
        open_db(path)


def test_compaction_keeps_every_live_document_in_order(tmp_path: Path) -> None:
    path = tmp_path / "j"
    with open_db(path) as db:
        t = db.journal_table("t")
        for i in range(200):
            t.insert(keyed(f"{i:03d}", {"i": i, "pad": "x" * 200}))
        t.remove(doc_ids=[f"{i:03d}" for i in range(0, 200, 3)])
        t.upsert(keyed("001", {"i": -1}))
        db.journal_table("meta").insert(keyed("next_seq", {"value": 12345}))
        before, size_before = contents(db), path.stat().st_size
        db.journal.compact()
        assert path.stat().st_size < size_before
        assert contents(db) == before
        assert not (tmp_path / "j.tmp").exists()
        t.insert(keyed("after", {"i": 1000}))                 # appends still work
    with open_db(path) as db:
        before["t"]["after"] = {"i": 1000}
        assert contents(db) == before
        assert list(db.journal_table("t").view()) == list(before["t"])


def test_automatic_compaction_bounds_the_file_and_is_amortised(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rewrites: list[int] = []
    appended: list[int] = []
    real_compact, real_pwrite = JournalStorage.compact, os.pwrite

    def counting_compact(self: JournalStorage) -> None:
        rewrites.append(self.size)
        real_compact(self)

    def counting_pwrite(fd: int, data: Any, offset: int) -> int:
        appended.append(len(data))
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(JournalStorage, "compact", counting_compact)
    monkeypatch.setattr(os, "pwrite", counting_pwrite)
    path = tmp_path / "j"
    with open_db(path, compact_min_bytes=16 * 1024) as db:
        t = db.journal_table("t")
        for i in range(600):       # a steady state: one in, one out, 5 pending
            t.insert(keyed(str(i), {"i": i, "pad": "x" * 300}))
            if i >= 5:
                t.remove(doc_ids=[str(i - 5)])
            assert path.stat().st_size < 2 * 16 * 1024
        assert list(t.view()) == [str(i) for i in range(595, 600)]
    # each compaction writes ~2 KiB and follows at least ~14 KiB of appends
    assert 5 <= len(rewrites) <= sum(appended) // (12 * 1024) + 1
    with open_db(path) as db:
        assert list(db.journal_table("t").view()) == [str(i) for i in range(595, 600)]


def test_leftover_temp_file_of_an_interrupted_compaction_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "j"
    build_journal(path, 2)
    (tmp_path / "j.tmp").write_bytes(b"half a snapshot")
    with open_db(path) as db:
        assert list(db.journal_table("t").view()) == ["0", "1"]
        assert db.journal.damage == []
    assert not (tmp_path / "j.tmp").exists()


def fail_after(monkeypatch: pytest.MonkeyPatch, name: str, err: int,
               partial: bool = False) -> None:
    """Make os.<name> fail with `err`; a pwrite first writes half its bytes, like a disk
    that fills up in the middle of a record."""
    real = getattr(os, name)
    calls = []

    def failing(fd: int, *args: Any) -> Any:
        calls.append(1)
        if partial and len(calls) == 1:
            data, offset = args
            return real(fd, data[: len(data) // 2], offset)
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(os, name, failing)


@pytest.mark.parametrize("name,err,partial", [("pwrite", errno.ENOSPC, True),
                                              ("pwrite", errno.ENOSPC, False),
                                              ("fsync", errno.EIO, False)])
def test_a_failed_append_leaves_the_journal_valid_and_unchanged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, err: int,
        partial: bool) -> None:
    path = tmp_path / "j"
    build_journal(path, 3)
    with open_db(path) as db:
        t = db.journal_table("t")
        before_bytes, before = path.read_bytes(), contents(db)
        with monkeypatch.context() as m:
            fail_after(m, name, err, partial)
            with pytest.raises(OSError) as info:
                t.insert(keyed("x", {"lost": True}))
            assert info.value.errno == err
        assert path.read_bytes() == before_bytes
        assert contents(db) == before                                    # memory untouched
        t.insert(keyed("y", {"kept": True}))                   # space is back
    with open_db(path) as db:
        assert db.journal.damage == []
        assert list(db.journal_table("t").view()) == ["0", "1", "2", "y"]


def test_a_damaged_journal_that_cannot_be_rewritten_still_opens(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "j"
    lines = build_journal(path, 3)
    path.write_bytes(b"".join(lines) + b"00000000 999 {torn")
    with monkeypatch.context() as m:
        def no_space(*args: Any, **kwargs: Any) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")
        m.setattr(JournalStorage, "_rewrite", no_space)
        with open_db(path) as db:
            assert db.journal.notes and "could not rewrite" in db.journal.notes[0]
            assert db.journal.moved_aside == []
            db.journal_table("t").insert(keyed("new", {}))     # appends after damage
    with open_db(path) as db:                                            # space is back
        assert list(db.journal_table("t").view()) == ["0", "1", "2", "new"]
        assert len(db.journal.damage) == 1 and len(db.journal.moved_aside) == 1
    with open_db(path) as db:
        assert db.journal.damage == []


def test_lazy_ops_ride_along_with_the_next_commit(tmp_path: Path) -> None:
    path = tmp_path / "j"
    build_journal(path, 3)
    with open_db(path) as db:
        size = path.stat().st_size
        db.journal.commit([["del", "t", ["0"]]], lazy=True)
        assert list(db.journal_table("t").view()) == ["1", "2"]
        assert path.stat().st_size == size                                # nothing written yet
        db.journal_table("u").insert(keyed("x", {}))
        last = path.read_bytes().splitlines()[-1]
        assert json.loads(last.split(b" ", 2)[2])["ops"][0] == ["del", "t", ["0"]]
    with open_db(path) as db:
        assert list(db.journal_table("t").view()) == ["1", "2"]


def test_a_record_is_the_compact_dump_of_its_batch_and_reads_are_fresh_copies(
        tmp_path: Path) -> None:
    """The in-memory form (each document as the bytes it was written with) changes nothing
    on disk: a record is still exactly the compact dump of `{"ops": [...]}`."""
    path = tmp_path / "j"
    doc = {"name": "王晓红", "tags": ["a", "b"], "n": 1.5, "none": None}
    with open_db(path) as db:
        t = db.journal_table("t")
        t.insert(keyed("a", doc))
        last = path.read_bytes().splitlines(keepends=True)[-1]
        assert last == frame(dumps({"ops": [put_op("t", "a", doc)]}))
        got = t.get_doc("a")
        assert got == doc
        assert got is not None
        got["tags"].append("mutated")                       # the caller owns what it gets
        assert t.get_doc("a") == doc and t.all() == [doc]
    with open_db(path) as db:
        assert db.journal_table("t").get_doc("a") == doc


TRICKY = {"s": '}],["put","t","b",{"x":1}]]}', "nested": [["put", "t", "b", {}]],
          "line": "王\u2028\\\"", "e": {}, "f": 1e300, "big": 10**30}


def test_documents_that_look_like_journal_syntax_survive_replay_and_compaction(
        tmp_path: Path) -> None:
    path = tmp_path / "j"
    with open_db(path) as db:
        db.journal.commit([put_op("t", "a", TRICKY), put_op("t", "b", {"after": True}),
                           ["del", "t", ["nothing"]], put_op("t", 'c"]', TRICKY)])
        before = contents(db)
    for _ in range(2):
        with open_db(path) as db:
            assert contents(db) == before
            assert list(db.journal_table("t").view()) == ["a", "b", 'c"]']
            db.journal.compact()


def test_records_laid_out_by_another_writer_are_read_the_same(tmp_path: Path) -> None:
    """Blanks, escaped non-ASCII and key order as `json.dumps` writes by default: the same
    documents as a compact record, and a compaction writes them compactly."""
    path = tmp_path / "j"
    batch = {"ops": [["put", "t", "a", {"name": "王晓红", "n": 1}], ["del", "t", ["x"]],
                     ["put", "t", "b", {"k": [1, 2]}], ["put", "u", "c", {}]]}
    spaced = json.dumps(batch).encode()                      # ", " and ": ", \u escapes
    assert b" " in spaced and b"\\u" in spaced
    path.write_bytes(frame(dumps({"journal": "hcp-outbox", "version": 1})) + frame(spaced)
                     + frame(b'{"ops": [ ["put","t","d",{"z": 0} ] ]}')
                     + frame(b'{"ops":[["put", "t","e",{"q":1}],["put","t","f",{"r":2} ]]}')
                     + frame(b'{"ops":[["put","t","g",{}], ["put","t","h",{}]]}'))
    expected = {"t": {"a": {"name": "王晓红", "n": 1}, "b": {"k": [1, 2]}, "d": {"z": 0},
                      "e": {"q": 1}, "f": {"r": 2}, "g": {}, "h": {}},
                "u": {"c": {}}}
    with open_db(path) as db:
        assert db.journal.damage == []
        assert contents(db) == expected
        db.journal.compact()
    with open_db(path) as db:
        assert contents(db) == expected
        for line in path.read_bytes().splitlines()[1:]:
            body = line.split(b" ", 2)[2]
            assert body == dumps(json.loads(body))          # compact again


def test_replay_shows_every_put_in_file_order(tmp_path: Path) -> None:
    path = tmp_path / "j"
    with open_db(path) as db:
        t = db.journal_table("t")
        t.insert(keyed("a", {"v": 1}))
        t.insert(keyed("b", {"v": 2}))
        t.remove(doc_ids=["a"])
        t.upsert(keyed("b", {"w": 3}))
    seen: list[tuple[str, str, dict[str, Any]]] = []
    with open_db(path, on_replay_put=lambda *put: seen.append(put)) as db:
        assert contents(db) == {"t": {"b": {"v": 2, "w": 3}}}
    assert seen == [("t", "a", {"v": 1}), ("t", "b", {"v": 2}), ("t", "b", {"v": 2, "w": 3})]


def test_a_journal_on_a_file_system_that_cannot_map_files_still_opens(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "j"
    build_journal(path, 3)
    path.write_bytes(path.read_bytes() + b"00000000 999 {torn")

    def no_mmap(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENODEV, os.strerror(errno.ENODEV))

    monkeypatch.setattr(mmap, "mmap", no_mmap)
    with open_db(path) as db:
        assert list(db.journal_table("t").view()) == ["0", "1", "2"]
        assert len(db.journal.damage) == 1
