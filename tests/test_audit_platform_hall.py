"""Audit of the hall dashboard's broker input: whatever a device's retained config, its
alerts or its telemetry say, /api/hall (and so /api/events) keeps answering, and what
the page shows of it is text."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from city_platform.config import PlatformConfig
from city_platform.hall import Hall
from city_platform.server import PlatformServer
from city_platform.store import Store

DEVICE = "421100-HG01-W03"


@pytest.fixture
def hall(tmp_path: Path) -> Iterator[Hall]:
    store = Store.open(f"sqlite:///{tmp_path / 'ratings.db'}")
    try:
        yield Hall(store, PlatformConfig())
    finally:
        store.close()


def get_hall(hall: Hall) -> tuple[int, Any]:
    server = PlatformServer("127.0.0.1", 0, hall.store, hall=hall).start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", "/api/hall")
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        server.shutdown()
        server.close()


def receive(hall: Hall, kind: str, raw_json: str) -> None:
    try:
        hall.on_message(DEVICE, kind, raw_json.encode())
    except Exception:  # noqa: BLE001 - the broker's loop logs and goes on (broker.py)
        pass


@pytest.mark.parametrize(("kind", "raw"), [
    ("config", '{"window_name": "窗口\\ud800"}'),
    ("alerts", '{"device_id": "' + DEVICE + '", "alert_id": "a1", "kind": "x\\udfff"}'),
])
def test_a_lone_surrogate_from_a_device_does_not_stop_the_dashboard(
        hall: Hall, kind: str, raw: str) -> None:
    """Found by the audit: a window name or an alert kind with a lone surrogate (valid
    JSON, not text) went into the hall's live state as it was; every /api/hall answer
    (and every event of /api/events) then failed to encode: the connection closed
    without an answer, on every hall screen, until the platform restarted."""
    receive(hall, kind, raw)
    status, snapshot = get_hall(hall)
    assert status == 200
    (window,) = snapshot["windows"]
    assert all("\ud800" not in str(v) and "\udfff" not in str(v) for v in window.values())


def test_a_window_name_is_shown_as_one_row_of_text(hall: Hall) -> None:
    """docs/mqtt.md: a window name has no line break or control character; the platform
    shows such a name as text (common.text), as it shows a clerk's name."""
    receive(hall, "config", json.dumps({"window_name": "01号\n窗口\u202e社保\x1b[2J"}))
    (window,) = hall.snapshot()["windows"]
    assert window["window_name"].isprintable()
    assert "01号" in window["window_name"] and "社保" in window["window_name"]
    assert hall.store.window_names()[("HG01", "W03")].isprintable()


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["config", "alerts", "telemetry", "status", "event"]),
       st.dictionaries(st.sampled_from(["window_name", "kind", "device_id", "alert_id",
                                        "backlog", "oldest_pending_s", "online", "event",
                                        "resolved"]),
                       st.none() | st.booleans() | st.integers() | st.floats(
                           allow_nan=False, allow_infinity=False)
                       | st.text(st.characters(exclude_categories=[])
                                 | st.sampled_from("\ud800\x00\n"), max_size=50),
                       max_size=6))
def test_any_device_message_leaves_the_snapshot_encodable(hall: Hall, kind: str,
                                                          body: dict[str, Any]) -> None:
    if kind == "alerts":
        body.setdefault("device_id", DEVICE)
        body.setdefault("alert_id", "a1")
    receive(hall, kind, json.dumps(body))
    json.dumps(hall.snapshot(), ensure_ascii=False).encode("utf-8")


@pytest.mark.parametrize("event", [
    {"event": "prompt_expired", "at": "0001-01-01T00:00:00+14:00", "case_id": "C1"},
    {"event": "prompt_expired", "at": "9999-12-31T23:00:00-10:00", "case_id": "C1"},
    {"event": "prompt_expired", "at": "2026-11-25T10:00:00+08:00", "case_id": "C\ud800"},
    {"event": "prompt_expired", "at": "2026-11-25T10:00:00+08:00", "case_id": "C\x00"},
    {"event": "prompt_expired", "at": "2026-11-25T10:00:00+08:00", "case_id": "C" * 65},
])
def test_an_odd_prompt_expired_event_is_refused_with_a_reason(hall: Hall,
                                                              event: dict[str, Any]) -> None:
    """Found by the audit: a time in year 1 or 9999 overflowed converting to the local
    zone (OverflowError), a lone surrogate in case_id failed the insert
    (UnicodeEncodeError): both escaped add_expired_event's ValueError, so the hall's
    handler did not say why; a 100 000-character case_id was stored."""
    with pytest.raises(ValueError, match="at|case_id"):
        hall.store.add_expired_event(DEVICE, event)
    hall.on_message(DEVICE, "event", json.dumps(event).encode())   # logged, not raised
    assert hall.store.counts()["expired_prompts"] == 0
