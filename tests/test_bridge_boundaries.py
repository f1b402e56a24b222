"""Every boundary where the bridge reads what others wrote — MQTT rating, status,
telemetry and event payloads, the platform's answers and headers, its own state file —
fed arbitrary bytes, JSON, numbers and dates (hypothesis). Each asserts that nothing
escapes the adapter, and the classification: dead letter, rejected, retry, skipped."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker_bridge import device_numbers
from broker_bridge.bridge import Bridge
from broker_bridge.config import MqttSettings, parse_bridge_config
from broker_bridge.device_numbers import MAX_BACKLOG, MAX_SECONDS
from broker_bridge.messages import receipt, receipts
from broker_bridge.metrics import DEADLETTER_REASONS, BridgeMetrics
from broker_bridge.mqtt_link import Incoming, LinkEvent
from broker_bridge.platform_client import (
    STATUSES,
    PlatformClient,
    PlatformError,
    _parse_results,
)
from broker_bridge.profile import GovProfile
from broker_bridge.watch.config import load_watch_config
from broker_bridge.watch.model import Tick
from broker_bridge.watch.rules import STATE_VERSION
from broker_bridge.watch.service import WatchService
from broker_bridge.watch.state import load_state
from common.backoff import RETRY_AFTER_CAP_S, parse_retry_after
from common.rating import DEVICE_ID_RE, EARLIEST_TIME, LATEST_TIME, aware_time
from tests.support.bridge import toml_text
from tests.support.ratings import make_rating
from tests.test_bridge_loop import FakeLink

RID = "0123456789abcdef0123456789abcdef"


# Repeated keys are refused at every JSON boundary ---------------------------------------

@pytest.mark.parametrize("body", [
    b'{"results": [{"rating_id": "%s", "status": "accepted", "status": "rejected"}]}'
    % RID.encode(),
    b'{"results": [], "results": [{"rating_id": "%s", "status": "accepted"}]}' % RID.encode(),
])
def test_a_platform_answer_with_a_repeated_key_is_garbled_and_retried(body: bytes) -> None:
    with pytest.raises(PlatformError) as caught:
        _parse_results(body, 200)
    assert caught.value.retryable and "repeated key" in caught.value.detail


def test_a_platform_answer_with_a_byte_order_mark_is_read() -> None:
    body = b'\xef\xbb\xbf{"results": [{"rating_id": "%s", "status": "accepted"}]}' % RID.encode()
    assert _parse_results(body, 200)[RID].status == "accepted"


def test_a_platform_error_with_a_lone_surrogate_still_makes_a_receipt() -> None:
    """"\\ud800" is valid JSON but not UTF-8: encoding the receipt raised in the bridge's
    loop, and the platform gave the same answer again after the restart."""
    body = b'{"results": [{"rating_id": "%s", "status": "rejected", "error": "\\ud800x"}]}'
    result = _parse_results(body % RID.encode(), 200)[RID]
    assert json.loads(receipts([receipt(RID, result.status, result.error)])) == {
        "receipts": [{"rating_id": RID, "status": "rejected", "error": "?x"}]}
    assert json.loads(receipt(RID, "rejected", "\ud800"))["error"] == "?"


def test_a_watch_state_file_with_a_repeated_key_is_set_aside(tmp_path: Path) -> None:
    state = tmp_path / "watch-state.json"
    state.write_bytes(b'{"devices": {}, "devices": {"x": 1}}')
    assert load_state(state) is None
    assert (tmp_path / "watch-state.json.damaged").exists()
    state.write_text(json.dumps({"devices": {}}))
    assert load_state(state) == {"devices": {}}


# Harnesses -----------------------------------------------------------------------------

DEVICE = "421100-HG01-W03"
PREFIX = "hcp/v1"


def sync_bridge(profile: str = "generic") -> tuple[Bridge, FakeLink]:
    """A bridge whose loop the test drives by hand (no threads started): one message in,
    then look at what it published, acknowledged and holds."""
    config = parse_bridge_config(Path("test.toml"), {
        "mqtt": {"client_id": "boundary-test"},
        "platform": {"url": "http://127.0.0.1:9/api", "profile": profile}})
    links: list[FakeLink] = []

    def factory(settings: MqttSettings, subscriptions: Sequence[tuple[str, int]],
                sink: Callable[[LinkEvent], None], holds: Callable[[str], bool]) -> FakeLink:
        links.append(FakeLink(sink))
        return links[0]

    bridge = Bridge(config, BridgeMetrics(), link_factory=factory)
    return bridge, links[0]


def sample(bridge: Bridge, name: str, **labels: str) -> float:
    value = bridge.metrics.registry.get_sample_value(name, labels)
    assert value is not None, name
    return value


def assert_classified(payload: bytes, device_id: str = DEVICE) -> str:
    """Feed one rating message to the bridge; check it is either held for the platform or
    dead-lettered (acknowledged, rejected receipt iff its rating_id was readable, to the
    topic's device only), and that nothing needed containing. Returns the outcome."""
    bridge, link = sync_bridge()
    bridge._handle_message(Incoming(1, f"{PREFIX}/{device_id}/rating", payload, 7, 1, False))
    assert sample(bridge, "hcp_bridge_internal_errors_total", where="message") == 0
    letters = [body for topic, body in link.published if topic == f"{PREFIX}/deadletter"]
    receipts = [(topic, r) for topic, body in link.published if topic.endswith("/receipt")
                for r in body["receipts"]]
    if not letters:
        assert link.acks == [] and receipts == [] and len(bridge._pending) == 1
        held = next(iter(bridge._pending.values())).rating
        # Independent of the checker: what the platform would be sent is sane.
        record = json.loads(held.payload)
        assert held.payload == payload and record["device_id"] == device_id
        assert type(record["level"]) is int and 1 <= record["level"] <= 5
        moment = datetime.fromisoformat(record["rated_at"])
        assert datetime(2000, 1, 1, tzinfo=UTC) <= moment < datetime(2100, 1, 1, tzinfo=UTC)
        gov = GovProfile().rating(record)   # the gov profile maps every valid record
        assert gov["assessTime"] is not None and gov["assessId"] == held.rating_id
        return "forwarded"
    assert len(letters) == 1 and link.acks == [(1, 7)] and not bridge._pending
    letter = letters[0]
    assert letter["reason"] in DEADLETTER_REASONS and letter["reason"] != "unprocessable"
    assert "payload" not in letter and letter["payload_bytes"] == len(payload)
    if letter["rating_id"] is not None and DEVICE_ID_RE.fullmatch(device_id):
        assert receipts == [(f"{PREFIX}/{device_id}/receipt",
                             {"rating_id": letter["rating_id"], "status": "rejected",
                              "error": f"{letter['reason']}: {letter['detail']}"})]
    else:
        assert receipts == []
    return "dead letter"


# Strategies ------------------------------------------------------------------------------

huge_ints = st.integers(min_value=-(10**600), max_value=10**600)
any_numbers = st.integers() | huge_ints | st.floats()   # floats: NaN and ±inf included
json_scalars = st.none() | st.booleans() | any_numbers | st.text(max_size=40)
any_json = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                        max_leaves=12)
offsets: st.SearchStrategy[tzinfo | None] = st.none() | st.just(UTC) | st.builds(
    lambda m: timezone(timedelta(minutes=m)), st.integers(-1439, 1439))
