"""The journal's file format: how a record is framed, encoded and found again, whatever
happened to the bytes around it. Pure functions over bytes; device/journal.py writes and
replays the file with them.

File format (``outbox.journal``: UTF-8, normally one record per line)::

    <crc> <length> <json>\\n

- ``json`` is a compact JSON object of ``length`` bytes (decimal); ``crc`` is the CRC-32
  (zlib) of exactly those bytes, as 8 lowercase hex digits. The newline ends the record.
- The first record of a file is a header, ``{"journal": "hcp-outbox", "version": 1}``.
- Every other record is one atomic batch, ``{"ops": [op, ...]}``, with each op either
  ``["put", table, doc_id, doc]`` (insert or replace a document) or
  ``["del", table, [doc_id, ...]]``. Replay applies a record whole or not at all.

Scanning: a record is kept when its prefix parses, its CRC matches and its JSON is a
well-formed batch; the newline after it is expected but a damaged one does not cost the
record. Anything else is damage: scanning resumes at the next position where a record prefix
starts (normally the next line), so every intact record survives, and each damaged byte
range is reported with a reason.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import re
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

FORMAT = "hcp-outbox"
VERSION = 1
_PREFIX = re.compile(rb"([0-9a-f]{8}) ([0-9]{1,9}) ")

Tables = dict[str, dict[str, bytes]]  # table name -> doc_id -> the document as written (JSON)
Op = list[Any]  # ["put", table, doc_id, doc] | ["del", table, [doc_id, ...]]


class JournalFormatError(Exception):
    """The journal was written by a newer format version that this code cannot read."""


@dataclass(frozen=True)
class Damage:
    """A byte range of the journal that held no intact record."""

    start: int
    end: int
    reason: str
    records: int  # how many records were lost there (an estimate: lines or prefixes seen)


def put_op(table: str, doc_id: str, doc: Mapping[str, Any]) -> Op:
    return ["put", table, doc_id, doc]


def del_op(table: str, doc_ids: Iterable[str]) -> Op:
    return ["del", table, list(doc_ids)]


# One encoder and decoder for the module: `json.dumps` with options builds a new encoder per
# call, and `json.loads` of bytes sniffs their encoding; both cost more than the work itself on
# small documents.
ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
DECODER = json.JSONDecoder()


def dumps(value: Any) -> bytes:
    return ENCODER.encode(value).encode()


def loads(raw: bytes) -> Any:
    """Decode JSON bytes as the journal writes them (UTF-8). ValueError if they are not."""
    return DECODER.decode(raw.decode())


def put_bytes(table: str, doc_id: str, raw: bytes) -> bytes:
    """`dumps(put_op(table, doc_id, doc))` from the document's own dump `raw`, byte for byte."""
    return b'["put",%s,%s,%s]' % (dumps(table), dumps(doc_id), raw)


def put_size(table: str, doc_id: str, raw: bytes) -> int:
    """Bytes of this document's put op: what a compaction writes for it."""
    return len(raw) + len(dumps(doc_id)) + len(dumps(table)) + 10


def frame(body: bytes) -> bytes:
    """Wrap one JSON body into a journal record."""
    return b"%08x %d " % (zlib.crc32(body), len(body)) + body + b"\n"


def header() -> bytes:
    return frame(dumps({"journal": FORMAT, "version": VERSION}))


def _well_formed(record: Any) -> bool:
    if not isinstance(record, dict):
        return False
    if "journal" in record:
        return record.get("journal") == FORMAT and isinstance(record.get("version"), int)
    ops = record.get("ops")
    return isinstance(ops, list) and all(_well_formed_op(op) for op in ops)


def _well_formed_op(op: Any) -> bool:
    if not isinstance(op, list) or len(op) < 3 or not isinstance(op[1], str):
        return False
    if op[0] == "put":
        return len(op) == 4 and isinstance(op[2], str) and isinstance(op[3], dict)
    if op[0] == "del":
        return len(op) == 3 and isinstance(op[2], list) and all(isinstance(i, str) for i in op[2])
    return False


_BATCH_OPEN, _BATCH_CLOSE = '{"ops":[', "]}"


def _decode_body(body: bytes) -> tuple[Any, list[bytes | None]]:
    """A record's JSON value and, for each op of a batch laid out as `JournalStorage` writes
    it, the bytes of its put document sliced out of `body` (so that replay need not encode
    every document again): None for an op that is not a put or is laid out otherwise, and no
    list at all for other records. ValueError if `body` is not UTF-8 JSON."""
    text = body.decode()
    if text.startswith(_BATCH_OPEN) and text.endswith(_BATCH_CLOSE):
        with contextlib.suppress(ValueError):  # e.g. blanks: the general decode decides
            split = _split_batch(text)
            if split is not None:
                return split
    return DECODER.decode(text), []


def _split_batch(text: str) -> tuple[dict[str, Any], list[bytes | None]] | None:
    """`text` decoded as `{"ops":[op,op,...]}` exactly, op by op (`raw_decode` tells where
    each op's text ends), with the documents `_put_doc` finds; None if it is laid out in any
    other way, ValueError if an op is not JSON."""
    ops: list[Any] = []
    docs: list[bytes | None] = []
    pos, stop = len(_BATCH_OPEN), len(text) - len(_BATCH_CLOSE)
    if pos == stop:
        return {"ops": ops}, docs
    while True:
        op, end = DECODER.raw_decode(text, pos)
        ops.append(op)
        docs.append(_put_doc(text, pos, end, op))
        if end == stop:
            return {"ops": ops}, docs
        if end > stop or text[end] != ",":
            return None
        pos = end + 1


