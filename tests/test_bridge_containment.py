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
    """A platform store written before rated_at was bounded may hold such dates: the
    old report (now the report benchmark's baseline) raised OverflowError converting
    them to local time."""
    from bench.old_report import _stored
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


# A worker that fails is contained, counted, or the process stops ---------------------

def poison_client(monkeypatch: pytest.MonkeyPatch, marker: bytes,
                  error: type[BaseException] = RuntimeError) -> None:
    """Every platform client raises `error` for a batch holding a payload with `marker`:
    an unexpected exception inside the worker's unit of work."""
    from broker_bridge.platform_client import PlatformClient

    real = PlatformClient.post_ratings

    def post_ratings(self: PlatformClient, payloads: Sequence[bytes]) -> Any:
        if any(marker in p for p in payloads):
            raise error("injected")
        return real(self, payloads)

    monkeypatch.setattr(PlatformClient, "post_ratings", post_ratings)


def metric(run: Running, name: str, **labels: str) -> float:
    value = run.bridge.metrics.registry.get_sample_value(name, labels)
    assert value is not None, name
    return value


def test_a_batch_whose_delivery_raises_is_split_and_the_poison_set_aside(
        start_bridge: Callable[..., Running], platform: RunningPlatform,
        monkeypatch: pytest.MonkeyPatch) -> None:
    poison_client(monkeypatch, b"dev-poison")
    run = start_bridge(batch_wait_ms=300, batch_max=3, concurrency=1)
    link = run.link
    good1, poison, good2 = make_rating("dev-a"), make_rating("dev-poison"), make_rating("dev-b")
    for mid, record in enumerate((good1, poison, good2), start=1):
        link.deliver(1, mid, record)
    wait_for(lambda: statuses(link, "dev-a") == ["accepted"]
             and statuses(link, "dev-b") == ["accepted"])
    wait_for(lambda: len(deadletters(link)) == 1)
    letter = deadletters(link)[0]
    assert letter["reason"] == "unprocessable" and letter["rating_id"] == poison["rating_id"]
    assert "RuntimeError at test_bridge_containment.py" in letter["detail"]
    wait_for(lambda: len(link.acks) == 3)
    assert link.receipts("dev-poison") == []   # no receipt: the device keeps it
    # Once in the batch of three, once alone: set aside.
    assert metric(run, "hcp_bridge_internal_errors_total", where="worker") == 2
    assert metric(run, "hcp_bridge_deadletter_total", reason="unprocessable") == 1
    assert run.bridge.healthy
    # The worker carries on, and the device's re-send is tried afresh.
    later = make_rating("dev-a")
    link.deliver(1, 10, later)
    link.deliver(1, 11, poison)
    wait_for(lambda: statuses(link, "dev-a") == ["accepted"] * 2)
    wait_for(lambda: len(deadletters(link)) == 2)
    assert set(platform.control.rating_ids()) == {good1["rating_id"], good2["rating_id"],
                                                  later["rating_id"]}
    assert run.thread.is_alive() and run.bridge.healthy


