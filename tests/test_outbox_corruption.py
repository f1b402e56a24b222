"""A journal damaged anywhere (bit flips, zeroed ranges, truncation, a tail of zeros) always
opens: every intact record is kept, the damage is reported by byte range, the damaged file is
kept aside, and the outbox works normally afterwards. Many mutations, fixed random seed."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import pytest

from device.outbox import JOURNAL_NAME, Outbox
from tests.test_outbox_support import make_rating

ITERATIONS = 300


@pytest.fixture(scope="module")
def base_journal(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A journal with every kind of record the device writes."""
    data = tmp_path_factory.mktemp("base")
    box = Outbox(data)
    box.open()
    for seq in range(1, 31):
        box.store(make_rating(seq, level=1 + seq % 5), case_id=f"CASE-{seq}",
                  case_rated_at=1e9 + seq)
        if seq % 4 == 0:
            box.remove(box.pending_ids()[:2])
        if seq % 10 == 0:
            box.put_setting("ui", {"thanks_s": seq})
            box.record_rejected(make_rating(1000 + seq), "level out of range")
            box.forget_cases_before(1e9 + seq - 5)
    box.close()
    return (data / JOURNAL_NAME).read_bytes()


def record_spans(journal: bytes) -> list[tuple[int, int]]:
    """(start, end) of each record of a clean journal, without its newline."""
    spans, start = [], 0
    for line in journal.splitlines(keepends=True):
        spans.append((start, start + len(line) - 1))
        start += len(line)
    return spans


def expected_state(journal: bytes, mutated: bytes) -> dict[str, dict[str, Any]]:
    """What replaying only the records left intact by the mutation must give."""
    tables: dict[str, dict[str, Any]] = {}
    for start, end in record_spans(journal):
        if mutated[start:end] != journal[start:end]:
            continue
        record = json.loads(journal[start:end].split(b" ", 2)[2])
        for op in record.get("ops", []):
            if op[0] == "put":
                tables.setdefault(op[1], {})[op[2]] = op[3]
            else:
                for doc_id in op[2]:
                    tables.get(op[1], {}).pop(doc_id, None)
    return tables


def mutate(journal: bytes, rng: random.Random) -> bytes:
    data = bytearray(journal)
    kind = rng.choice(["flip", "zeros", "zeros-to-boundary", "truncate", "zero-tail", "mixed"])
    if kind in ("flip", "mixed"):
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] ^= rng.randint(1, 255)
    if kind in ("zeros", "mixed"):
        start = rng.randrange(len(data))
        length = rng.choice([1, rng.randint(2, 64), rng.randint(64, 3000)])
        data[start:start + length] = bytes(len(data[start:start + length]))
    if kind == "zeros-to-boundary":  # the damage ends with a record's newline
        boundary = rng.choice(record_spans(journal))[1] + 1
        start = max(0, boundary - rng.randint(1, 2000))
        data[start:boundary] = bytes(boundary - start)
    if kind in ("truncate", "mixed"):
        del data[rng.randrange(len(data)):]
    if kind == "zero-tail":  # a file extended by a power cut before its data reached the disk
        data += bytes(rng.randint(1, 4096))
    return bytes(data)


def state_of(box: Outbox) -> dict[str, Any]:
    return {"pending": box.pending(), "cases": box.recent_cases(),
            "rejected": box.rejected(), "ui": box.get_setting("ui"),
            "next_seq": box.next_seq()}


def state_from(tables: dict[str, dict[str, Any]]) -> dict[str, Any]:
    ratings = list(tables.get("ratings", {}).values())
    return {"pending": ratings,
            "cases": {k: v["rated_at"] for k, v in tables.get("cases", {}).items()},
            "rejected": list(tables.get("rejected", {}).values()),
            "ui": tables.get("settings", {}).get("ui", {}).get("value"),
            "next_seq": max([tables.get("meta", {}).get("next_seq", {}).get("value", 1)]
                            + [r["seq"] + 1 for r in ratings])}


def damaged_ranges(details: list[str]) -> list[tuple[int, int]]:
    return [(int(a), int(b)) for a, b in
            (re.search(r"bytes (\d+)-(\d+)", d).groups() for d in details  # type: ignore[union-attr]
             if "bytes" in d)]


def test_random_damage_never_prevents_opening_and_keeps_every_intact_record(
        base_journal: bytes, tmp_path: Path) -> None:
    rng = random.Random(20261125)
    boundaries = {0} | {end + 1 for _, end in record_spans(base_journal)}
    for i in range(ITERATIONS):
        mutated = mutate(base_journal, rng)
        data = tmp_path / f"case{i}"
        data.mkdir()
        (data / JOURNAL_NAME).write_bytes(mutated)

        box = Outbox(data)
        report = box.open()
        expected = state_from(expected_state(base_journal, mutated))
        assert state_of(box) == expected, f"iteration {i}"
        assert report.ratings == len(expected["pending"])

        clean_prefix = mutated == base_journal[:len(mutated)] and len(mutated) in boundaries
        if clean_prefix:
            assert (report.details, report.moved_aside) == ([], []), f"iteration {i}"
        else:
            assert report.details, f"iteration {i}: damage went unreported"
            (aside,) = report.moved_aside
            assert aside.read_bytes() == mutated and aside.parent == data
            # every lost record lies inside a reported range
            ranges = damaged_ranges(report.details)
            lost = [(s, min(e, len(mutated))) for s, e in record_spans(base_journal)
                    if s < len(mutated) and mutated[s:e] != base_journal[s:e]]
            for s, e in lost:
                assert any(a <= s and e <= b for a, b in ranges), (i, s, e, ranges)
            if lost:
                assert report.dropped_records >= 1
                assert report.dropped_bytes >= sum(e - s for s, e in lost)

        # the outbox works normally afterwards, and the rewritten journal is clean
        extra = make_rating(box.next_seq())
        box.store(extra)
        box.close()
        again = Outbox(data)
        second = again.open()
        assert (second.dropped_records, second.details) == (0, [])
        assert again.pending() == expected["pending"] + [extra]
        again.close()


@pytest.mark.parametrize("content", [b"", b"\n\n\n", bytes(5000), b"{not a journal}\n",
                                     bytes(range(256)) * 20])
def test_files_with_nothing_readable_open_empty(tmp_path: Path, content: bytes) -> None:
    (tmp_path / JOURNAL_NAME).write_bytes(content)
    box = Outbox(tmp_path)
    report = box.open()
    assert report.ratings == 0 and box.pending() == []
    if content:
        assert report.dropped_bytes == len(content) and report.dropped_records >= 1
        assert [p.read_bytes() for p in report.moved_aside] == [content]
    box.store(make_rating(1))
    box.close()
    assert Outbox(tmp_path).open().ratings == 1
