"""`hcp-bridge forget` against a real mosquitto: after it, a new subscriber gets no
retained status or config for the forgotten ids (and still gets everyone else's); bad
ids change nothing; a broker that refuses the write is named; the watcher's state loses
the device, its open alerts are resolved on {prefix}/alerts, and a running watcher
forgets the device by itself from the cleared status."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from broker_bridge.config import MqttSettings
from broker_bridge.forget import clear_retained, forget_in_state, resolve_messages
from broker_bridge.watch.config import load_watch_config
from broker_bridge.watch.state import StateError
from tests.support.bridge import REPO, toml_text
from tests.support.mosquitto import Mosquitto
from tests.test_watch_mqtt import Devices, RunningWatcher, VirtualClock, wait_for, watch_config

PREFIX = "hcp/v1"
GONE, ALSO_GONE, STAYS = "421100-HG01-W03", "421100-HG01-W04", "421100-HG01-W05"


def retained(broker: Mosquitto, device_ids: list[str], user: str = "",
             password: str = "") -> dict[str, bytes]:
    """What a brand-new subscriber gets as retained for these devices: topic -> payload.
    The broker sends retained messages right after SUBACK; a marker published after the
    subscription tells when they have all come."""
    got: dict[str, bytes] = {}
    done = threading.Event()
    marker = f"{PREFIX}/probe-{uuid.uuid4().hex[:8]}/event"
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{uuid.uuid4().hex[:8]}",
                         protocol=mqtt.MQTTv5)
    if user:
        client.username_pw_set(user, password)

    def on_message(c: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic == marker:
            done.set()
        elif message.retain:
            got[message.topic] = bytes(message.payload)

    def on_subscribe(c: mqtt.Client, *args: Any) -> None:
        c.publish(marker, b"{}", qos=1)

    client.on_message = on_message
    client.on_subscribe = on_subscribe
    client.connect(broker.host, broker.port)
    client.loop_start()
    client.subscribe([(f"{PREFIX}/{d}/{kind}", 1) for d in device_ids
                      for kind in ("status", "config")] + [(marker, 1)])
    assert done.wait(5), "the probe's marker never came back"
    client.disconnect()
    client.loop_stop()
    return got


def seed(devices: Devices, device_ids: list[str]) -> None:
    for d in device_ids:
        devices.publish(d, "status", {"online": True, "version": "1.0", "since": "x"},
                        retain=True)
        devices.publish(d, "config", {"window_name": f"{d[-3:]}号窗口"}, retain=True)


def bridge_toml(tmp_path: Path, broker: Mosquitto, **mqtt_keys: Any) -> Path:
    path = tmp_path / "bridge.toml"
    path.write_text(toml_text({
        "mqtt": {"host": broker.host, "port": broker.port, "client_id": "bridge-1",
                 **mqtt_keys},
        "platform": {"url": "http://127.0.0.1:9/ratings"}}))
    return path


def forget(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "broker_bridge", "forget", "--config",
                           str(config), *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)


@pytest.fixture
def devices(mosquitto: Mosquitto) -> Iterator[Devices]:
    d = Devices(mosquitto)
    yield d
    d.close()


def test_forget_clears_retained_status_and_config(tmp_path: Path, mosquitto: Mosquitto,
                                                  devices: Devices) -> None:
    seed(devices, [GONE, ALSO_GONE, STAYS])
    assert len(retained(mosquitto, [GONE, ALSO_GONE, STAYS])) == 6
    done = forget(bridge_toml(tmp_path, mosquitto), GONE, ALSO_GONE, GONE)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"{GONE}: retained status and config cleared",
                                        f"{ALSO_GONE}: retained status and config cleared"]
    assert sorted(retained(mosquitto, [GONE, ALSO_GONE, STAYS])) == [
        f"{PREFIX}/{STAYS}/config", f"{PREFIX}/{STAYS}/status"]


def test_bad_ids_are_refused_and_nothing_changes(tmp_path: Path, mosquitto: Mosquitto,
                                                 devices: Devices) -> None:
    seed(devices, [GONE])
    for bad in ("hcp/v1/#", "+", "W03 ", "a" * 65, ""):
        done = forget(bridge_toml(tmp_path, mosquitto), GONE, bad)
        assert done.returncode == 2, (bad, done.stderr)
        assert f"{bad!r} is not a device id" in done.stderr and "nothing was changed" in \
            done.stderr
    assert len(retained(mosquitto, [GONE])) == 2


def test_a_broker_that_refuses_the_write_is_named(tmp_path: Path,
                                                  mosquitto_factory: Any) -> None:
    broker = mosquitto_factory(
        users={"hcp-watch": "pw-w", "hcp-admin": "pw-a"},
        acl="\n".join(["user hcp-watch", f"topic read {PREFIX}/#",
                       "user hcp-admin", f"topic readwrite {PREFIX}/#"]) + "\n")
    admin = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="seed", protocol=mqtt.MQTTv5)
    admin.username_pw_set("hcp-admin", "pw-a")
    admin.connect(broker.host, broker.port)
    admin.loop_start()
    admin.publish(f"{PREFIX}/{GONE}/status", b'{"online":false}', qos=1,
                  retain=True).wait_for_publish(5)
    admin.disconnect()
    admin.loop_stop()
    (tmp_path / "watch.pw").write_text("pw-w\n")
    (tmp_path / "admin.pw").write_text("pw-a\n")
    config = bridge_toml(tmp_path, broker, username="hcp-watch",
                         password_file=str(tmp_path / "watch.pw"))
    done = forget(config, GONE)
    assert done.returncode == 1
    assert f"{GONE}: NOT forgotten: {PREFIX}/{GONE}/status: refused by the broker: " \
           "Not authorized" in done.stderr
    assert f"{PREFIX}/{GONE}/status" in retained(broker, [GONE], "hcp-admin", "pw-a")

    done = forget(config, "--username", "hcp-admin", "--password-file",
                  str(tmp_path / "admin.pw"), GONE)
    assert done.returncode == 0, done.stderr
    assert retained(broker, [GONE], "hcp-admin", "pw-a") == {}

    (tmp_path / "admin.pw").write_text("wrong\n")
    done = forget(config, "--username", "hcp-admin", "--password-file",
                  str(tmp_path / "admin.pw"), GONE)
    assert done.returncode == 1 and "refused the login as hcp-admin" in done.stderr


def stored_state(now: float) -> dict[str, Any]:
    def track(device_id: str) -> dict[str, Any]:
        return {"first_heard": now - 3600, "online": True}

    def open_alert(kind: str, device_id: str) -> dict[str, Any]:
        return {"alert_id": uuid.uuid4().hex, "kind": kind, "condition": "",
                "severity": "critical", "device_id": device_id, "hall_id": "HG01",
                "window_id": device_id[-3:], "region_code": "421100",
                "evidence": {"online": False}, "first_seen": now - 600,
                "raised_at": now - 600, "resolved_at": None}

    return {"version": 1, "devices": {GONE: track(GONE), STAYS: track(STAYS)},
            "open": {f"device_silent|{GONE}|": open_alert("device_silent", GONE),
                     f"device_silent|{STAYS}|": open_alert("device_silent", STAYS)},
            "last_raised": {f"device_silent|{GONE}|": now - 600,
                            f"device_silent|{STAYS}|": now - 600},
            "pending_since": {f"backlog|{GONE}|": now - 60}}


def test_forget_with_the_watchers_config_edits_its_state_and_resolves_alerts(
        tmp_path: Path, mosquitto: Mosquitto, devices: Devices) -> None:
    """The watcher is stopped (and its session is gone): only its state remembers."""
    seed(devices, [GONE, STAYS])
    config = watch_config(tmp_path, mosquitto, watch={
        "window_names": {GONE: "03号窗口 不动产登记"}})
    state_file = tmp_path / "watch-state.json"
    state_file.write_text(json.dumps(stored_state(time.time())))
    os.chown(state_file, 1234, 1234)   # the watcher's user, not root
    os.chmod(state_file, 0o640)

    done = forget(config, GONE)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (f"{GONE}: retained status and config cleared; removed from "
                                   "the watcher's state, 1 open alert(s) resolved: "
                                   "device_silent")
    state = json.loads(state_file.read_text())
    assert list(state["devices"]) == [STAYS]
    assert list(state["open"]) == [f"device_silent|{STAYS}|"]
    assert list(state["last_raised"]) == [f"device_silent|{STAYS}|"]
    assert state["pending_since"] == {}
    info = state_file.stat()
    assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (1234, 1234, 0o640)
    assert not list(tmp_path.glob(".watch-state.json.*")), "a temporary file was left"

    wait_for(lambda: devices.of("device_silent", GONE, resolved=True), what="resolve")
    [resolve] = devices.of("device_silent", GONE, resolved=True)
    assert resolve["summary"].startswith("【已移除】03号窗口 不动产登记：评价器已从设备清单中移除")
    assert resolve["watcher"] == "watch-test"
    assert devices.of("device_silent", STAYS) == []
    assert sorted(retained(mosquitto, [GONE, STAYS])) == [
        f"{PREFIX}/{STAYS}/config", f"{PREFIX}/{STAYS}/status"]

    # Once more: nothing left to forget, and it says so.
    again = forget(config, GONE)
    assert again.returncode == 0
    assert again.stdout.strip().endswith("not in the watcher's state")


def test_a_damaged_state_is_left_alone(tmp_path: Path) -> None:
    state_file = tmp_path / "state.json"
    state_file.write_text('{"version": 1, "devices": {}, "devices": {}}')
    with pytest.raises(StateError, match="left alone"):
        forget_in_state(state_file, [GONE], time.time())
    assert state_file.read_text() == '{"version": 1, "devices": {}, "devices": {}}'
    assert forget_in_state(tmp_path / "missing.json", [GONE], 0.0)[0].known is False


def test_a_running_watcher_forgets_the_device_from_the_cleared_status(
        tmp_path: Path, mosquitto: Mosquitto, devices: Devices) -> None:
    """Why the watcher need not be stopped: the cleared status reaches it like any
    status, and it resolves and forgets on its own (then saves its state)."""
    config = watch_config(tmp_path, mosquitto, rules__silent={"after_min": 0.5},
                          halls__HG01={"open": ["mon-sun 00:00-24:00"]})
    clock = VirtualClock(time.time())
    watcher = RunningWatcher(config, clock)
    try:
        seed(devices, [GONE])
        devices.telemetry(GONE)
        watcher.wait_telemetry([GONE])
        watcher.advance(120, step=30)
        wait_for(lambda: devices.of("device_silent", GONE), what="silent alert")

        done = forget(bridge_toml(tmp_path, mosquitto), GONE)
        assert done.returncode == 0, done.stderr
        wait_for(lambda: devices.of("device_silent", GONE, resolved=True), what="resolve")
        assert GONE not in watcher.service.watcher.devices
        watcher.settle()
    finally:
        watcher.stop()
    assert GONE not in json.loads((tmp_path / "watch-state.json").read_text())["devices"]


def test_a_stopped_watcher_forgets_on_return_from_its_session(
        tmp_path: Path, mosquitto: Mosquitto, devices: Devices) -> None:
    """mosquitto queues the cleared status for the watcher's persistent session (an
    empty message, retain flag off) and delivers it when the watcher is back."""
    config = watch_config(tmp_path, mosquitto)
    clock = VirtualClock(time.time())
    watcher = RunningWatcher(config, clock)
    try:
        seed(devices, [GONE])
        wait_for(lambda: GONE in watcher.service.watcher.devices, what="status heard")
    finally:
        watcher.stop()
    assert GONE in json.loads((tmp_path / "watch-state.json").read_text())["devices"]

    done = forget(bridge_toml(tmp_path, mosquitto), GONE)
    assert done.returncode == 0, done.stderr
    watcher = RunningWatcher(config, clock)
    try:
        wait_for(lambda: GONE not in watcher.service.watcher.devices, what="forgotten")
    finally:
        watcher.stop()
    assert GONE not in json.loads((tmp_path / "watch-state.json").read_text())["devices"]


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**30, 10**30) | st.floats(allow_nan=False,
                                                                          allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                               max_size=3),
    max_leaves=10)
KEYS = st.sampled_from([f"device_silent|{GONE}|", f"backlog|{STAYS}|", GONE, "|", "",
                        f"x|{GONE}|y|z"])
ALERT_FIELDS = st.fixed_dictionaries({
    "alert_id": JSON_VALUES, "kind": st.sampled_from(["device_silent", "nonsense"]) | JSON_VALUES,
    "condition": JSON_VALUES, "severity": JSON_VALUES, "device_id": st.just(GONE) | JSON_VALUES,
    "hall_id": JSON_VALUES, "window_id": JSON_VALUES, "region_code": JSON_VALUES,
    "evidence": JSON_VALUES, "first_seen": JSON_VALUES, "raised_at": JSON_VALUES,
    "resolved_at": JSON_VALUES})
STATES = st.fixed_dictionaries({}, optional={
    "version": JSON_VALUES,
    "devices": st.dictionaries(st.sampled_from([GONE, STAYS, "x"]), JSON_VALUES) | JSON_VALUES,
    "open": st.dictionaries(KEYS, ALERT_FIELDS | JSON_VALUES, max_size=4) | JSON_VALUES,
    "last_raised": st.dictionaries(KEYS, JSON_VALUES) | JSON_VALUES,
    "pending_since": st.dictionaries(KEYS, JSON_VALUES) | JSON_VALUES})


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(state=STATES)
def test_any_state_file_is_edited_or_refused_never_broken(
        tmp_path: Path, state: dict[str, Any]) -> None:
    """The state file is the watcher's, but forget reads whatever is there: it never
    raises anything but StateError, never leaves the device behind in what it writes,
    and every resolve message it makes is the watcher's JSON."""
    path = tmp_path / "state.json"
    path.write_text(json.dumps(state))
    watch = load_watch_config(watch_config_for_state(tmp_path))
    forgotten = forget_in_state(path, [GONE], 1_795_000_000.0)
    after = json.loads(path.read_text())
    if isinstance(after.get("devices"), dict):
        assert GONE not in after["devices"]
    for table in ("open", "last_raised", "pending_since"):
        if isinstance(after.get(table), dict):
            assert not [k for k in after[table] if k.split("|")[1:2] == [GONE]]
    messages, undescribed = resolve_messages(watch, PREFIX, forgotten, 1_795_000_000.0)
    assert len(messages) + undescribed == len(forgotten[0].open_alerts)
    for _, payload, _ in messages:
        assert json.loads(payload)["resolved"] is True