any_dates = st.datetimes(min_value=datetime.min, max_value=datetime.max,
                         timezones=offsets)  # type: ignore[arg-type]  # stub too narrow
date_texts = (any_dates.map(lambda d: d.isoformat())
              | any_dates.map(lambda d: d.isoformat(sep=" ", timespec="milliseconds"))
              | st.from_regex(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]{0,15}([+-][0-9:]{0,8}|Z)?\Z")
              | st.text(max_size=50))
RECORD_KEYS = sorted(make_rating(DEVICE))


def dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


# MQTT rating payloads ---------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_on_a_rating_topic(payload: bytes) -> None:
    assert assert_classified(payload) == "dead letter"


@settings(max_examples=300, deadline=None)
@given(any_json)
def test_any_json_on_a_rating_topic(value: Any) -> None:
    assert assert_classified(dumps(value)) == "dead letter"


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(RECORD_KEYS), any_json)
def test_any_value_in_any_field_of_a_valid_record(key: str, value: Any) -> None:
    record = make_rating(DEVICE, level=2)
    record[key] = value
    assert_classified(dumps(record))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["case", "staff"]), st.text(max_size=16), any_json)
def test_any_value_in_any_nested_field(outer: str, key: str, value: Any) -> None:
    record = make_rating(DEVICE, level=4)
    record[outer] = {**record[outer], key: value}
    assert_classified(dumps(record))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["seq", "level"]), any_numbers | st.integers(4301, 20_000))
