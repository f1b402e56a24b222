"""Delivery bookkeeping: in-flight window, new ratings first, resend without receipt."""

from __future__ import annotations

import itertools

from device.delivery import Delivery


def publish_all(d: Delivery, now: float, mids: itertools.count[int]) -> list[str]:
    batch = d.next_batch(now)
    for rid in batch:
        d.published(rid, next(mids), now)
    return batch


def test_nothing_is_published_while_disconnected() -> None:
    d = Delivery(resend_after_s=300, max_inflight=5)
    d.load(["a", "b"])
    assert d.next_batch(0) == []
    d.on_connect(["a", "b"])
    assert d.next_batch(0) == ["a", "b"]


def test_window_bounds_inflight_and_pubacks_open_it() -> None:
    d = Delivery(resend_after_s=300, max_inflight=3)
    ids = [f"r{i}" for i in range(10)]
    d.load(ids)
    d.on_connect(ids)
    mids = itertools.count(1)
    assert publish_all(d, 0, mids) == ["r0", "r1", "r2"]
    assert d.next_batch(0) == []  # window full
    assert d.acked(1, ok=True) == "r0"
    assert publish_all(d, 0, mids) == ["r3"]
    assert d.inflight() == 3


def test_new_rating_jumps_the_backlog() -> None:
    d = Delivery(resend_after_s=300, max_inflight=1)
    d.load(["old1", "old2"])
    d.on_connect(["old1", "old2"])
    d.added("new")
    assert d.next_batch(0) == ["new"]


def test_resend_after_timeout_without_receipt_but_not_after_receipt() -> None:
    d = Delivery(resend_after_s=300, max_inflight=10)
    d.on_connect(["a", "b"])
    mids = itertools.count(1)
    publish_all(d, 0, mids)
    d.acked(1, True)
    d.acked(2, True)
    d.receipted("b")
    assert d.next_deadline() == 300
    assert d.next_batch(299) == []
    assert d.next_batch(300) == ["a"]


def test_failed_puback_requeues() -> None:
    d = Delivery(resend_after_s=300, max_inflight=10)
    d.on_connect(["a"])
    publish_all(d, 0, itertools.count(7))
    assert d.acked(7, ok=False) == "a"
    assert d.next_batch(1) == ["a"]


def test_disconnect_puts_unacked_back_in_front_and_connect_resends_everything() -> None:
    d = Delivery(resend_after_s=300, max_inflight=2)
    ids = ["a", "b", "c"]
    d.on_connect(ids)
    mids = itertools.count(1)
    publish_all(d, 0, mids)          # a, b in flight
    d.acked(1, True)                 # a published, waiting for receipt
    d.on_disconnect()
    assert d.inflight() == 0
    d.on_connect(ids)                # every pending rating again (SPEC §7)
    first = publish_all(d, 1, mids)
    assert first[0] == "b"           # the one never PUBACKed goes first
    d.acked(3, True)
    d.acked(4, True)
    assert sorted(first + publish_all(d, 1, mids)) == ["a", "b", "c"]


def test_unknown_mid_is_ignored() -> None:
    d = Delivery(resend_after_s=300, max_inflight=2)
    assert d.acked(99, True) is None
