"""The bridge end to end: real mosquitto, real reference platform over loopback HTTP,
the bridge as a real subprocess. Every rating a device published reaches the platform
exactly once and the device gets a receipt, whatever the platform or the bridge does.

The platform outage lasts HCP_BRIDGE_OUTAGE_S seconds (10 by default; the issue's full
minute with HCP_BRIDGE_OUTAGE_S=60).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.bridge import REPO, BridgeProcess
from tests.support.mosquitto import Mosquitto
from tests.support.platform import RunningPlatform
from tests.support.ratings import FleetPublisher, make_rating

OUTAGE_S = float(os.environ.get("HCP_BRIDGE_OUTAGE_S", "10"))
DEVICES = [f"421100-HG01-W{n:02d}" for n in range(1, 13)]


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `predicate`; a metric not exported yet (KeyError) counts as not there yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except KeyError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def fleet(mosquitto: Mosquitto) -> Iterator[FleetPublisher]:
    publisher = FleetPublisher(mosquitto.host, mosquitto.port)
    yield publisher
    publisher.close()


Sent = dict[str, dict[str, Any]]  # rating_id → the record as published


def publish_ratings(fleet: FleetPublisher, count: int, devices: list[str] = DEVICES) -> Sent:
    """Publish `count` ratings round-robin over `devices`, as devices do (QoS 1)."""
    sent: Sent = {}
    mids = []
    for n in range(count):
        record = make_rating(devices[n % len(devices)], level=random.randint(1, 5))
        sent[record["rating_id"]] = record
        mids.append(fleet.publish_record(record))
    fleet.wait_published(mids)
    return sent


def assert_exactly_once(platform: RunningPlatform, sent: Sent) -> None:
    stored = platform.control.rating_ids()
    assert len(stored) == len(set(stored)), "a rating_id stored twice"
    assert set(stored) == set(sent), (f"missing {len(set(sent) - set(stored))}, "
                                      f"unexpected {len(set(stored) - set(sent))}")
    counts = platform.control.counts()
    assert counts["total"] == len(sent)
    per_device: dict[str, int] = {}
    for record in sent.values():
        per_device[record["device_id"]] = per_device.get(record["device_id"], 0) + 1
    assert counts["by_device"] == per_device


def wait_all_receipted(fleet: FleetPublisher, sent: Sent, timeout: float) -> None:
    wait_for(lambda: set(sent) <= set(fleet.receipted_ids()), timeout,
             "a receipt for every rating")
    for rating_id, record in sent.items():
        receipts = fleet.receipts_for(record["device_id"])
        assert any(r["rating_id"] == rating_id for r in receipts), \
            f"receipt for {rating_id} not on its device's topic"


def start_bridge(tmp_path: Path, mosquitto: Mosquitto, reference: RunningPlatform,
                 name: str = "bridge-1", /, **sections: dict[str, object]) -> BridgeProcess:
    """A running bridge; `platform={...}`, `mqtt={...}` override config keys."""
    return BridgeProcess(tmp_path / name, mosquitto, reference.url, client_id=name,
                         overrides=sections).start()


def test_every_rating_of_many_devices_arrives_once_with_a_receipt(
        tmp_path: Path, mosquitto: Mosquitto, platform: RunningPlatform,
        fleet: FleetPublisher) -> None:
    with start_bridge(tmp_path, mosquitto, platform, platform={"batch_max": 50}) as bridge:
        sent = publish_ratings(fleet, 600)
        wait_for(lambda: platform.control.counts()["total"] == 600, 20, "600 ratings stored")
        wait_all_receipted(fleet, sent, 10)
        assert_exactly_once(platform, sent)
        assert set(fleet.receipted_ids().values()) == {"accepted"}
        # Batching happened: far fewer requests than ratings, none above batch_max.
        requests = platform.control.counts()["requests"]
        assert 12 <= requests < 200

        text = bridge.metrics_text()
        names = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
        for name in ("hcp_bridge_ratings_received_total", "hcp_bridge_ratings_forwarded_total",
                     "hcp_bridge_ratings_duplicate_total", "hcp_bridge_ratings_rejected_total",
                     "hcp_bridge_deadletter_total", "hcp_bridge_platform_retries_total",
                     "hcp_bridge_inflight", "hcp_bridge_platform_request_seconds_bucket",
                     "hcp_bridge_devices_online"):
            assert name in names, name
        assert bridge.metric("hcp_bridge_ratings_received_total") == 600
        assert bridge.metric("hcp_bridge_ratings_forwarded_total") == 600
        assert bridge.metric("hcp_bridge_inflight") == 0
        assert bridge.metric("hcp_bridge_platform_request_seconds_count") == requests
        assert bridge.healthz() == 200

        # A device that missed its receipt re-sends: answered from the bridge's cache.
        resent = [make_rating(d) for d in DEVICES[:5]]
        for record in resent:
            fleet.publish_record(record)
        wait_for(lambda: platform.control.counts()["total"] == 605, 10, "5 more stored")
        # Their receipts too: one arriving after the clear below would pass for an answer
        # to the re-sent copy before the bridge had even seen it.
        wait_all_receipted(fleet, {r["rating_id"]: r for r in resent}, 10)
        requests = platform.control.counts()["requests"]
        fleet.receipts.clear()
        for record in resent:
            fleet.publish_record(record)
        wait_for(lambda: len(fleet.receipted_ids()) == 5, 10, "5 receipts for the re-sent")
        assert set(fleet.receipted_ids().values()) == {"accepted"}
        assert platform.control.counts()["requests"] == requests
        assert bridge.metric("hcp_bridge_ratings_duplicate_total") == 5


@pytest.mark.parametrize(("outage_s", "retry_cap_s"), [
    pytest.param(OUTAGE_S, 2.0, id="short"),
    pytest.param(60.0, 10.0, id="full-minute", marks=pytest.mark.slow),
])
def test_platform_outage_loses_nothing_and_holds_ratings_at_the_broker(
        tmp_path: Path, mosquitto: Mosquitto, platform: RunningPlatform,
        fleet: FleetPublisher, outage_s: float, retry_cap_s: float) -> None:
    platform.control.chaos("error", status=503, for_s=outage_s, retry_after="1")
    started = time.monotonic()
    with start_bridge(tmp_path, mosquitto, platform,
                      platform={"retry_cap_s": retry_cap_s}) as bridge:
        sent = publish_ratings(fleet, 200)
        wait_for(lambda: bridge.metric("hcp_bridge_inflight") == 200, 10,
                 "the bridge to hold all 200 un-acknowledged")
        # Devices keep rating during the outage.
        while time.monotonic() - started < outage_s * 0.7:
            sent.update(publish_ratings(fleet, 20))
            time.sleep(outage_s / 10)
        wait_for(lambda: bridge.metric("hcp_bridge_inflight") == len(sent), 5,
                 "every rating held")
        assert platform.control.counts()["total"] == 0
        assert fleet.receipted_ids() == {}, "a receipt before the platform answered"
        assert bridge.metric("hcp_bridge_platform_retries_total") >= 2
        assert bridge.healthz() == 200  # the broker side is fine

        wait_for(lambda: platform.control.counts()["total"] == len(sent),
                 outage_s + retry_cap_s + 20, "every rating after the outage")
        assert time.monotonic() - started >= outage_s
        wait_all_receipted(fleet, sent, 10)
        assert_exactly_once(platform, sent)
        assert bridge.metric("hcp_bridge_inflight") == 0
        assert bridge.metric("hcp_bridge_ratings_rejected_total") == 0


def test_slow_platform_loses_and_duplicates_nothing(
        tmp_path: Path, mosquitto: Mosquitto, platform: RunningPlatform,
        fleet: FleetPublisher) -> None:
    platform.control.chaos("slow", delay_s=1.5)
    with start_bridge(tmp_path, mosquitto, platform,
                      platform={"batch_max": 100, "concurrency": 2, "timeout_s": 5}) as bridge:
        sent = publish_ratings(fleet, 400)
        wait_for(lambda: platform.control.counts()["total"] == 400, 30, "400 ratings stored")
        wait_all_receipted(fleet, sent, 10)
        assert_exactly_once(platform, sent)
        # Slow is not failed: every rating crossed the wire to the platform once.
        assert platform.control.counts()["duplicates"] == 0
        assert bridge.metric("hcp_bridge_platform_retries_total") == 0
        assert bridge.metric("hcp_bridge_platform_request_seconds_bucket", le="1.0") == 0


def test_platform_slower_than_the_timeout_is_deduplicated(
        tmp_path: Path, mosquitto: Mosquitto, platform: RunningPlatform,
        fleet: FleetPublisher) -> None:
    # Stored, then answered after the bridge gave up: the re-sent batch must be
    # answered "duplicate", and the platform must still hold each rating once.
    platform.control.chaos("slow", delay_s=2.0, requests=2)
    with start_bridge(tmp_path, mosquitto, platform,
                      platform={"timeout_s": 0.5, "concurrency": 1}) as bridge:
        sent = publish_ratings(fleet, 60)
        wait_all_receipted(fleet, sent, 30)
        assert_exactly_once(platform, sent)
        assert platform.control.counts()["duplicates"] > 0
        assert bridge.metric("hcp_bridge_platform_retries_total") >= 1
        statuses = set(fleet.receipted_ids().values())
        assert statuses <= {"accepted", "duplicate"} and "duplicate" in statuses


def test_bridge_sigkilled_mid_batch_and_restarted_counts_every_rating_once(
        tmp_path: Path, mosquitto: Mosquitto, platform: RunningPlatform,
        fleet: FleetPublisher) -> None:
    # Answers are slow, so a kill often lands after the platform stored a batch and
    # before the bridge acknowledged it: the redelivery must be de-duplicated.
    platform.control.chaos("slow", delay_s=0.3)
    bridge = start_bridge(tmp_path, mosquitto, platform,
                          platform={"batch_max": 40, "concurrency": 2})
    try:
        sent = publish_ratings(fleet, 500)
        for kill in range(3):
            stored_before: int = platform.control.counts()["total"]

            def progressed(before: int = stored_before) -> bool:
                return bool(platform.control.counts()["total"] > before)

            wait_for(progressed, 15, f"progress before kill {kill + 1}")
            time.sleep(random.uniform(0.05, 0.4))
            bridge.kill()
            bridge.start()
        platform.control.chaos("normal")
        wait_for(lambda: platform.control.counts()["total"] == 500, 30, "500 ratings stored")
        wait_all_receipted(fleet, sent, 15)
        assert_exactly_once(platform, sent)
        assert bridge.metric("hcp_bridge_inflight") == 0
        print("SIGKILL test: copies received again by the platform:",
              platform.control.counts()["duplicates"], "starts:", bridge.starts)
    finally:
        bridge.kill()


def test_two_bridges_in_a_shared_group_split_the_work(
        tmp_path: Path, mosquitto: Mosquitto, platform: RunningPlatform,
        fleet: FleetPublisher) -> None:
    with start_bridge(tmp_path, mosquitto, platform, "bridge-a") as a, \
            start_bridge(tmp_path, mosquitto, platform, "bridge-b") as b:
        sent = publish_ratings(fleet, 400)
        wait_for(lambda: platform.control.counts()["total"] == 400, 20, "400 ratings stored")
        wait_all_receipted(fleet, sent, 10)
        assert_exactly_once(platform, sent)
        assert platform.control.counts()["duplicates"] == 0
        forwarded_a = a.metric("hcp_bridge_ratings_forwarded_total")
        forwarded_b = b.metric("hcp_bridge_ratings_forwarded_total")
        assert forwarded_a + forwarded_b == 400
        assert forwarded_a >= 50 and forwarded_b >= 50, (forwarded_a, forwarded_b)


def test_a_dead_group_member_holds_its_share_until_it_leaves(
        tmp_path: Path, mosquitto: Mosquitto, platform: RunningPlatform,
        fleet: FleetPublisher) -> None:
    # mosquitto keeps routing a share of new ratings to an offline member's session:
    # `hcp-bridge leave` ends that session; the devices' resend brings back what it held.
    with start_bridge(tmp_path, mosquitto, platform, "bridge-a") as a, \
            start_bridge(tmp_path, mosquitto, platform, "bridge-b") as b:
        b.kill()
        first = publish_ratings(fleet, 40)
        wait_for(lambda: a.metric("hcp_bridge_ratings_forwarded_total") >= 10, 10, "a's share")
        time.sleep(0.5)
        assert platform.control.counts()["total"] < 40  # the rest sits in b's session
        done = subprocess.run(
            [sys.executable, "-m", "broker_bridge", "leave", "--config", str(b.config_file)],
            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
            text=True, timeout=20, check=False)
        assert done.returncode == 0, done.stderr
        second = publish_ratings(fleet, 40)
        wait_for(lambda: set(second) <= set(platform.control.rating_ids()), 10,
                 "every new rating through the remaining bridge")
        # The devices re-send what has no receipt yet (after resend_after_s).
        receipted = fleet.receipted_ids()
        resend = [record for rating_id, record in first.items() if rating_id not in receipted]
        assert resend
        for record in resend:
            fleet.publish_record(record)
        wait_all_receipted(fleet, {**first, **second}, 10)
        assert_exactly_once(platform, {**first, **second})


def test_hostile_messages_go_to_the_dead_letter_topic_and_the_bridge_keeps_going(
        tmp_path: Path, mosquitto: Mosquitto, platform: RunningPlatform,
        fleet: FleetPublisher) -> None:
    victim, attacker = "421100-HG01-W01", "421100-HG01-W66"
    spoofed = make_rating(victim)          # names the victim, sent on the attacker's topic
    level9 = make_rating(attacker, level=9)
    wrong_schema = make_rating(attacker, schema="hcp.rating/0")
    huge = make_rating(attacker, padding="x" * 1_000_000)
    with start_bridge(tmp_path, mosquitto, platform) as bridge:
        fleet.publish_raw(attacker, b"{not json")
        fleet.publish_raw(attacker, b"\xff\xfe\x00garbage")
        fleet.publish_record(huge)
        fleet.publish_record(wrong_schema)
        fleet.publish_record(spoofed, device_id=attacker)
        fleet.publish_record(level9)
        fleet.publish_raw("not a device id!", b"{}")
        good = make_rating(victim)
        fleet.publish_record(good)

        wait_for(lambda: len(fleet.deadletters) == 7, 10, "7 dead letters")
        wait_for(lambda: good["rating_id"] in fleet.receipted_ids(), 10,
                 "the genuine rating after the hostile ones")
        assert platform.control.rating_ids() == [good["rating_id"]]
        reasons = sorted(d["reason"] for d in fleet.deadletters)
        assert reasons == sorted(["bad_json", "bad_utf8", "too_large", "bad_schema",
                                  "device_mismatch", "bad_field", "bad_topic"])
        big = next(d for d in fleet.deadletters if d["reason"] == "too_large")
        assert big["payload_bytes"] > 1_000_000 and big["keys"] is None
        assert all("payload" not in d for d in fleet.deadletters)

        # Rejected receipts go to the device named by the topic, never the payload.
        wait_for(lambda: len(fleet.receipts_for(attacker)) == 4, 5, "4 rejected receipts")
        attacker_receipts = {r["rating_id"]: r for r in fleet.receipts_for(attacker)}
        assert set(attacker_receipts) == {huge["rating_id"], wrong_schema["rating_id"],
                                          spoofed["rating_id"], level9["rating_id"]}
        assert {r["status"] for r in attacker_receipts.values()} == {"rejected"}
        assert "level" in attacker_receipts[level9["rating_id"]]["error"]
        assert [r["rating_id"] for r in fleet.receipts_for(victim)] == [good["rating_id"]]

        assert bridge.metric("hcp_bridge_deadletter_total") == 7
        assert bridge.metric("hcp_bridge_deadletter_total", reason="device_mismatch") == 1
        assert bridge.metric("hcp_bridge_ratings_received_total") == 8
        assert bridge.metric("hcp_bridge_inflight") == 0
        assert bridge.returncode is None


def test_wrong_token_is_a_loud_slow_retry_not_a_flood_of_rejections(
        tmp_path: Path, mosquitto: Mosquitto, fleet: FleetPublisher) -> None:
    from tests.support.platform import running_platform
    token_file = tmp_path / "token"
    token_file.write_text("wrong-token\n")
    with running_platform(tmp_path / "platform", token="s3cret-token") as platform, \
            start_bridge(tmp_path, mosquitto, platform,
                         platform={"token_file": str(token_file),
                                   "client_error_retry_s": 1.0}) as bridge:
        sent = publish_ratings(fleet, 30)
        wait_for(lambda: len(fleet.alerts) >= 1, 10, "an alert")
        assert fleet.alerts[0]["alert"] == "platform_refuses_batches"
        assert fleet.alerts[0]["status"] == 401
        time.sleep(2.5)
        # Slow: about one attempt per second, not a retry storm; nothing rejected.
        assert bridge.metric("hcp_bridge_platform_retries_total") <= 6
        assert bridge.metric("hcp_bridge_platform_client_errors_total", status="401") >= 2
        assert bridge.metric("hcp_bridge_ratings_rejected_total") == 0
        assert fleet.receipted_ids() == {}
        assert platform.control.counts()["total"] == 0
        assert "REFUSED" in bridge.log_text()

        token_file.write_text("s3cret-token\n")  # fixed: re-read without a restart
        wait_all_receipted(fleet, sent, 10)
        assert_exactly_once(platform, sent)
        assert len(fleet.alerts) == 1, "alerts are rate-limited"
        assert "s3cret-token" not in bridge.log_text()
        assert "wrong-token" not in bridge.log_text()


def test_sigterm_stops_within_5_s_even_with_a_hung_platform_and_nothing_is_lost(
        tmp_path: Path, mosquitto: Mosquitto, platform: RunningPlatform,
        fleet: FleetPublisher) -> None:
    platform.control.chaos("hang")
    bridge = start_bridge(tmp_path, mosquitto, platform, platform={"timeout_s": 30})
    try:
        sent = publish_ratings(fleet, 50)
        wait_for(lambda: bridge.metric("hcp_bridge_inflight") == 50, 10, "50 held")
        assert bridge.terminate() < 5.0
        assert bridge.returncode == 0
        assert "Traceback" not in bridge.log_text()
        platform.control.chaos("normal")
        bridge.start()
        wait_all_receipted(fleet, sent, 15)
        assert_exactly_once(platform, sent)
    finally:
        bridge.kill()


def test_healthz_follows_the_broker_and_ratings_survive_a_broker_restart(
        tmp_path: Path, mosquitto: Mosquitto, platform: RunningPlatform,
        fleet: FleetPublisher) -> None:
    platform.control.chaos("error", status=500)
    with start_bridge(tmp_path, mosquitto, platform) as bridge:
        sent = publish_ratings(fleet, 40)
        wait_for(lambda: bridge.metric("hcp_bridge_inflight") == 40, 10, "40 held")
        mosquitto.stop()  # clean stop: the broker saves the bridge's session
        wait_for(lambda: bridge.healthz() == 503, 5, "/healthz 503 without a broker")
        mosquitto.start()
        platform.control.chaos("normal")
        wait_for(lambda: bridge.healthz() == 200, 20, "/healthz 200 again")
        wait_for(lambda: platform.control.counts()["total"] == 40, 20, "40 ratings stored")
        assert_exactly_once(platform, sent)
        # The broker redelivers the 40 it never got a PUBACK for; acknowledged on the new
        # connection (joining the batch, or from the cache if the platform answered
        # while the broker was down), so a restarted bridge gets nothing again.
        wait_for(lambda: bridge.metric("hcp_bridge_ratings_received_total") == 80, 10,
                 "the redelivery")
        wait_for(lambda: bridge.metric("hcp_bridge_inflight") == 0, 5, "nothing held")
        bridge.terminate()
        bridge.start()
        time.sleep(1.0)
        assert bridge.metric("hcp_bridge_ratings_received_total") == 0


def test_a_broker_granting_only_qos_0_leaves_the_bridge_unhealthy_and_says_why(
        tmp_path: Path, mosquitto_factory: Callable[..., Mosquitto],
        platform: RunningPlatform) -> None:
    broker = mosquitto_factory(extra_conf=["max_qos 0"])
    bridge = BridgeProcess(tmp_path / "bridge", broker, platform.url, client_id="bridge-q0")
    with bridge.start(wait_healthy=False):
        wait_for(lambda: "granted a lower QoS than asked" in bridge.log_text(), 10,
                 "the error in the log")
        assert "asked QoS 1, granted 0" in bridge.log_text()
        assert bridge.healthz() == 503


def test_device_status_telemetry_and_events_become_metrics(
        tmp_path: Path, mosquitto: Mosquitto, platform: RunningPlatform) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    devices = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    devices.connect(mosquitto.host, mosquitto.port)
    devices.loop_start()
    try:
        # Retained before the bridge starts: it must still count them.
        for n, online in enumerate([True, True, True, False]):
            devices.publish(f"hcp/v1/dev-{n}/status", f'{{"online": {str(online).lower()}}}',
                            qos=1, retain=True).wait_for_publish(3)
        with start_bridge(tmp_path, mosquitto, platform) as bridge:
            wait_for(lambda: bridge.metric("hcp_bridge_devices_online") == 3, 5, "3 online")
            devices.publish("hcp/v1/dev-0/status", '{"online": false}', qos=1, retain=True)
            devices.publish("hcp/v1/dev-3/status", b"", qos=1, retain=True)  # removed
            wait_for(lambda: bridge.metric("hcp_bridge_devices_online") == 2, 5, "2 online")
            devices.publish("hcp/v1/dev-1/telemetry", '{"backlog": 7, "uptime_s": 5}')
            devices.publish("hcp/v1/dev-2/telemetry", '{"backlog": 5}')
            devices.publish("hcp/v1/dev-2/telemetry", '{"backlog": 3}')
            wait_for(lambda: bridge.metric("hcp_bridge_devices_backlog") == 10, 5, "backlog")
            for name in ("button_stuck", "button_stuck", "serial_error", "Bad Name!"):
                devices.publish("hcp/v1/dev-1/event", json.dumps({"event": name}), qos=1)
            devices.publish("hcp/v1/dev-1/event", b"not json", qos=1)
            wait_for(lambda: bridge.metric("hcp_bridge_device_events_total") == 5, 5, "events")
            assert bridge.metric("hcp_bridge_device_events_total", event="button_stuck") == 2
            assert bridge.metric("hcp_bridge_device_events_total", event="invalid") == 2
            assert bridge.metric("hcp_bridge_deadletter_total") == 0
    finally:
        devices.loop_stop()