def test_numbers_of_any_size(key: str, number: int | float) -> None:
    record = make_rating(DEVICE, level=3)
    if isinstance(number, int) and 4300 < number <= 20_000:
        # A number with that many digits, more than Python will convert: bad_json.
        text = json.dumps(record).replace(f'"{key}": {record[key]}',
                                          f'"{key}": 1' + "0" * number)
        payload = text.encode()
    else:
        record[key] = number
        payload = dumps(record)
    assert_classified(payload)


@settings(max_examples=400, deadline=None)
@given(date_texts)
def test_dates_of_any_form(rated_at: str) -> None:
    record = make_rating(DEVICE)
    record["rated_at"] = rated_at
    outcome = assert_classified(dumps(record))
    moment = aware_time(rated_at)
    assert (outcome == "forwarded") == (moment is not None)
    if moment is not None:
        assert EARLIEST_TIME <= moment < LATEST_TIME
        GovProfile(timezone="Asia/Shanghai").local_time(rated_at)


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=1, max_size=80))
def test_any_topic_device_id(device_id: str) -> None:
    if "/" in device_id or "+" in device_id or "#" in device_id or "\x00" in device_id:
        return
    outcome = assert_classified(dumps(make_rating(DEVICE)), device_id)
    assert (outcome == "forwarded") == (device_id == DEVICE)


# Status, telemetry and event payloads --------------------------------------------------

fleet_bodies = (st.binary(max_size=200)
                | any_json.map(dumps)
                | st.fixed_dictionaries({}, optional={
                    "online": any_json, "backlog": any_json, "oldest_pending_s": any_json,
                    "clock_synced": any_json, "event": any_json, "at": date_texts,
                    "since": any_json}).map(dumps))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["status", "telemetry", "event"]),
                          st.sampled_from(["dev-1", "dev-2"]), fleet_bodies), max_size=6))
def test_device_messages_into_the_bridge_gauges(messages: list[tuple[str, str, bytes]]
                                                 ) -> None:
    bridge, _ = sync_bridge()
    for kind, device_id, payload in messages:
        bridge._handle_message(Incoming(1, f"{PREFIX}/{device_id}/{kind}", payload, 0, 0,
                                        False))
    assert sample(bridge, "hcp_bridge_internal_errors_total", where="message") == 0
    online = sample(bridge, "hcp_bridge_devices_online")
    backlog = sample(bridge, "hcp_bridge_devices_backlog")
    assert online in (0, 1, 2)
    assert math.isfinite(backlog) and 0 <= backlog <= 2 * MAX_BACKLOG
    bridge.metrics.render()


def watch_service(tmp_path: Path) -> WatchService:
    path = tmp_path / "watch.toml"
    path.write_text(toml_text({
        "mqtt": {"host": "127.0.0.1", "port": 9, "client_id": "watch-prop"},
        "watch": {"state_file": str(tmp_path / "state.json")},
        "rules.backlog": {"max_backlog": 50},
    }))

    def factory(settings: Any, subscriptions: Any, sink: Callable[[LinkEvent], None],
                holds: Any) -> FakeLink:
        return FakeLink(sink)

    return WatchService(load_watch_config(path), clock=lambda: 1_795_000_000.0,
                        link_factory=factory)


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["status", "telemetry", "event", "rating"]),
                          fleet_bodies | st.just(dumps(make_rating("dev-1")))),
                max_size=6))
