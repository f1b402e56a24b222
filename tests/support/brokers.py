"""Helpers for the broker-topology tests (tests/test_broker_*.py): publishing ratings as
devices do, waiting on a condition, checking that every rating reached the platform
exactly once."""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

from tests.support.platform import RunningPlatform
from tests.support.ratings import FleetPublisher, make_rating

Sent = dict[str, dict[str, Any]]   # rating_id -> record
DEVICES = [f"421100-HG01-W{n:02d}" for n in range(1, 11)]


def wait_for(predicate: Callable[[], bool], timeout: float, what: str,
             every: float = 0.05) -> None:
    """Poll `predicate` until true; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


@contextlib.contextmanager
def publisher(broker: Any, protocol: str = "5", prefix: str = "hcp/v1"
              ) -> Iterator[FleetPublisher]:
    """A device-like publisher connected to `broker` (anything with host and port)."""
    fleet = FleetPublisher(broker.host, broker.port, prefix=prefix, protocol=protocol)
    try:
        yield fleet
    finally:
        fleet.close()


def publish_ratings(fleet: FleetPublisher, count: int, devices: list[str] = DEVICES,
                    timeout: float = 20.0) -> Sent:
    """Publish `count` ratings round-robin over `devices` (QoS 1) and wait until the
    broker acknowledged each: what a device would count as delivered."""
    sent: Sent = {}
    mids = []
    for n in range(count):
        record = make_rating(devices[n % len(devices)], level=random.randint(1, 5))
        sent[record["rating_id"]] = record
        mids.append(fleet.publish_record(record))
    fleet.wait_published(mids, timeout)
    return sent


def assert_exactly_once(platform: RunningPlatform, sent: Sent) -> None:
    """Every rating of `sent` is stored at the platform, once, and nothing else is."""
    stored = platform.control.rating_ids()
    assert len(stored) == len(set(stored)), "a rating_id stored twice"
    missing, unexpected = set(sent) - set(stored), set(stored) - set(sent)
    assert not missing and not unexpected, (f"missing {len(missing)}, "
                                            f"unexpected {len(unexpected)}")
    assert platform.control.counts()["total"] == len(sent)
