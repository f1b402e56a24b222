"""settle_heap: what start-up made leaves the collector's sight, and the youngest
generation is collected less often (bench/findings.md has the bridge's figures)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from common.service import YOUNG_COLLECTION_EVERY, settle_heap


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_gc")
def test_settle_heap_freezes_what_exists_and_raises_the_young_threshold() -> None:
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    settle_heap()
    assert gc.get_freeze_count() > 1000
    assert gc.get_threshold() == (YOUNG_COLLECTION_EVERY, 10, 10)


@pytest.mark.usefixtures("restored_gc")
def test_a_cycle_made_afterwards_is_still_collected() -> None:
    settle_heap(young_every=100)

    class Node:
        pass

    a, b = Node(), Node()
    a.other, b.other = b, a   # type: ignore[attr-defined]
    ref = __import__("weakref").ref(a)
    del a, b
    gc.collect()
    assert ref() is None