def test_device_messages_into_the_watcher(tmp_path: Path,
                                          messages: list[tuple[str, bytes]]) -> None:
    service = watch_service(tmp_path)
    for kind, payload in messages:
        service._contained(Incoming(1, f"{PREFIX}/dev-1/{kind}", payload, 0, 0, False))
    service._apply(Tick(1_795_000_600.0))
    assert service.failures == 0
    track = service.watcher.devices.get("dev-1")
    if track is not None:
        assert track.backlog is None or 0 <= track.backlog <= MAX_BACKLOG
        assert track.oldest_pending_s is None or 0 <= track.oldest_pending_s <= MAX_SECONDS
    json.dumps(service.watcher.snapshot())   # the state stays saveable


@settings(max_examples=300, deadline=None)
@given(any_json, st.text(max_size=10))
def test_device_numbers_are_bounded_or_refused(value: Any, field: str) -> None:
    for convert, limit in ((device_numbers.count, MAX_BACKLOG),
                           (device_numbers.seconds, MAX_SECONDS)):
        try:
            number = convert(value, "dev-1", field)
        except device_numbers.Refused as e:
            assert "dev-1" in str(e) and field in str(e)
            continue
        assert number is None or 0 <= number <= limit


# The platform's answers ------------------------------------------------------------------

class ScriptedPlatform:
    """A loopback HTTP server answering whatever the current example says."""

    def __init__(self) -> None:
        self.answer: tuple[int, dict[str, str], bytes] = (200, {}, b"")
        platform = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers["Content-Length"]))
                status, headers, body = platform.answer
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api"


@pytest.fixture(scope="module")
def scripted() -> Iterator[ScriptedPlatform]:
    platform = ScriptedPlatform()
    yield platform
    platform.server.shutdown()
    platform.server.server_close()


header_text = st.text(st.characters(min_codepoint=32, max_codepoint=255,
                                    blacklist_characters="\x7f"), max_size=40)
answer_bodies = (st.binary(max_size=200)
                 | any_json.map(dumps)
                 | any_json.map(lambda v: json.dumps(v).encode())   # "\\ud800" escapes
                 | st.builds(lambda items: dumps({"results": items}), st.lists(
                     st.fixed_dictionaries({}, optional={
                         "rating_id": st.just(RID) | any_json,
                         "status": st.sampled_from(["accepted", "duplicate", "rejected"])
                         | any_json,
                         "error": any_json | st.just("\ud800 lone")}), max_size=3))
                 .map(lambda body: body.replace(b"\xed\xa0\x80", b"\\ud800")))


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(200, 599), answer_bodies, st.none() | header_text)
def test_any_platform_answer(scripted: ScriptedPlatform, status: int, body: bytes,
                             retry_after: str | None) -> None:
    headers = {} if retry_after is None else {"Retry-After": retry_after.strip() or "x"}
    scripted.answer = (status, headers, body)
    client = PlatformClient(scripted.url, 5.0)
    try:
        results = client.post_ratings([dumps(make_rating(DEVICE, rating_id=RID))])
    except PlatformError as e:
        if 200 <= status < 300:
            assert e.retryable   # a garbled answer: retried
        else:
            assert e.retryable == (status >= 500 or status in (408, 429)), e.detail
        assert e.retry_after is None or 0 <= e.retry_after <= RETRY_AFTER_CAP_S
        return
    finally:
        client.close()
    assert 200 <= status < 300
    for rating_id, result in results.items():
        assert isinstance(rating_id, str) and result.status in STATUSES
        assert result.error is None or (isinstance(result.error, str)
                                        and len(result.error) <= 500)
        # What the bridge does with an answer: a receipt to the device.
        json.loads(receipts([receipt(RID, result.status, result.error)]))


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=60) | st.datetimes().map(
    lambda d: d.strftime("%a, %d %b %Y %H:%M:%S GMT")) | st.integers(-10, 10**30).map(str))
