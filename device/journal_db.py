"""TinyDB over the journal: tables whose documents have string ids chosen by the caller and
whose writes are journal records (device/journal.py), for the outbox."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

from tinydb import TinyDB
from tinydb.table import Document, Table

from device.journal import JournalStorage
from device.journal_records import TableView, del_op, dumps, put_op


class JournalTable(Table):
    """A TinyDB table whose documents have string ids chosen by the caller (a rating_id, a
    case_id, a setting name) and whose writes are journal records.

    `insert`, `upsert` of a `Document` and `remove(doc_ids=...)` cost O(1) per document: one
    record, one fsync. Everything else (update, remove by query, truncate, ...) goes through
    `_update_table`, which stays correct but is O(size of this table), like TinyDB's own.
    """

    document_id_class = str  # type: ignore[assignment]  # TinyDB assumes int ids; ours are keys

    @property
    def journal(self) -> JournalStorage:
        return cast(JournalStorage, self.storage)

    def view(self) -> TableView:
        """The live documents by id, in insertion order, in O(1) (see `TableView`)."""
        return self.journal.view(self.name)

    def get_doc(self, doc_id: str) -> Document | None:
        """The document with this id, decoded afresh, in O(1) (TinyDB's `get` is typed for
        int ids)."""
        doc = self.view().get(doc_id)
        return None if doc is None else keyed(doc_id, doc)

    def insert(self, document: Mapping[str, Any]) -> str:  # type: ignore[override]
        doc_id = _doc_id(document)
        if doc_id in self.view():
            raise ValueError(f"document {doc_id!r} already exists in table {self.name!r}")
        self.journal.commit([put_op(self.name, doc_id, document)])
        self.clear_cache()
        return doc_id

    def upsert(self, document: Mapping[str, Any], cond: Any = None) -> list[str]:  # type: ignore[override]
        if cond is not None or not isinstance(document, Document):
            return cast(list[str], super().upsert(document, cond))
        doc_id = _doc_id(document)
        merged = {**self.view().get(doc_id, {}), **document}
        self.journal.commit([put_op(self.name, doc_id, merged)])
        self.clear_cache()
        return [doc_id]

    def remove(self, cond: Any = None, doc_ids: Iterable[Any] | None = None) -> list[str]:  # type: ignore[override]
        if cond is not None or doc_ids is None:
            return cast(list[str], super().remove(cond, doc_ids))
        table = self.view()
        present = list(dict.fromkeys(str(i) for i in doc_ids if str(i) in table))
        if present:
            self.journal.commit([del_op(self.name, present)])
            self.clear_cache()
        return present

    def _read_table(self) -> TableView:  # type: ignore[override]
        # TinyDB's own reads (all, search, get, count, ...) come here: one table, in O(1).
        return self.view()

    def _update_table(self, updater: Callable[[dict[Any, Any]], None]) -> None:
        current = self.view().raw
        table: dict[Any, Any] = dict(self.view().items())  # fresh copies: updaters mutate them
        updater(table)
        gone = [doc_id for doc_id in current if doc_id not in table]
        ops = [del_op(self.name, gone)] if gone else []
        ops += [put_op(self.name, str(doc_id), doc) for doc_id, doc in table.items()
                if current.get(str(doc_id)) != dumps(doc)]
        if ops:
            self.journal.commit(ops)
        self.clear_cache()

    def _get_next_id(self) -> Any:
        raise ValueError("journal tables need explicit ids: insert Document(doc, doc_id=...)")


def keyed(doc_id: str, fields: Mapping[str, Any]) -> Document:
    """A document with a string id, for `JournalTable.insert`/`upsert` (TinyDB types ids as int)."""
    return Document(fields, doc_id)  # type: ignore[arg-type]


def _doc_id(document: Mapping[str, Any]) -> str:
    if not isinstance(document, Document) or not isinstance(document.doc_id, str):
        raise ValueError("journal tables need explicit string ids: Document(doc, doc_id=...)")
    return document.doc_id


class JournalDB(TinyDB):
    """TinyDB over a `JournalStorage`, with `JournalTable` tables."""

    table_class = JournalTable
    default_storage_class = JournalStorage  # type: ignore[assignment]

    @property
    def journal(self) -> JournalStorage:
        return cast(JournalStorage, self.storage)

    def journal_table(self, name: str) -> JournalTable:
        return cast(JournalTable, self.table(name))