def watch_config_for_state(tmp_path: Path) -> Path:
    path = tmp_path / "watch.toml"
    if not path.exists():
        path.write_text(toml_text({"watch": {"state_file": str(tmp_path / "state.json")}}))
    return path


def test_every_message_is_awaited_when_acks_overtake_the_publishing(
        mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch) -> None:
    """The broker may acknowledge the first messages before the rest are even handed to
    paho: "every mid so far is acknowledged" is not yet "all are". (It once was: one
    clean-up in ten stopped waiting after the first PUBACKs.)"""
    class SlowStart(mqtt.Client):
        """The first two PUBACKs come back before the next publish; the rest are sent
        at once, and are still on their way when the loop ends."""

        def publish(self, *args: Any, **kwargs: Any) -> mqtt.MQTTMessageInfo:
            info = super().publish(*args, **kwargs)
            if info.mid <= 2:
                time.sleep(0.2)
            return info

    monkeypatch.setattr(mqtt, "Client", SlowStart)
    settings = MqttSettings(
        host=mosquitto.host, port=mosquitto.port, prefix=PREFIX, client_id="",
        shared_group="", keepalive_s=30, session_expiry_s=0, receive_maximum=100,
        tls=False, ca_file="", client_cert="", client_key="", username="", password_file="")
    ids = [f"OLD-{i:04d}" for i in range(1, 41)]
    assert clear_retained(settings, ids, 5.0) == {d: [] for d in ids}


def test_many_messages_go_in_several_sessions(
        mosquitto: Mosquitto, devices: Devices, monkeypatch: pytest.MonkeyPatch) -> None:
    """Message ids are 16 bits: a large clean-up is split into sessions (3 messages
    each here) and every answer still belongs to its own topic."""
    monkeypatch.setattr("broker_bridge.forget.MESSAGES_PER_SESSION", 3)
    ids = [GONE, ALSO_GONE, STAYS, "421100-HG01-W06"]
    seed(devices, ids)
    settings = MqttSettings(
        host=mosquitto.host, port=mosquitto.port, prefix=PREFIX, client_id="",
        shared_group="", keepalive_s=30, session_expiry_s=0, receive_maximum=100,
        tls=False, ca_file="", client_cert="", client_key="", username="", password_file="")
    assert clear_retained(settings, ids, 5.0) == {d: [] for d in ids}
    assert retained(mosquitto, ids) == {}
