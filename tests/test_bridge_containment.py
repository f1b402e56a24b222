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


# Dead letters carry no personal data -------------------------------------------------

NAME, ID_NUMBER, PHONE = "张三", "420106199001011234", "13800138000"
PERSONAL = (NAME, ID_NUMBER, PHONE, "1990010112")


def personal_payloads() -> list[bytes]:
    from tests.support.ratings import encode

    def rating(**changes: Any) -> dict[str, Any]:
        record = make_rating("dev-pii")
        record.update(changes)
        return record

    extra = rating()
    extra.update({"citizen_name": NAME, "id_number": ID_NUMBER, "phone": PHONE})
    keyed = rating()
    keyed[NAME] = PHONE
    case = rating()
    case["case"] = {"case_id": "C1", "citizen_phone": PHONE, NAME: ID_NUMBER}
    return [
        encode(extra),                                       # unknown fields
        encode(keyed),                                       # a key that is a name
        encode(case),                                        # unknown case fields
        encode(rating(level=NAME)),                          # values in known fields
        encode(rating(trigger=PHONE)),
        encode(rating(schema=ID_NUMBER)),
        encode(rating(input=f"{NAME} {PHONE}")),
        encode(rating(seq=-int(PHONE))),
        encode(rating(level=int(ID_NUMBER[:-1]))),
        encode(rating(staff={"staff_id": "S1", "staff_name": NAME * 20 + PHONE})),
        encode(rating(rated_at=PHONE)),
        encode(rating(device_id="dev-other")),               # device_mismatch
        f'{{"name": "{NAME}", "phone": "{PHONE}", "id": "{ID_NUMBER}"'.encode(),  # bad JSON
        f'{{"{NAME}": 1, "{NAME}": "{PHONE}"}}'.encode(),   # a repeated key that is a name
        f'["{NAME}", "{PHONE}", "{ID_NUMBER}"]'.encode(),
        f'{{"name": "{NAME}", "phone": "{PHONE}"}}'.encode("utf-16"),   # not UTF-8
        encode(rating(padding=f"{NAME} {PHONE} {ID_NUMBER} " * 300)),  # too large
    ]


def test_dead_letters_receipts_and_logs_never_repeat_personal_data(
        start_bridge: Callable[..., Running], caplog: pytest.LogCaptureFixture) -> None:
    run = start_bridge()
    link = run.link
    payloads = personal_payloads()
    from broker_bridge.mqtt_link import Incoming

    with caplog.at_level("WARNING"):
        for mid, payload in enumerate(payloads, start=1):
            link.sink(Incoming(1, "hcp/v1/dev-pii/rating", payload, mid, 1, False))
        link.sink(Incoming(1, f"hcp/v1/{NAME}{PHONE}/rating", payloads[0], 99, 1, False))
        wait_for(lambda: len(deadletters(link)) == len(payloads) + 1)
    with link.lock:
        published = repr(link.published)
    for text in PERSONAL:
        assert text not in published, f"{text} republished"
        assert text not in caplog.text, f"{text} logged"
    letters = deadletters(link)
    by_reason: dict[str, int] = {}
    for letter in letters:
        by_reason[letter["reason"]] = by_reason.get(letter["reason"], 0) + 1
        assert "payload" not in letter
    assert by_reason == {"bad_schema": 4, "bad_field": 7, "device_mismatch": 1,
                         "bad_json": 3, "bad_utf8": 1, "too_large": 1, "bad_topic": 1}
    # What the platform team needs is still there: the keys, the reason, the rating_id.
    first = letters[0]
    assert first["keys"] == sorted([*make_rating("x"), "citizen_name", "id_number", "phone"])
    assert first["other_keys"] == 0 and first["rating_id"] is not None
    assert first["topic"] == "hcp/v1/dev-pii/rating" and first["device_id"] == "dev-pii"
    assert "unknown field 'citizen_name', 'id_number', 'phone'" in first["detail"]
    assert letters[1]["other_keys"] == 1 and "a key of 2 characters" in letters[1]["detail"]
    assert letters[-1]["reason"] == "bad_topic" and letters[-1]["topic"] is None
    assert len(link.receipts("dev-pii")) == 13   # every one whose rating_id was readable