def workers_end_with_their_first_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Platform worker threads that end once they have taken a batch: a thread gone,
    whatever the cause (the workers contain every exception of a batch, so this replaces
    their loop)."""
    from broker_bridge.sender import PlatformWorker

    def run(self: PlatformWorker) -> None:
        self._jobs.get()

    monkeypatch.setattr(PlatformWorker, "run", run)


def test_a_worker_thread_that_dies_makes_the_bridge_unhealthy_and_stop(
        start_bridge: Callable[..., Running], monkeypatch: pytest.MonkeyPatch) -> None:
    workers_end_with_their_first_batch(monkeypatch)
    run = start_bridge(concurrency=2)
    wait_for(lambda: run.ticks > 0)
    assert run.bridge.healthy
    run.link.deliver(1, 1, make_rating("dev-fatal"))
    run.thread.join(10)
    assert not run.thread.is_alive(), "the loop went on with a dead worker"
    assert run.bridge.failed and not run.bridge.healthy
    ticks = run.ticks
    time.sleep(0.2)
    assert run.ticks == ticks  # no watchdog ping after the worker died


def test_even_system_exit_in_a_worker_is_contained(
        start_bridge: Callable[..., Running], monkeypatch: pytest.MonkeyPatch) -> None:
    """In a thread, SystemExit would only end the worker, and the batch would end it
    again after every restart: it is contained like any other failure."""
    poison_client(monkeypatch, b"dev-exit", SystemExit)
    run = start_bridge(concurrency=1)
    run.link.deliver(1, 1, make_rating("dev-exit"))
    wait_for(lambda: len(deadletters(run.link)) == 1)
    run.link.deliver(1, 2, make_rating("dev-a"))
    wait_for(lambda: statuses(run.link, "dev-a") == ["accepted"])
    assert run.thread.is_alive() and run.bridge.healthy


def test_a_message_that_makes_the_loop_raise_is_contained(
        start_bridge: Callable[..., Running], platform: RunningPlatform,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from broker_bridge.cache import RecentAnswers
    from broker_bridge.fleet import FleetView
    from broker_bridge.mqtt_link import Incoming

    real_get = RecentAnswers.get

    def get(self: RecentAnswers, rating_id: str, device_id: str, now: float) -> Any:
        if device_id == "dev-poison":
            raise KeyError("injected")
        return real_get(self, rating_id, device_id, now)

    def telemetry(self: FleetView, device_id: str, payload: bytes) -> None:
        raise ValueError("injected")

    monkeypatch.setattr(RecentAnswers, "get", get)
    monkeypatch.setattr(FleetView, "telemetry", telemetry)
    run = start_bridge()
    link = run.link
    link.sink(Incoming(1, "hcp/v1/dev-a/telemetry", b'{"backlog": 1}', 0, 0, False))
    poison = make_rating("dev-poison")
    link.deliver(1, 1, poison)
    good = make_rating("dev-a")
    link.deliver(1, 2, good)
    wait_for(lambda: statuses(link, "dev-a") == ["accepted"])
    assert metric(run, "hcp_bridge_internal_errors_total", where="message") == 2
    letters = deadletters(link)
    assert [(d["reason"], d["rating_id"]) for d in letters] == [
        ("unprocessable", poison["rating_id"])]
    assert sorted(mid for _, mid in link.acks) == [1, 2]
    assert link.receipts("dev-poison") == []
    assert run.thread.is_alive() and run.bridge.healthy


# hcp-bridge expired: the same rules ---------------------------------------------------

@pytest.fixture
def start_expired(platform: RunningPlatform) -> Iterator[Callable[[], Any]]:
    from broker_bridge.expired import ExpiredForwarder

    running: list[tuple[ExpiredForwarder, threading.Thread]] = []

    def start() -> tuple[ExpiredForwarder, FakeLink, threading.Thread]:
        config = parse_bridge_config(Path("test.toml"), {
            "mqtt": {"client_id": "expired-test"},
            "platform": {"url": platform.url, "retry_cap_s": 1, "batch_wait_ms": 200,
                         "profile": "gov"}})
        links: list[FakeLink] = []

        def factory(settings: MqttSettings, subscriptions: Sequence[tuple[str, int]],
                    sink: Callable[[LinkEvent], None], holds: Callable[[str], bool]
                    ) -> FakeLink:
            links.append(FakeLink(sink))
            return links[0]

        forwarder = ExpiredForwarder(config, link_factory=factory)
        thread = threading.Thread(target=forwarder.run, args=(None, 0.05), daemon=True)
        thread.start()
        running.append((forwarder, thread))
        assert links[0].started.wait(5)
        return forwarder, links[0], thread

    yield start
    for forwarder, thread in running:
        forwarder.request_stop()
        thread.join(5)


def expired_event(device_id: str, mid: int, case_id: str = "C1") -> Any:
    import json

    from broker_bridge.mqtt_link import Incoming

    return Incoming(1, f"hcp/v1/{device_id}/event", json.dumps(
        {"event": "prompt_expired", "at": "2026-11-25T02:32:07Z", "case_id": case_id}
    ).encode(), mid, 1, False)


def test_expired_contains_a_poison_prompt_and_an_event_that_raises(
        start_expired: Callable[[], Any], platform: RunningPlatform,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from broker_bridge.profile import GovProfile

    poison_client(monkeypatch, b"dev-poison")
    real_expired = GovProfile.expired

    def expired(self: GovProfile, device_id: str, event: Any) -> Any:
        if device_id == "dev-raises":
            raise ZeroDivisionError("injected")
        return real_expired(self, device_id, event)

    monkeypatch.setattr(GovProfile, "expired", expired)
    forwarder, link, thread = start_expired()
    link.sink(expired_event("dev-a", 1))
    link.sink(expired_event("dev-poison", 2))
    link.sink(expired_event("dev-raises", 3))
    link.sink(expired_event("dev-b", 4))
    wait_for(lambda: platform.control.counts()["expired_prompts"] == 2)
    wait_for(lambda: len(link.acks) == 4)
    letters = deadletters(link)
    assert [(d["reason"], d["device_id"]) for d in letters] == [
        ("unprocessable", "dev-poison")]
    assert forwarder.metrics.registry.get_sample_value(
        "hcp_bridge_internal_errors_total", {"where": "message"}) == 1
    assert forwarder.metrics.registry.get_sample_value(
        "hcp_bridge_internal_errors_total", {"where": "worker"}) == 2
    assert thread.is_alive() and forwarder.healthy


def test_expired_stops_when_its_worker_dies(start_expired: Callable[[], Any],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    workers_end_with_their_first_batch(monkeypatch)
    forwarder, link, thread = start_expired()
    assert forwarder.healthy
    link.sink(expired_event("dev-fatal", 1))
    thread.join(10)
    assert not thread.is_alive() and forwarder.failed and not forwarder.healthy


def test_watch_webhook_survives_a_garbled_answer() -> None:
    """A status line that is not HTTP raises http.client.BadStatusLine, which is not an
    OSError: it killed the webhook thread, and every later alert was silently lost."""
    import socket

    from broker_bridge.watch.webhook import Webhook

    answers = [b"garbage\r\n\r\n", b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"]
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        for answer in answers:
            conn, _ = server.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    hook = Webhook(f"http://127.0.0.1:{server.getsockname()[1]}/hook", 2.0)
    hook.start()
    try:
        hook.send(b'{"alert": "x"}')
        wait_for(lambda: hook.delivered == 1)   # the retry, a second later
        assert hook.is_alive() and hook.dropped == 0
    finally:
        hook.stop()
        server.close()


def test_the_bridge_process_exits_70_when_a_worker_dies(
        tmp_path: Path, mosquitto: Any, platform: RunningPlatform) -> None:
    """End to end, as systemd sees it: a real `hcp-bridge run` against a real mosquitto,
    one of whose platform worker threads ends after taking a batch, stops with
    EX_SOFTWARE, so Restart=on-failure restarts it (and the broker redelivers the
    batch that thread took)."""
    import os
    import subprocess
    import sys

    from tests.support.bridge import REPO, BridgeProcess
    from tests.support.ratings import FleetPublisher

    config = BridgeProcess(tmp_path / "b", mosquitto, platform.url).config_file
    code = (
        "import sys\n"
        "from broker_bridge import run, sender\n"
        "real = sender.PlatformWorker.run\n"
        "def worker(self):\n"
        "    if self.name == 'platform-2':\n"
        "        self._jobs.get()  # takes a batch, and the thread ends\n"
        "    else:\n"
        "        real(self)\n"
        "sender.PlatformWorker.run = worker\n"
        f"sys.exit(run.main(['--config', {str(config)!r}]))\n")
    log = tmp_path / "bridge.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=out,
                                   stderr=out, env={**os.environ, "PYTHONPATH": str(REPO)})
    fleet = FleetPublisher(mosquitto.host, mosquitto.port)
    try:
        wait_for(lambda: b"subscribed" in log.read_bytes())
        # Worker 1 forwards ratings until worker 2 takes one and is gone.
        for _ in range(50):
            fleet.wait_published([fleet.publish_record(make_rating("dev-a"))])
            if process.poll() is not None:
                break
            time.sleep(0.1)
        assert process.wait(15) == 70
        assert b"a platform worker thread has died" in log.read_bytes()
    finally:
        fleet.close()
        if process.poll() is None:
            process.kill()
            process.wait(5)
