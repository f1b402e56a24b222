"""Shared helpers for the outbox tests (no tests here: the name only keeps it among the
outbox's own files). `make_rating` builds a realistic SPEC §6 record (~600 bytes of JSON)."""

from __future__ import annotations

from typing import Any

from tests.support import ratings


def make_rating(seq: int, rating_id: str | None = None, level: int = 5) -> dict[str, Any]:
    """Rating number `seq` of the outbox tests (one builder for the whole suite)."""
    record = ratings.numbered_rating(seq)
    record["level"], record["reason"] = level, "R02" if level <= 2 else None
    if rating_id:
        record["rating_id"] = rating_id
    return record
