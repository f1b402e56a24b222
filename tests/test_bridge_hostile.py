"""Hostile device messages against the real bridge: a real mosquitto holding retained
poison (absurd numbers, repeated keys), the bridge as a real subprocess, the reference
platform over loopback. The bridge stays up, /healthz stays truthful, ratings flow."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.publish as mqtt_publish
import pytest

from tests.support.bridge import BridgeProcess
from tests.support.mosquitto import Mosquitto
from tests.support.platform import RunningPlatform
from tests.support.ratings import FleetPublisher, make_rating

POISONER = "421100-HG01-W66"
HUGE = "1" + "0" * 400


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
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


def retain(broker: Mosquitto, device_id: str, kind: str, payload: bytes) -> None:
    mqtt_publish.single(f"hcp/v1/{device_id}/{kind}", payload, qos=1, retain=True,
                        hostname=broker.host, port=broker.port)


def rating_flows(bridge: BridgeProcess, fleet: FleetPublisher, platform: RunningPlatform
                 ) -> None:
    record = make_rating("421100-HG01-W01")
    before = platform.control.counts()["total"]
    fleet.wait_published([fleet.publish_record(record)])
    wait_for(lambda: record["rating_id"] in fleet.receipted_ids(), 15, "the receipt")
    assert platform.control.counts()["total"] == before + 1


def test_retained_absurd_numbers_do_not_stop_the_bridge(
        tmp_path: Path, mosquitto: Mosquitto, platform: RunningPlatform,
        fleet: FleetPublisher) -> None:
    retain(mosquitto, POISONER, "telemetry",
           b'{"backlog":' + HUGE.encode() + b',"oldest_pending_s":1e400,"uptime_s":-' +
           HUGE.encode() + b"}")
    retain(mosquitto, POISONER, "status", b'{"online":true,"since":1e400}')
    retain(mosquitto, "421100-HG01-W67", "telemetry", b'{"backlog":5,"backlog":' +
           HUGE.encode() + b"}")
    retain(mosquitto, "421100-HG01-W68", "telemetry", b'{"backlog":7}')
    with BridgeProcess(tmp_path / "bridge", mosquitto, platform.url).start() as bridge:
        for start in (1, 2):  # the retained poison comes back at every start
            if start == 2:
                bridge.kill()
                bridge.start()
            wait_for(lambda: bridge.metric("hcp_bridge_devices_online") == 1, 10,
                     "the retained status")
            wait_for(lambda: bridge.metric("hcp_bridge_devices_backlog") == 7, 10,
                     "the one sane backlog")
            rating_flows(bridge, fleet, platform)
            assert bridge.returncode is None, bridge.log_text()[-3000:]
            assert bridge.healthz() == 200
            backlog = bridge.metric("hcp_bridge_devices_backlog")
            assert math.isfinite(backlog) and backlog == 7
        log = bridge.log_text()
        assert f"backlog from {POISONER} is an integer of about 401 digits" in log
        assert "421100-HG01-W67 refused: bad_json: repeated key 'backlog'" in log
        assert "Traceback" not in log


def test_refusals_are_logged_at_most_20_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    from broker_bridge.fleet import FleetView
    from broker_bridge.metrics import BridgeMetrics

    now = [1000.0]
    fleet = FleetView(BridgeMetrics(), clock=lambda: now[0])
    with caplog.at_level("WARNING", logger="hcp.bridge.fleet"):
        for n in range(100):
            fleet.telemetry(f"dev-{n}", b'{"backlog": -1}')
        assert len(caplog.records) == 21   # 20, then one line saying more were left out
        assert "backlog from dev-0 is -1, outside 0..10000000" in caplog.records[0].message
        now[0] += 60
        fleet.telemetry("dev-x", b'{"backlog": "many"}')
    assert len(caplog.records) == 22
    assert "backlog from dev-x must be an integer 0..10000000, got a string of 4 " \
           "characters" in caplog.records[-1].message
