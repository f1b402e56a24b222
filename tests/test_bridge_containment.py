"""What cannot stop the bridge: records that crashed a platform worker (dates at the ends
of the representable range, in the gov profile), a worker that raises for no reason the
bridge knows, a worker thread that is gone. The broker side is the fake link of
tests/test_bridge_loop.py; the platform is the real reference platform."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from broker_bridge.bridge import Bridge
from broker_bridge.config import MqttSettings, parse_bridge_config
from broker_bridge.metrics import BridgeMetrics
from broker_bridge.mqtt_link import LinkEvent
from tests.support.platform import RunningPlatform
from tests.support.ratings import make_rating
from tests.test_bridge_loop import FakeLink

EDGE_DATES = ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00")


class Running:
    def __init__(self, bridge: Bridge, link: FakeLink, thread: threading.Thread) -> None:
        self.bridge, self.link, self.thread = bridge, link, thread
        self.ticks = 0

    def tick(self) -> None:
        self.ticks += 1


@pytest.fixture
def start_bridge(platform: RunningPlatform) -> Iterator[Callable[..., Running]]:
    running: list[Running] = []

    def start(sections: dict[str, dict[str, Any]] | None = None,
              **platform_keys: Any) -> Running:
        config = parse_bridge_config(Path("test.toml"), {
            "mqtt": {"client_id": "containment-test"},
            "platform": {"url": platform.url, "retry_cap_s": 1, "batch_wait_ms": 0,
                         **platform_keys},
            **(sections or {})})
        links: list[FakeLink] = []

        def factory(settings: MqttSettings, subscriptions: Sequence[tuple[str, int]],
                    sink: Callable[[LinkEvent], None], holds: Callable[[str], bool]
                    ) -> FakeLink:
            links.append(FakeLink(sink))
            return links[0]

        bridge = Bridge(config, BridgeMetrics(), link_factory=factory)
        run = Running(bridge, links[0], threading.Thread(target=lambda: None))
        run.thread = threading.Thread(target=bridge.run, args=(run.tick, 0.05), daemon=True)
        run.thread.start()
        running.append(run)
        assert links[0].started.wait(5)
        return run

    yield start
    for run in running:
        run.bridge.request_stop()
        run.thread.join(5)


def wait_for(predicate: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def statuses(link: FakeLink, device_id: str) -> list[str]:
    return [r["status"] for r in link.receipts(device_id)]


def deadletters(link: FakeLink) -> list[dict[str, Any]]:
    with link.lock:
        return [body for topic, body in link.published if topic == "hcp/v1/deadletter"]


def test_dates_at_the_ends_of_the_range_are_rejected_not_fatal_in_the_gov_profile(
        start_bridge: Callable[..., Running], platform: RunningPlatform) -> None:
    """One such record per worker killed every platform worker: forwarding stopped
    while /healthz said 200."""
    run = start_bridge({"profile": {"timezone": "Asia/Shanghai"}}, profile="gov",
                       concurrency=2)
    link = run.link
    for mid, rated_at in enumerate(EDGE_DATES * 2, start=1):
        link.deliver(1, mid, make_rating("dev-edge", rated_at=rated_at))
    good = make_rating("dev-good")
    link.deliver(1, 99, good)
    wait_for(lambda: statuses(link, "dev-good") == ["accepted"])
    wait_for(lambda: len(statuses(link, "dev-edge")) == 4)
    assert statuses(link, "dev-edge") == ["rejected"] * 4
    assert all("rated_at is outside 2000-01-01" in r["error"]
               for r in link.receipts("dev-edge"))
    letters = deadletters(link)
    assert [d["reason"] for d in letters] == ["bad_field"] * 4
    assert sorted(mid for _, mid in link.acks) == [1, 2, 3, 4, 99]
    assert platform.control.counts()["by_device"] == {"dev-good": 1}
    assert run.bridge.healthy


@pytest.mark.parametrize("rated_at", EDGE_DATES)
def test_report_leaves_out_a_stored_rating_with_an_edge_date(rated_at: str) -> None:
    """A platform store written before rated_at was bounded may hold such dates:
    `hcp-bridge report` raised OverflowError converting them to local time."""
    from broker_bridge.report import _stored
    from broker_bridge.timezones import BEIJING
    from tests.support.ratings import encode

    assert _stored(encode(make_rating("dev-1", rated_at=rated_at)).decode(), BEIJING) is None
    assert _stored(encode(make_rating("dev-1")).decode(), BEIJING) is not None
