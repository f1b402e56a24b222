"""The `gov` field profile: the default mapping table field by field, overrides from the
bridge config (rename, drop, value maps, constants, time zone), config errors, expired
prompts; then end to end: the bridge posting gov records over real HTTP with an
override from its config file, and `hcp-bridge expired` reporting prompt_expired events
from a real mosquitto to the reference platform."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from broker_bridge.config import load_bridge_config
from broker_bridge.profile import GovProfile, expired_prompt_id
from common.configschema import ConfigError
from tests.support.bridge import REPO, BridgeProcess, toml_text
from tests.support.mosquitto import Mosquitto
from tests.support.platform import RunningPlatform
from tests.support.ratings import FleetPublisher, encode, make_rating

CASE_RATING = make_rating(
    "421100-HG01-W03", 2, rating_id="5f0c1d2e8a9b4c7d9e1f2a3b4c5d6e7f", reason="R02",
    case={"case_id": "2026112500017", "service_code": "11420000",
          "service_name": "不动产登记", "dept_code": "D01",
          "completed_at": "2026-11-25T10:31:00+08:00"},
    staff={"staff_id": "S007", "staff_name": "王芳"},
    rated_at="2026-11-25T02:31:07.125Z", input="button", clock_synced=True)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


# The table --------------------------------------------------------------------------

def test_default_table_field_by_field() -> None:
    assert GovProfile().rating(CASE_RATING) == {
        "assessId": "5f0c1d2e8a9b4c7d9e1f2a3b4c5d6e7f",
        "assessType": "rated",
        "projectNo": "2026112500017",
        "taskCode": "11420000",
        "taskName": "不动产登记",
        "deptCode": "D01",
        "areaCode": "421100",
        "hallCode": "HG01",
        "windowCode": "W03",
        "deviceCode": "421100-HG01-W03",
        "satisfaction": "2",                 # 不满意: the same direction as our level
        "evalDetail": "R02",
        "pf": "5",                           # 政务大厅其他终端 (a key pad)
        "assessTime": "2026-11-25 10:31:07",  # local time (Asia/Shanghai), no fraction
        "assessNumber": 1,
        "handleUserId": "S007",
        "handleUserName": "王芳",
        "clockSynced": True,
    }


@pytest.mark.parametrize(("level", "expected"), [(1, "1"), (2, "2"), (3, "3"), (4, "4"),
                                                 (5, "5")])
def test_satisfaction_keeps_the_direction_of_our_level(level: int, expected: str) -> None:
    record = make_rating("D1", level, reason=None)
    assert GovProfile().rating(record)["satisfaction"] == expected


def test_spontaneous_touch_rating_without_staff() -> None:
    record = make_rating("421100-HG02-W01", 5, trigger="spontaneous", case=None, staff=None,
                         input="touch", reason=None, rated_at="2026-12-31T23:59:59+08:00",
                         clock_synced=False)
    gov = GovProfile().rating(record)
    assert (gov["projectNo"], gov["taskCode"], gov["taskName"], gov["deptCode"]) == (
        None, None, None, None)
    assert (gov["handleUserId"], gov["handleUserName"]) == (None, None)
    assert (gov["pf"], gov["evalDetail"], gov["satisfaction"]) == ("4", "", "5")
    assert gov["assessTime"] == "2026-12-31 23:59:59" and gov["clockSynced"] is False


def test_overrides_rename_drop_map_values_and_add_constants() -> None:
    profile = GovProfile(
        fields={"projectNo": "bjbh", "clockSynced": "", "handleUserName": "staffName"},
        values={"satisfaction": {"5": "1", "4": "2", "3": "3", "2": "4", "1": "5"},
                "pf": {"button": 7}, "evalDetail": {"R02": "502"},
                "assessType": {"rated": "1"}},
        constants={"appId": "HCP-421100", "version": 2},
        timezone="UTC")
    gov = profile.rating(CASE_RATING)
    assert "projectNo" not in gov and gov["bjbh"] == "2026112500017"
    assert "clockSynced" not in gov
    assert gov["staffName"] == "王芳" and "handleUserName" not in gov
    assert gov["satisfaction"] == "4"     # GB/T 39046 direction: 不满意 is 4
    assert gov["pf"] == 7 and gov["evalDetail"] == "502" and gov["assessType"] == "1"
    assert gov["assessTime"] == "2026-11-25 02:31:07"
    assert (gov["appId"], gov["version"]) == ("HCP-421100", 2)
    assert list(gov)[:3] == ["assessId", "assessType", "bjbh"]  # the table's order
    assert profile.id_field == "assessId"


def test_expired_prompt_record() -> None:
    event = {"event": "prompt_expired", "at": "2026-11-25T02:32:07.125Z",
             "case_id": "2026112500017"}
    gov = GovProfile().expired("421100-HG01-W03", event)
    assert gov == {
        "assessId": expired_prompt_id("421100-HG01-W03", event), "assessType": "expired",
        "projectNo": "2026112500017", "taskCode": None, "taskName": None, "deptCode": None,
        "areaCode": None, "hallCode": None, "windowCode": None,
        "deviceCode": "421100-HG01-W03", "satisfaction": None, "evalDetail": "", "pf": None,
        "assessTime": "2026-11-25 10:32:07", "assessNumber": None, "handleUserId": None,
        "handleUserName": None, "clockSynced": None,
    }
    assert len(gov["assessId"]) == 32
    # The same event again: the same id (the platform de-duplicates); another expiry of
    # the same case later: another id.
    assert GovProfile().expired("421100-HG01-W03", dict(event))["assessId"] == gov["assessId"]
    later = {**event, "at": "2026-11-25T03:00:00Z"}
    assert GovProfile().expired("421100-HG01-W03", later)["assessId"] != gov["assessId"]


# Config -----------------------------------------------------------------------------

def bridge_toml(tmp_path: Path, extra: Mapping[str, Mapping[str, Any]]) -> Path:
    path = tmp_path / "bridge.toml"
    path.write_text(toml_text({"mqtt": {}, "platform": {"url": "http://127.0.0.1:1/api"},
                               **extra}))
    return path


def test_profile_from_the_bridge_config(tmp_path: Path) -> None:
    config = load_bridge_config(bridge_toml(tmp_path, {
        "platform": {"url": "http://127.0.0.1:1/api", "profile": "gov"},
        "profile.fields": {"taskCode": "sxbm"},
        "profile.values.pf": {"touch": "8"},
    }))
    assert config.platform.profile == "gov" and config.gov_profile is not None
    gov = config.gov_profile.rating(make_rating("D1", 5, input="touch", reason=None))
    assert gov["sxbm"] == "11420000" and gov["pf"] == "8"
    generic = load_bridge_config(bridge_toml(tmp_path, {}))
    assert generic.platform.profile == "generic" and generic.gov_profile is None


def test_profile_config_problems_are_each_reported(tmp_path: Path) -> None:
    path = bridge_toml(tmp_path, {
        "platform": {"url": "http://127.0.0.1:1/api", "profile": "gov"},
        "profile": {"timezone": "Mars/Olympus"},
        "profile.fields": {"assessId": "", "nosuch": "x", "taskName": "bad name"},
        "profile.values.satisfaction": {"5": "1"},
        "profile.values.pf": {"kiosk": "9"},
        "profile.values.deptCode": {"D01": "X"},
        "profile.constants": {"deviceCode": "x", "rate": 1.5},
    })
    with pytest.raises(ConfigError) as caught:
        load_bridge_config(path)
    text = "\n".join(caught.value.problems)
    for expected in ("[profile.fields] assessId: cannot be left out",
                     "[profile.fields] nosuch: not a field of the gov table",
                     "[profile.fields] taskName: must be a field name"):
        assert expected in text, expected
    assert all(p.startswith(f"{path}: ") for p in caught.value.problems)
    # Field problems stop the check there; fix them and the rest is reported.
    path = bridge_toml(tmp_path, {
        "platform": {"url": "http://127.0.0.1:1/api", "profile": "gov"},
        "profile": {"timezone": "Mars/Olympus"},
        "profile.fields": {"taskName": "projectNo"},
        "profile.values.satisfaction": {"5": "1"},
        "profile.values.pf": {"kiosk": "9"},
        "profile.values.deptCode": {"D01": "X"},
        "profile.constants": {"deviceCode": "x", "rate": 1.5},
    })
    with pytest.raises(ConfigError) as caught:
        load_bridge_config(path)
    text = "\n".join(caught.value.problems)
    for expected in ("two fields would be called 'projectNo'",
                     "[profile.values.satisfaction]: two levels would have the same value",
                     "[profile.values.pf] kiosk: not one of our values",
                     "[profile.values.deptCode]: only satisfaction, pf, assessType, "
                     "evalDetail have value maps",
                     "[profile.constants] deviceCode: the table already has this field",
                     "[profile.constants] rate: must be a string",
                     "[profile] timezone: unknown time zone"):
        assert expected in text, expected
    assert len(caught.value.problems) == 7
    with pytest.raises(ConfigError) as caught:
        load_bridge_config(bridge_toml(tmp_path, {"profile.fields": {"taskCode": "x"}}))
    assert "[profile]: only used with [platform] profile = \"gov\"" in caught.value.problems[0]


# End to end -------------------------------------------------------------------------

class CapturingPlatform:
    """A loopback HTTP platform that answers SPEC §9 (everything accepted, keyed by
    `id_field`) and keeps every body it was sent."""

    def __init__(self, id_field: str = "assessId") -> None:
        self.bodies: list[dict[str, Any]] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                sink.bodies.append(body)
                answer = json.dumps({"results": [
                    {"rating_id": r[id_field], "status": "accepted", "error": None}
                    for r in body["ratings"]]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/ratings"

    def records(self) -> list[dict[str, Any]]:
        return [r for body in self.bodies for r in body["ratings"]]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fleet(mosquitto: Mosquitto) -> Iterator[FleetPublisher]:
    publisher = FleetPublisher(mosquitto.host, mosquitto.port)
    yield publisher
    publisher.close()


def test_the_bridge_posts_gov_records_with_the_config_override(
        tmp_path: Path, mosquitto: Mosquitto, fleet: FleetPublisher) -> None:
    platform = CapturingPlatform(id_field="evalId")
    bridge = BridgeProcess(tmp_path / "bridge", mosquitto, platform.url, overrides={
        "platform": {"profile": "gov"},
        "profile.fields": {"assessId": "evalId", "projectNo": "bjbh", "clockSynced": ""},
        "profile.values.satisfaction": {"5": "1", "4": "2", "3": "3", "2": "4", "1": "5"},
        "profile.values.pf": {"button": "6"},
    })
    try:
        bridge.start()
        spontaneous = make_rating("421100-HG01-W04", 5, trigger="spontaneous", case=None,
                                  reason=None, input="touch")
        fleet.wait_published([fleet.publish_record(CASE_RATING),
                              fleet.publish_record(spontaneous)])
        wait_for(lambda: len(fleet.receipted_ids()) == 2, 10, "receipts")
        assert set(fleet.receipted_ids().values()) == {"accepted"}
        by_id = {r["evalId"]: r for r in platform.records()}
        case = by_id[CASE_RATING["rating_id"]]
        assert case["bjbh"] == "2026112500017" and "projectNo" not in case
        assert "assessId" not in case and "clockSynced" not in case
        assert case["satisfaction"] == "4"        # level 2 in the reversed direction
        assert case["pf"] == "6" and case["evalDetail"] == "R02"
        assert case["assessTime"] == "2026-11-25 10:31:07"
        assert (case["taskCode"], case["taskName"], case["deptCode"], case["areaCode"]) == (
            "11420000", "不动产登记", "D01", "421100")
        assert (case["handleUserId"], case["handleUserName"]) == ("S007", "王芳")
        assert (case["assessType"], case["assessNumber"]) == ("rated", 1)
        other = by_id[spontaneous["rating_id"]]
        assert (other["bjbh"], other["satisfaction"], other["pf"]) == (None, "1", "4")
        assert all("schema" not in r and "rating_id" not in r for r in platform.records())
    finally:
        bridge.kill()
        platform.close()


def publish_events(mosquitto: Mosquitto, events: list[tuple[str, bytes]]) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"dev-{uuid.uuid4().hex[:6]}",
                         protocol=mqtt.MQTTv5)
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    try:
        for device, payload in events:
            client.publish(f"hcp/v1/{device}/event", payload, qos=1).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


def test_expired_prompts_reach_the_platform_once(
        tmp_path: Path, mosquitto: Mosquitto, platform: RunningPlatform) -> None:
    bridge = BridgeProcess(tmp_path / "expired", mosquitto, platform.url,
                           overrides={"platform": {"profile": "gov"}})
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    log = tmp_path / "expired.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "broker_bridge", "expired", "--config",
             str(bridge.config_file)], cwd=REPO, env=env, stdout=out, stderr=out)
    try:
        wait_for(lambda: b"subscribed: " in log.read_bytes(), 10, "expired subscribed")
        expired = {"event": "prompt_expired", "at": "2026-11-25T02:32:07.125Z",
                   "case_id": "2026112500017"}
        publish_events(mosquitto, [
            ("421100-HG01-W03", encode(expired)),
            ("421100-HG01-W03", encode(expired)),          # delivered twice
            ("421100-HG01-W03", b'{"event": "prompt_cancelled", "case_id": "X"}'),
            ("421100-HG01-W03", b'{"event": "prompt_expired", "at": "yesterday"}'),
            ("421100-HG01-W03", b"\xff not json"),
            # At the ends of what datetime holds: converting to local time overflowed
            # and crash-looped this process.
            ("421100-HG01-W03", encode({**expired, "at": "0001-01-01T00:00:00+14:00"})),
            ("421100-HG01-W03", encode({**expired, "at": "9999-12-31T23:59:59-14:00"})),
            ("421100-HG01-W03", encode({**expired, "at": "1999-12-31T23:59:59Z"})),
            ("421100-HG01-W05", encode({**expired, "case_id": "C-2"})),
        ])
        wait_for(lambda: platform.control.counts()["expired_prompts"] == 2, 10,
                 "expired prompts stored")
        counts = platform.control.counts()
        assert counts["total"] == 0 and counts["rejected"] == 0   # not ratings
        db = tmp_path / "platform" / "platform.db"
        with sqlite3.connect(db) as conn:
            rows = conn.execute("SELECT prompt_id, device_id, case_id, expired_at, "
                                "times_seen, record FROM expired_prompts ORDER BY case_id"
                                ).fetchall()
        assert [(r[1], r[2], r[3]) for r in rows] == [
            ("421100-HG01-W03", "2026112500017", "2026-11-25 10:32:07"),
            ("421100-HG01-W05", "C-2", "2026-11-25 10:32:07")]
        assert rows[0][0] == expired_prompt_id("421100-HG01-W03", expired)
        assert json.loads(rows[0][5])["assessType"] == "expired"
        process.terminate()
        assert process.wait(5) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)


def test_expired_needs_the_gov_profile(tmp_path: Path) -> None:
    path = bridge_toml(tmp_path, {})
    done = subprocess.run([sys.executable, "-m", "broker_bridge", "expired", "--config",
                           str(path)], cwd=REPO, capture_output=True, text=True, timeout=30,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 78 and "profile = \"gov\"" in done.stderr