def test_retry_after_of_any_text(text: str) -> None:
    delay = parse_retry_after(text, now=lambda: 1_795_000_000.0)
    assert delay is None or 0 <= delay <= RETRY_AFTER_CAP_S


# hcp-bridge expired's events, and the watcher's own state file ----------------------------

@settings(max_examples=200, deadline=None)
@given(st.fixed_dictionaries({"event": st.just("prompt_expired") | any_json}, optional={
    "case_id": any_json | st.text(max_size=70), "at": date_texts | any_json}).map(dumps)
    | st.binary(max_size=100))
def test_any_event_into_hcp_bridge_expired(payload: bytes) -> None:
    from broker_bridge.expired import ExpiredForwarder

    config = parse_bridge_config(Path("test.toml"), {
        "mqtt": {"client_id": "expired-prop"},
        "platform": {"url": "http://127.0.0.1:9/api", "profile": "gov"}})
    links: list[FakeLink] = []

    def factory(settings: Any, subscriptions: Any, sink: Callable[[LinkEvent], None],
                holds: Any) -> FakeLink:
        links.append(FakeLink(sink))
        return links[0]

    forwarder = ExpiredForwarder(config, link_factory=factory)
    forwarder._handle_event(Incoming(1, f"{PREFIX}/{DEVICE}/event", payload, 5, 1, False))
    assert forwarder.metrics.registry.get_sample_value(
        "hcp_bridge_internal_errors_total", {"where": "message"}) == 0
    held = list(forwarder._held.values())
    event = None
    try:
        event = json.loads(payload)
    except ValueError:
        pass
    valid = (isinstance(event, dict) and event.get("event") == "prompt_expired"
             and isinstance(event.get("case_id"), str) and 0 < len(event["case_id"]) <= 64
             and aware_time(event.get("at")) is not None)
    if held:
        assert valid and links[0].acks == []
        assert held[0].message.record["assessTime"] is not None
    else:
        assert links[0].acks == [(1, 5)]


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(["devices", "open", "last_raised", "pending_since",
                                        "x"]), any_json, max_size=4)
       | st.fixed_dictionaries({"version": st.just(STATE_VERSION), "devices": st.dictionaries(
           st.sampled_from(["dev-1", "dev-2"]), st.fixed_dictionaries(
               {"first_heard": any_numbers}, optional={
                   key: any_numbers | any_json for key in (
                       "offline_since", "last_telemetry", "oldest_pending_s",
                       "unsynced_since", "backlog", "online", "ratings", "seen")}))},
           optional={"last_raised": st.dictionaries(st.just("backlog|dev-1|"), any_numbers),
                     "pending_since": st.dictionaries(st.just("device_silent|dev-2|"),
                                                      any_numbers)}))
def test_any_watch_state_file_starts_the_watcher(tmp_path: Path, state: dict[str, Any]
                                                 ) -> None:
    (tmp_path / "state.json").write_bytes(dumps(state))
    service = watch_service(tmp_path)   # used, or set aside and started afresh
    service._apply(Tick(1_795_000_600.0))
    json.dumps(service.watcher.snapshot())


# The answer cache never answers one device with another's answer -----------------------

@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.sampled_from(["dev-1", "dev-2", "dev-3"]),
                          st.sampled_from([RID, "f" * 32]),
                          st.sampled_from(["accepted", "duplicate", "rejected"]),
                          st.floats(0, 5)), max_size=30))
def test_the_answer_cache_is_keyed_by_device_and_rating_id(
        steps: list[tuple[bool, str, str, str, float]]) -> None:
    from broker_bridge.cache import Answer, RecentAnswers

    cache = RecentAnswers(ttl_s=3, max_entries=4)
    now = 0.0
    put: dict[tuple[str, str], str] = {}
    for is_put, device_id, rating_id, status, dt in steps:
        now += dt
        if is_put:
            cache.put(rating_id, device_id, Answer(status, device_id), now)
            put[(device_id, rating_id)] = status
        else:
            answer = cache.get(rating_id, device_id, now)
            if answer is not None:
                assert answer.error == device_id          # stored for this very device
                assert answer.status == put[(device_id, rating_id)]
