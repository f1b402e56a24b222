"""`[mqtt] protocol = "3.1.1"` (SPEC §12): the config rules, and the bridge, the watcher's
link, `hcp-bridge leave` and fleet devices speaking 3.1.1 to a real mosquitto — one active
bridge, a standby with the same client id taking over its session."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from broker_bridge.config import parse_bridge_config
from broker_bridge.watch.config import load_watch_config, parse_watch_config
from broker_bridge.watch.service import WatchService
from common.configschema import ConfigError, load_toml
from simulator.fleet_run import Fleet, FleetOptions
from simulator.fleet_stats import FleetStats
from tests.support.bridge import REPO, BridgeProcess, toml_text
from tests.support.brokers import assert_exactly_once, publish_ratings, publisher, wait_for
from tests.support.mosquitto import Mosquitto
from tests.support.platform import RunningPlatform


def bridge_problems(tmp_path: Path, **mqtt: object) -> list[str]:
    path = tmp_path / "bridge.toml"
    path.write_text(toml_text({"mqtt": mqtt, "platform": {"url": "http://127.0.0.1:9/r"}}))
    try:
        parse_bridge_config(path, load_toml(path))
    except ConfigError as e:
        return list(e.problems)
    return []


def test_311_with_a_shared_group_is_one_line_naming_the_file_and_the_key(
        tmp_path: Path) -> None:
    problems = bridge_problems(tmp_path, protocol="3.1.1", shared_group="bridge")
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{tmp_path / 'bridge.toml'}: [mqtt] shared_group: ")
    assert "3.1.1" in problems[0] and "\n" not in problems[0]


def test_311_without_a_shared_group_key_means_no_group(tmp_path: Path) -> None:
    path = tmp_path / "bridge.toml"
    path.write_text(toml_text({"mqtt": {"protocol": "3.1.1"},
                               "platform": {"url": "http://127.0.0.1:9/r"}}))
    config = parse_bridge_config(path, load_toml(path))
    assert (config.mqtt.protocol, config.mqtt.shared_group) == ("3.1.1", "")
    v5 = tmp_path / "v5.toml"
    v5.write_text(toml_text({"platform": {"url": "http://127.0.0.1:9/r"}, "mqtt": {}}))
    config = parse_bridge_config(v5, load_toml(v5))
    assert (config.mqtt.protocol, config.mqtt.shared_group) == ("5", "bridge")


@pytest.mark.parametrize("key, value", [("receive_maximum", 1000),
                                        ("session_expiry_s", 3600)])
def test_311_refuses_keys_only_mqtt_5_can_carry(tmp_path: Path, key: str, value: int
                                                ) -> None:
    problems = bridge_problems(tmp_path, protocol="3.1.1", shared_group="", **{key: value})
    assert problems == [f"{tmp_path / 'bridge.toml'}: [mqtt] {key}: has no effect with "
                        "protocol = \"3.1.1\" (an MQTT 5 property; the broker's own setting "
                        "applies): remove it"]
    assert bridge_problems(tmp_path, protocol="5", **{key: value}) == []


def test_an_unknown_protocol_is_refused(tmp_path: Path) -> None:
    problems = bridge_problems(tmp_path, protocol="3")
    assert len(problems) == 1 and "[mqtt] protocol" in problems[0], problems


def test_the_watcher_takes_the_protocol_too(tmp_path: Path) -> None:
    path = tmp_path / "watch.toml"
    path.write_text(toml_text({"mqtt": {"protocol": "3.1.1"},
                               "watch": {"state_file": str(tmp_path / "s.json")}}))
    assert parse_watch_config(path, load_toml(path)).mqtt.protocol == "3.1.1"
    path.write_text(toml_text({"mqtt": {"protocol": "3.1.1", "session_expiry_s": 60},
                               "watch": {"state_file": str(tmp_path / "s.json")}}))
    with pytest.raises(ConfigError) as e:
        parse_watch_config(path, load_toml(path))
    assert [p for p in e.value.problems if "session_expiry_s" in p], e.value.problems


def bridge_311(tmp_path: Path, broker: Mosquitto, platform: RunningPlatform,
               name: str = "b", client_id: str = "bridge-311") -> BridgeProcess:
    return BridgeProcess(tmp_path / name, broker, platform.url, client_id=client_id,
                         overrides={"mqtt": {"protocol": "3.1.1", "shared_group": ""}})


def test_a_311_bridge_and_311_devices_deliver_every_rating_once(
        tmp_path: Path, mosquitto: Mosquitto, platform: RunningPlatform) -> None:
    with bridge_311(tmp_path, mosquitto, platform).start() as bridge:
        options = FleetOptions(devices=5, rate=50, count=60, host=mosquitto.host,
                               port=mosquitto.port, device_prefix="V311", protocol="3.1.1",
                               drain_timeout_s=30, seed=11)
        stats = FleetStats(keep_ids=True)
        result = Fleet(options, stats=stats).run()
        assert result.ok, result.summary()
        assert result.statuses == {"accepted": 60, "duplicate": 0, "rejected": 0}
        assert bridge.healthz() == 200
    # What bounds a batch now is the broker's setting: the log says which.
    assert bridge.log_text().count("MQTT 3.1.1 has no Receive Maximum") == 1
    counts = platform.control.counts()
    assert counts["total"] == 60 and sum(counts["by_device"].values()) == 60
    # Both really spoke 3.1.1: mosquitto logs each connection's protocol (p2 = 3.1.1, p5 = 5).
    log = mosquitto.log_text()
    assert "as bridge-311 (p2, c0" in log and "as V311-0001 (p2, c0" in log, log[-2000:]


def test_a_standby_with_the_same_client_id_takes_over_the_session(
        tmp_path: Path, mosquitto: Mosquitto, platform: RunningPlatform) -> None:
    active = bridge_311(tmp_path, mosquitto, platform, "active").start()
    active.kill()  # its session (clean_session = false) stays at the broker
    with publisher(mosquitto, "3.1.1") as fleet:
        sent = publish_ratings(fleet, 120)
        # Nobody is connected: the broker queues them in the dead bridge's session.
        assert platform.control.counts()["total"] == 0
        with bridge_311(tmp_path, mosquitto, platform, "standby").start():
            wait_for(lambda: platform.control.counts()["total"] == 120, 20,
                     "every queued rating through the standby")
    assert_exactly_once(platform, sent)


def test_leave_ends_a_311_session(tmp_path: Path, mosquitto: Mosquitto,
                                  platform: RunningPlatform) -> None:
    bridge = bridge_311(tmp_path, mosquitto, platform).start()
    bridge.terminate()
    done = subprocess.run(
        [sys.executable, "-m", "broker_bridge", "leave", "--config", str(bridge.config_file)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
        text=True, timeout=20, check=False)
    assert done.returncode == 0, done.stderr
    assert "ended" in done.stderr
    with publisher(mosquitto, "3.1.1") as fleet:
        publish_ratings(fleet, 10)   # no session, no subscriber: nobody keeps these
        bridge.start()
        try:
            # One sent after the bridge is back arrives; had the session survived, the
            # ten queued before it would have come first.
            later = publish_ratings(fleet, 1)
            wait_for(lambda: platform.control.counts()["total"] >= 1, 10, "the later rating")
        finally:
            bridge.kill()   # it outlived the test run before
    assert_exactly_once(platform, later)


def test_the_watcher_follows_ratings_over_311(tmp_path: Path, mosquitto: Mosquitto) -> None:
    path = tmp_path / "watch.toml"
    path.write_text(toml_text({
        "mqtt": {"host": mosquitto.host, "port": mosquitto.port, "protocol": "3.1.1",
                 "client_id": "watch-311"},
        "watch": {"state_file": str(tmp_path / "state.json")}}))
    service = WatchService(load_watch_config(path), tick_s=0.05)
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: service.healthy, 10, "the watcher subscribed")
        with publisher(mosquitto, "3.1.1") as fleet:
            sent = publish_ratings(fleet, 3, ["421100-HG01-W07"])

        def counted() -> bool:
            track = service.watcher.devices.get("421100-HG01-W07")
            return track is not None and all(track.counted(r) for r in sent)

        wait_for(counted, 10, "the watcher to count the ratings")
    finally:
        service.request_stop()
        thread.join(5)
    assert "as watch-311 (p2, c0" in mosquitto.log_text()
