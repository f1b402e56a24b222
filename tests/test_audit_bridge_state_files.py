"""Audit: `hcp-bridge expired` and `hcp-bridge forget` with odd input.

- expired: a prompt_expired event whose case_id holds a lone surrogate ("\\ud800" is
  valid JSON, not UTF-8) raised UnicodeEncodeError while deriving the prompt id: an
  internal error instead of a skipped event with its reason.
- forget: a watcher state file with an open alert whose time is a 400-digit integer
  raised OverflowError (math.isfinite), and one holding a lone surrogate anywhere raised
  UnicodeEncodeError while writing it back: a traceback, after the retained status had
  already been cleared, instead of a named error or the edit."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker_bridge.config import parse_bridge_config
from broker_bridge.expired import ExpiredForwarder
from broker_bridge.forget import forget_in_state
from broker_bridge.mqtt_link import Incoming, LinkEvent
from broker_bridge.watch.model import Alert, Tick
from broker_bridge.watch.rules import STATE_VERSION
from broker_bridge.watch.state import StateError, load_state
from tests.test_bridge_boundaries import watch_service
from tests.test_bridge_loop import FakeLink

# Text with lone surrogates, as a JSON payload carries them (escaped).
texts = st.text(st.characters(categories=["Cs", "Ll", "Nd", "Lo"]), max_size=70)
huge = st.integers(min_value=10**300, max_value=10**600) | st.integers(max_value=-10**300)
numbers = st.integers() | huge | st.floats(allow_nan=False, allow_infinity=False)


def forwarder() -> tuple[ExpiredForwarder, FakeLink]:
    config = parse_bridge_config(Path("test.toml"), {
        "mqtt": {"client_id": "audit-expired"},
        "platform": {"url": "http://127.0.0.1:9/api", "profile": "gov"}})
    links: list[FakeLink] = []

    def factory(settings: Any, subscriptions: Any, sink: Callable[[LinkEvent], None],
                holds: Any) -> FakeLink:
        links.append(FakeLink(sink))
        return links[0]

    return ExpiredForwarder(config, link_factory=factory), links[0]


def test_a_case_id_with_a_lone_surrogate_is_skipped_not_an_internal_error() -> None:
    f, link = forwarder()
    payload = b'{"event":"prompt_expired","case_id":"C\\ud800","at":"2026-01-01T08:00:00+08:00"}'
    f._handle_event(Incoming(1, "hcp/v1/W1/event", payload, 5, 1, False))
    assert f.metrics.registry.get_sample_value(
        "hcp_bridge_internal_errors_total", {"where": "message"}) == 0
    assert link.acks == [(1, 5)] and not f._held


@settings(max_examples=200, deadline=None)
@given(texts)
def test_any_case_id_is_held_or_skipped(case_id: str) -> None:
    f, link = forwarder()
    payload = json.dumps({"event": "prompt_expired", "case_id": case_id,
                          "at": "2026-01-01T08:00:00+08:00"}).encode()
    f._handle_event(Incoming(1, "hcp/v1/W1/event", payload, 5, 1, False))
    assert f.metrics.registry.get_sample_value(
        "hcp_bridge_internal_errors_total", {"where": "message"}) == 0
    if f._held:
        held = next(iter(f._held.values()))
        held.message.payload.decode("utf-8")   # what the worker would post
        assert link.acks == []
    else:
        assert link.acks == [(1, 5)]


def alert(device_id: str, **changes: Any) -> dict[str, Any]:
    return {"alert_id": "a1", "kind": "offline", "condition": "", "severity": "warning",
            "device_id": device_id, "hall_id": None, "window_id": None,
            "region_code": None, "evidence": {}, "first_seen": 1.0, "raised_at": 2.0,
            "resolved_at": None, **changes}


@pytest.mark.parametrize("state", [
    {"devices": {"W1": {}}, "open": {"offline|W1|": alert("W1", first_seen=10**400)}},
    {"devices": {"W1": {}}, "open": {"offline|W1|": alert("W1", raised_at=-10**400)}},
    {"devices": {"W1": {}, "W2": {"note": "x\ud800"}}},
    {"devices": {"W1": {}}, "open": {"offline|W1|": alert("W1", evidence={"k": "\udfff"})}},
])
def test_forget_edits_an_odd_state_file_or_names_it(tmp_path: Path,
                                                    state: dict[str, Any]) -> None:
    path = tmp_path / "state.json"
    path.write_text(json.dumps(state))
    forgotten = forget_in_state(path, ["W1"], 1_795_000_000.0)
    assert forgotten[0].known
    after = load_state(path)
    assert after is not None and "W1" not in after["devices"]
    assert {k: v for k, v in after["devices"].items()} == {
        k: v for k, v in state["devices"].items() if k != "W1"}   # the rest kept as read


@settings(max_examples=200, deadline=None)
@given(st.fixed_dictionaries({
    "devices": st.dictionaries(st.sampled_from(["W1", "W2"]),
                               st.dictionaries(texts, numbers | texts, max_size=2)),
    "open": st.dictionaries(st.sampled_from(["offline|W1|", "backlog|W2|", "x|W1|y"]),
                            st.fixed_dictionaries({}, optional={
                                "alert_id": texts, "kind": texts, "condition": texts,
                                "severity": texts, "device_id": st.just("W1"),
                                "first_seen": numbers, "raised_at": numbers,
                                "resolved_at": numbers | st.none(),
                                "evidence": st.dictionaries(texts, texts, max_size=2)}))}))
def test_forget_on_any_state_file_edits_it_or_raises_state_error(state: dict[str, Any]
                                                                 ) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "state.json"
        path.write_text(json.dumps(state))
        try:
            forget_in_state(path, ["W1"], 1_795_000_000.0)
        except StateError:
            return
        after = load_state(path)
        assert after is not None and "W1" not in after.get("devices", {})


@pytest.mark.parametrize("value", [10**400, -10**400, float("inf"), float("nan")])
def test_an_alert_with_an_absurd_time_is_not_an_alert(value: float) -> None:
    assert Alert.from_json(alert("W1", first_seen=value)) is None


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(["offline_since", "last_telemetry", "oldest_pending_s",
                        "unsynced_since"]),
       numbers | st.floats())
def test_a_watcher_state_with_any_device_time_survives_a_tick(field: str,
                                                              value: float) -> None:
    """A saved unsynced_since of 1e20 made every tick raise (iso_utc overflowed) before
    the devices after it were evaluated."""
    with tempfile.TemporaryDirectory() as d:
        state = {"version": STATE_VERSION, "devices": {"dev-1": {
            "first_heard": 1_700_000_000.0, "online": False, field: value}}}
        (Path(d) / "state.json").write_text(json.dumps(state))
        service = watch_service(Path(d))
        service._apply(Tick(1_795_000_600.0))
