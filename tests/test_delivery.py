"""Delivery bookkeeping: in-flight window, new ratings first, resend without receipt."""

from __future__ import annotations

from device.delivery import Delivery


def publish_all(d: Delivery, now: float, tickets: dict[str, int] | None = None) -> list[str]:
    """Publish the next batch; remember each rating's ticket in `tickets`."""
    batch = d.next_batch(now)
    for rid in batch:
        ticket = d.published(rid, now)
        if tickets is not None:
            tickets[rid] = ticket
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
    t: dict[str, int] = {}
    assert publish_all(d, 0, t) == ["r0", "r1", "r2"]
    assert d.next_batch(0) == []  # window full
    assert d.acked(t["r0"], ok=True) == "r0"
    assert publish_all(d, 0, t) == ["r3"]
    assert d.inflight() == 3
    assert d.due() == 6


def test_backlog_drains_completely_through_the_window() -> None:
    d = Delivery(resend_after_s=300, max_inflight=5)
    ids = [f"r{i}" for i in range(1000)]
    d.load(ids)
    d.on_connect(ids)
    sent: list[str] = []
    t: dict[str, int] = {}
    while True:
        batch = publish_all(d, 0, t)
        if not batch:
            break
        assert d.inflight() <= 5
        sent += batch
        for rid in batch:
            d.acked(t[rid], ok=True)
    assert sent == ids     # each once, oldest first


def test_new_rating_jumps_the_backlog() -> None:
    d = Delivery(resend_after_s=300, max_inflight=1)
    d.load(["old1", "old2"])
    d.on_connect(["old1", "old2"])
    d.added("new")
    assert d.next_batch(0) == ["new"]


def test_resend_after_timeout_without_receipt_but_not_after_receipt() -> None:
    d = Delivery(resend_after_s=300, max_inflight=10)
    d.on_connect(["a", "b"])
    t: dict[str, int] = {}
    publish_all(d, 0, t)
    d.acked(t["a"], True)
    d.acked(t["b"], True)
    d.receipted("b")
    assert d.next_deadline() == 300
    assert d.next_batch(299) == []
    assert d.next_batch(300) == ["a"]


def test_broker_refusal_is_retried_after_resend_after_s_not_at_once() -> None:
    # Regression: a refused PUBACK (e.g. v5 "not authorized") used to put the rating
    # straight back in line, so the device re-published it in a tight loop.
    d = Delivery(resend_after_s=300, max_inflight=10)
    d.on_connect(["a"])
    t: dict[str, int] = {}
    publish_all(d, 0, t)
    assert d.acked(t["a"], ok=False) == "a"
    assert d.inflight() == 0
    assert d.next_batch(1) == []
    assert d.next_batch(300) == ["a"]


def test_answer_to_an_older_copy_does_not_free_the_newer_one() -> None:
    d = Delivery(resend_after_s=10, max_inflight=1)
    d.on_connect(["a"])
    t: dict[str, int] = {}
    publish_all(d, 0, t)
    first = t["a"]
    d.on_disconnect()
    d.on_connect(["a"])
    publish_all(d, 1, t)
    assert t["a"] != first
    assert d.acked(first, ok=True) is None   # the old connection's PUBACK
    assert d.inflight() == 1                 # the new copy still holds its slot
    assert d.acked(t["a"], ok=True) == "a"


def test_no_copy_is_stacked_while_the_broker_has_not_answered() -> None:
    d = Delivery(resend_after_s=10, max_inflight=5)
    d.on_connect(["a"])
    publish_all(d, 0)
    assert d.next_batch(10) == []            # no PUBACK yet: the broker has it
    assert d.next_deadline() == 20


def test_disconnect_puts_unacked_back_in_front_and_connect_resends_everything() -> None:
    d = Delivery(resend_after_s=300, max_inflight=2)
    ids = ["a", "b", "c"]
    d.on_connect(ids)
    t: dict[str, int] = {}
    publish_all(d, 0, t)             # a, b in flight
    d.acked(t["a"], True)            # a published, waiting for receipt
    d.on_disconnect()
    assert d.inflight() == 0
    assert d.next_batch(1) == []     # nothing while disconnected
    d.on_connect(ids)                # every pending rating again (SPEC §7)
    first = publish_all(d, 1, t)
    assert first[0] == "b"           # the one never PUBACKed goes first
    for rid in first:
        d.acked(t[rid], True)
    assert sorted(first + publish_all(d, 1, t)) == ["a", "b", "c"]


def test_receipt_while_in_flight_frees_the_slot() -> None:
    d = Delivery(resend_after_s=300, max_inflight=1)
    d.on_connect(["a", "b"])
    t: dict[str, int] = {}
    publish_all(d, 0, t)
    d.receipted("a")                 # the receipt overtook the PUBACK
    assert d.inflight() == 0
    assert d.acked(t["a"], True) is None
    assert publish_all(d, 0, t) == ["b"]


def test_unknown_ticket_is_ignored() -> None:
    d = Delivery(resend_after_s=300, max_inflight=2)
    assert d.acked(99, True) is None
