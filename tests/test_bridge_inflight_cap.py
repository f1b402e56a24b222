"""The in-flight cap's signature (broker_bridge/inflight_cap.py) against traffic that is
not capped: sparse ratings, bursts that do not follow our acknowledgements, full batches.
The real capped broker is in tests/test_broker_refusals.py."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker_bridge.inflight_cap import BURST_S, IN_A_ROW, InFlightCap


def feed(cap: InFlightCap, batches: list[tuple[int, float, float, float]]) -> None:
    """(size, seconds from the previous acknowledgements to the first arrival, spread,
    seconds from the batch to its acknowledgements)."""
    now = 1000.0
    cap.acknowledged(now)
    for size, after_ack, spread, answered_in in batches:
        first = now + after_ack
        cap.batch(size, first, first + spread)
        now = first + spread + 0.05 + answered_in
        cap.acknowledged(now)


def capped(size: int, times: int) -> list[tuple[int, float, float, float]]:
    return [(size, 0.003, 0.0002, 0.002)] * times


def test_the_cap_is_named_once_per_figure(caplog: pytest.LogCaptureFixture) -> None:
    cap = InFlightCap("broker:1883", 100, 2)
    with caplog.at_level(logging.ERROR, "hcp.bridge"):
        feed(cap, capped(5, IN_A_ROW - 1))
        assert cap.suspected is None and not caplog.records
        feed(cap, capped(5, 1 + 20))
    assert cap.suspected == 5
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "lets only 5 un-acknowledged messages reach the bridge" in message
    assert "at least 200" in message   # batch_max × concurrency


def test_a_new_connection_starts_the_count_again() -> None:
    cap = InFlightCap("broker:1883", 100, 2)
    feed(cap, capped(5, IN_A_ROW - 1))
    cap.new_connection()
    feed(cap, capped(5, IN_A_ROW - 1))
    assert cap.suspected is None


def test_full_batches_and_a_larger_batch_are_no_cap() -> None:
    cap = InFlightCap("broker:1883", 100, 2)
    feed(cap, capped(100, 50))
    assert cap.suspected is None
    feed(cap, [(40, 0.003, 0.0002, 0.002)] + capped(5, 50))   # 5 is not the most held
    assert cap.suspected is None


@settings(max_examples=300)
@given(st.lists(st.tuples(st.integers(1, 99),
                          st.floats(BURST_S + 0.001, 600.0),   # not right after our acks
                          st.floats(0.0, 0.05), st.floats(0.0, 0.5)), max_size=60))
def test_traffic_that_does_not_follow_our_acknowledgements_is_never_named(
        batches: list[tuple[int, float, float, float]]) -> None:
    cap = InFlightCap("broker:1883", 100, 2)
    feed(cap, batches)
    assert cap.suspected is None
