"""The clerk logged in, on the hall dashboard: taken from the device's retained status
(docs/spec-proposals.md P4), never guessed once a status says nobody; an older device
without the `staff` key falls back to the staff of its latest rating today, marked as
such. Hostile statuses (wrong types, huge strings, control characters, markup) crash
neither the platform's hall nor the bridge's fleet view."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker_bridge.fleet import FleetView
from broker_bridge.metrics import BridgeMetrics
from city_platform.config import PlatformConfig
from city_platform.hall import Hall, clerk_of
from city_platform.store import Store
from tests.support.ratings import make_rating

DEVICE = "421100-HG01-W03"
OLD = "421100-HG01-W05"          # a device older than P4: no `staff` in its status


@pytest.fixture
def hall(tmp_path: Path) -> Iterator[Hall]:
    store = Store.open(f"sqlite:///{tmp_path / 'ratings.db'}")
    try:
        yield Hall(store, PlatformConfig())
    finally:
        store.close()


def rated_now(device_id: str, name: str) -> dict[str, Any]:
    """A rating made just now (today, as the dashboard counts) naming clerk `name`."""
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return make_rating(device_id, level=4, rated_at=now,
                       staff={"staff_id": "S9", "staff_name": name})


def status(hall: Hall, device_id: str, body: Any) -> None:
    hall.on_message(device_id, "status", json.dumps(body).encode())


def row(hall: Hall, device_id: str) -> dict[str, Any]:
    windows: list[dict[str, Any]] = hall.snapshot()["windows"]
    (found,) = [w for w in windows if w["device_id"] == device_id]
    return found


def test_the_clerk_comes_from_the_status_and_never_from_a_rating_once_it_says_nobody(
        hall: Hall) -> None:
    # Today's rating names 李娜 (the case's clerk); the device says who is logged in.
    hall.store.submit([rated_now(DEVICE, "李娜")])
    assert row(hall, DEVICE)["clerk"] == "李娜"     # no status seen yet: the fallback
    status(hall, DEVICE, {"online": True, "version": "1", "since": "x",
                          "staff": {"staff_id": "S0042", "staff_name": "王晓红"}})
    assert (row(hall, DEVICE)["clerk"], row(hall, DEVICE)["clerk_source"]) == (
        "王晓红", "login")
    status(hall, DEVICE, {"online": True, "version": "1", "since": "x", "staff": None})
    assert (row(hall, DEVICE)["clerk"], row(hall, DEVICE)["clerk_source"]) == (None, None)
    # Only a 工号: the page says so.
    status(hall, DEVICE, {"online": True, "staff": {"staff_id": "S0042", "staff_name": ""}})
    assert row(hall, DEVICE)["clerk"] == "工号 S0042"
    # Gone (the will): nobody is vouched for at an offline window.
    status(hall, DEVICE, {"online": False})
    assert row(hall, DEVICE)["clerk"] is None


def test_an_older_device_falls_back_to_its_latest_rating_marked_as_such(hall: Hall) -> None:
    hall.store.submit([rated_now(OLD, "赵敏")])
    assert (row(hall, OLD)["clerk"], row(hall, OLD)["clerk_source"]) == ("赵敏", "rating")
    status(hall, OLD, {"online": True, "version": "0.9", "since": "x"})
    assert (row(hall, OLD)["clerk"], row(hall, OLD)["clerk_source"]) == ("赵敏", "rating")
    status(hall, OLD, {"online": False})
    assert row(hall, OLD)["clerk"] is None


@pytest.mark.parametrize("staff,shown", [
    ({"staff_id": "S1", "staff_name": "王\n芳\u202e"}, "王 芳"),
    ({"staff_id": "S1", "staff_name": "<b>王芳</b>"}, "<b>王芳</b>"),   # text, not markup
    ({"staff_id": "S1", "staff_name": "长" * 10_000}, "长" * 32),
    ({"staff_id": "S\x001", "staff_name": 42}, "工号 S 1"),
    ({"staff_id": None, "staff_name": None}, None),
    ({"staff_id": "  ", "staff_name": "\u200b"}, None),
    ("王芳", None), (["王芳"], None), (17, None), (True, None), ({}, None),
])
def test_clerk_of_reads_only_strings_and_makes_them_safe(staff: Any, shown: str | None
                                                         ) -> None:
    assert clerk_of(staff) == shown


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                 max_size=4),
    max_leaves=12)
HOSTILE_TEXT = st.text(st.characters(), max_size=300) | st.just("x" * 100_000) | \
    st.just("<script>alert(1)</script>") | st.just("\x00\n\r\u2028\u202e\ufeff")
STAFF = JSON | st.fixed_dictionaries({}, optional={"staff_id": HOSTILE_TEXT | JSON,
                                                   "staff_name": HOSTILE_TEXT | JSON})
STATUS = st.fixed_dictionaries({}, optional={"online": st.booleans() | JSON,
                                             "version": JSON, "since": JSON, "staff": STAFF})


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=STATUS | JSON)
def test_a_hostile_status_crashes_neither_the_hall_nor_the_fleet_view(
        hall: Hall, body: Any) -> None:
    payload = json.dumps(body).encode()
    hall.on_message(DEVICE, "status", payload)
    fleet = FleetView(BridgeMetrics())
    fleet.status(DEVICE, payload)
    clerk = row(hall, DEVICE)["clerk"] if hall.live else None
    if clerk is not None:
        assert isinstance(clerk, str) and clerk.isprintable() and clerk == clerk.strip()
        assert 0 < len(clerk) <= len("工号 ") + 64
    json.dumps(hall.snapshot(), ensure_ascii=False)   # the API can always answer


@pytest.mark.parametrize("payload", [
    b"\xff\xfe", b"[" * 100_000, b'{"online": true, "staff": ' + b"[" * 50_000 + b"}",
    b'{"online": true, "online": false}', b"NaN", b'{"online": true, "x": "' +
    b"y" * (65 * 1024) + b'"}',
])
def test_undecodable_or_oversized_statuses_are_ignored(hall: Hall, payload: bytes) -> None:
    status(hall, DEVICE, {"online": True, "staff": {"staff_id": "S1", "staff_name": "王芳"}})
    hall.on_message(DEVICE, "status", payload)
    FleetView(BridgeMetrics()).status(DEVICE, payload)
    assert row(hall, DEVICE)["clerk"] == "王芳"