def _put_doc(text: str, start: int, end: int, op: Any) -> bytes | None:
    """The document of the put op whose JSON text is `text[start:end]`, as the bytes
    `put_bytes` wrote for it, or None if the op is not a put or not laid out that way."""
    if type(op) is not list or len(op) != 4 or op[0] != "put":
        return None  # not a put; any other flaw rejects the whole record afterwards
    head = f'["put",{ENCODER.encode(op[1])},{ENCODER.encode(op[2])},'
    doc_start = start + len(head)
    # The op is one JSON array: after its first three elements, written exactly as `head`,
    # comes the document; if it starts with `{` and `}]` ends the op, nothing else is there.
    if text.startswith(head, start) and text[doc_start] == "{" and text[end - 2:end] == "}]":
        return text[doc_start:end - 1].encode()
    return None


def _read_record(buf: bytes | mmap.mmap,
                 pos: int) -> tuple[dict[str, Any] | None, list[bytes | None], int, str]:
    """The record starting at `pos`, its put documents as sliced by `_decode_body` and where
    its body ends; or None and why not."""
    m = _PREFIX.match(buf, pos)
    if m is None:
        return None, [], pos, "not a record"
    end = m.end() + int(m[2])
    if end > len(buf):
        return None, [], pos, "torn record (the file ends inside it)"
    body = buf[m.end():end]
    if zlib.crc32(body) != int(m[1], 16):
        return None, [], pos, "bad checksum"
    try:
        record, docs = _decode_body(body)
    except ValueError:  # includes UnicodeDecodeError
        return None, [], pos, "bad JSON"
    except RecursionError:  # a checksum that matches, around JSON nested too deeply
        return None, [], pos, "bad JSON (nested too deeply)"
    if not _well_formed(record):
        return None, [], pos, "not a journal record"
    return record, docs, end, ""


Record = tuple[dict[str, Any], list[bytes | None]]  # a record and its put documents, as bytes


def records(buf: bytes | mmap.mmap, damage: list[Damage]) -> Iterator[Record]:
    """The intact records of a journal, one at a time, each with the bytes of its put
    documents where they could be sliced out (see `_decode_body`); the damaged byte ranges
    between them are appended to `damage` as the scan passes them."""
    bad_start, bad_reason = -1, ""

    def close_damage(end: int) -> None:
        nonlocal bad_start
        if bad_start >= 0:
            span = buf[bad_start:end]
            lost = max(1, span.count(b"\n"), len(_PREFIX.findall(span)))
            damage.append(Damage(bad_start, end, bad_reason, lost))
            bad_start = -1

    pos = 0
    while pos < len(buf):
        record, docs, end, reason = _read_record(buf, pos)
        if record is None:
            if bad_start < 0:
                bad_start, bad_reason = pos, reason
            m = _PREFIX.search(buf, pos + 1)
            pos = m.start() if m else len(buf)
            continue
        close_damage(pos)
        if buf[end:end + 1] == b"\n":
            pos = end + 1
        else:  # the record is intact but its terminator is not: lose nothing, report it
            nxt = _PREFIX.search(buf, end)
            pos = nxt.start() if nxt else len(buf)
            damage.append(Damage(end, min(end + 1, pos), "damaged end of record", 0))
            if pos > end + 1:
                # The damage goes on past the terminator, and may have taken the start of
                # the records after it: judged like any other damage (close_damage).
                bad_start, bad_reason = end + 1, "not a record"
        yield record, docs
    close_damage(len(buf))


def scan(buf: bytes) -> tuple[list[dict[str, Any]], list[Damage]]:
    """Split a journal into its intact records and the damaged byte ranges between them."""
    damage: list[Damage] = []
    return [record for record, _ in records(buf, damage)], damage


def live_size(tables: Tables) -> int:
    """The sum of `put_size` over every document, with one dump of the ids per table instead of
    one per document (this runs on open): the dump of a list of n ids is the sum of their JSON
    lengths plus n + 1 bytes of brackets and commas."""
    total = 0
    for name, docs in tables.items():
        if docs:
            ids = len(dumps(list(docs))) - len(docs) - 1
            total += sum(map(len, docs.values())) + ids + len(docs) * (len(dumps(name)) + 10)
    return total


class TableView(Mapping[str, dict[str, Any]]):
    """One table's live documents by id, in insertion order, read-only: keys, `len` and `in`
    are O(1) and decode nothing; each document read is decoded afresh from its JSON, so the
    caller owns what it gets (and reading every document is O(n) decoding)."""

    __slots__ = ("raw",)

    def __init__(self, raw: Mapping[str, bytes]) -> None:
        self.raw = raw

    def __getitem__(self, doc_id: str) -> dict[str, Any]:
        # Our own dump: one whole JSON value without surrounding blanks, hence raw_decode.
        return cast(dict[str, Any], DECODER.raw_decode(self.raw[doc_id].decode())[0])

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self.raw

    def __iter__(self) -> Iterator[str]:
        return iter(self.raw)

    def __len__(self) -> int:
        return len(self.raw)
