"""The bridge secured on both sides: TLS + username/password (from a file) + ACL at the
broker, HTTPS + a bearer token (from a file) at the platform; secrets never logged.
Also checks the shared mosquitto fixture's TLS, password, ACL and lifecycle controls."""

from __future__ import annotations

import json
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.bridge import BridgeProcess
from tests.support.mosquitto import Mosquitto, TestCA
from tests.support.platform import running_platform
from tests.support.ratings import FleetPublisher, make_rating

BROKER_PASSWORD = "broker-pw-Zq81"
PLATFORM_TOKEN = "platform-token-Hh27"


# The bridge's rights as in the project's sample broker ACL (systemd/examples/
# mosquitto.acl, tested on its own in tests/test_acl.py): read what devices publish,
# write receipts, dead letters and alerts. Devices log in with their device id.
ACL = """\
pattern write hcp/v1/%u/rating
pattern write hcp/v1/%u/event
pattern write hcp/v1/%u/status
pattern write hcp/v1/%u/telemetry
pattern read hcp/v1/%u/receipt
pattern read hcp/v1/%u/config

user hcp-bridge
topic read hcp/v1/+/rating
topic read hcp/v1/+/event
topic read hcp/v1/+/status
topic read hcp/v1/+/telemetry
topic write hcp/v1/+/receipt
topic write hcp/v1/alerts
topic write hcp/v1/deadletter
"""
DEVICES = ["421100-HG01-W01", "421100-HG01-W02", "421100-HG01-W03"]
USERS = {"hcp-bridge": BROKER_PASSWORD, **{d: f"pw-{d}" for d in DEVICES}}


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def secure_bridge(tmp_path: Path, broker: Mosquitto, test_ca: TestCA, platform_url: str,
                  user: str = "hcp-bridge", password: str = BROKER_PASSWORD) -> BridgeProcess:
    password_file = tmp_path / f"{user}.password"
    password_file.write_text(password + "\n")
    token_file = tmp_path / "platform.token"
    token_file.write_text(PLATFORM_TOKEN + "\n")
    assert broker.tls_port is not None
    return BridgeProcess(tmp_path / f"bridge-{user}", broker, platform_url, overrides={
        "mqtt": {"port": broker.tls_port, "tls": True, "ca_file": str(test_ca.ca_file),
                 "username": user, "password_file": str(password_file)},
        "platform": {"token_file": str(token_file), "ca_file": str(test_ca.ca_file)},
    })


def test_tls_password_acl_and_https_token_end_to_end(
        tmp_path: Path, mosquitto_factory: Callable[..., Mosquitto], test_ca: TestCA) -> None:
    broker = mosquitto_factory(tls=test_ca, users=USERS, acl=ACL)
    assert broker.tls_port is not None
    with running_platform(tmp_path / "platform", token=PLATFORM_TOKEN,
                          tls=test_ca.issue("platform"), ca_file=test_ca.ca_file) as platform:
        assert platform.url.startswith("https://")
        bridge = secure_bridge(tmp_path, broker, test_ca, platform.url).start()
        # One connection per device, logged in as itself: the ACL lets it publish only
        # under its own id.
        devices = {d: FleetPublisher(broker.host, broker.tls_port, username=d,
                                     password=f"pw-{d}", ca_file=test_ca.ca_file,
                                     receipts_of=d) for d in DEVICES}
        try:
            records = [make_rating(DEVICES[n % 3]) for n in range(30)]
            for record in records:
                devices[record["device_id"]].publish_record(record)
            # A device publishing under another id is stopped by the broker itself.
            intruder = make_rating(DEVICES[1])
            devices[DEVICES[0]].publish_record(intruder)
            for device_id, device in devices.items():
                def ten_receipts(d: FleetPublisher = device) -> bool:
                    return len(d.receipted_ids()) == 10

                wait_for(ten_receipts, 15, f"10 receipts for {device_id} over TLS")
            assert set(platform.control.rating_ids()) == {r["rating_id"] for r in records}
        finally:
            for device in devices.values():
                device.close()
            bridge.kill()
        log = bridge.log_text()
        config = bridge.config_file.read_text()
        for secret in (BROKER_PASSWORD, PLATFORM_TOKEN):
            assert secret not in log and secret not in config


def test_wrong_broker_password_is_logged_and_unhealthy(
        tmp_path: Path, mosquitto_factory: Callable[..., Mosquitto], test_ca: TestCA) -> None:
    broker = mosquitto_factory(tls=test_ca, users=USERS, acl=ACL)
    bridge = secure_bridge(tmp_path, broker, test_ca, "https://127.0.0.1:9/api",
                           password="guess").start(wait_healthy=False)
    try:
        wait_for(lambda: "refused the connection" in bridge.log_text(), 10, "a refusal")
        assert bridge.healthz() == 503
        assert bridge.returncode is None  # keeps trying, the operator fixes the file
        assert "guess" not in bridge.log_text()
    finally:
        bridge.kill()


# The shared mosquitto fixture itself ------------------------------------------------


def connect(broker: Mosquitto, timeout: float = 3.0, **auth: str) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    if auth:
        client.username_pw_set(auth["username"], auth["password"])
    client.connect(broker.host, broker.port)
    client.loop_start()
    deadline = time.monotonic() + timeout
    while not client.is_connected():
        if time.monotonic() > deadline:
            client.loop_stop()
            raise TimeoutError("no CONNACK")
        time.sleep(0.02)
    return client


def retained(broker: Mosquitto, topic: str) -> bytes | None:
    got: list[bytes] = []
    client = connect(broker)
    client.on_message = lambda c, u, m: got.append(bytes(m.payload))
    client.subscribe(topic, qos=1)
    time.sleep(0.3)
    client.disconnect()
    client.loop_stop()
    return got[0] if got else None


def test_fixture_restart_keeps_or_wipes_what_the_broker_saved(mosquitto: Mosquitto) -> None:
    client = connect(mosquitto)
    client.publish("hcp/v1/dev-1/status", json.dumps({"online": True}), qos=1,
                   retain=True).wait_for_publish(3)
    client.disconnect()
    client.loop_stop()
    port = mosquitto.port
    mosquitto.restart()
    assert mosquitto.port == port
    assert retained(mosquitto, "hcp/v1/+/status") == b'{"online": true}'
    mosquitto.restart(wipe_persistence=True)
    assert retained(mosquitto, "hcp/v1/+/status") is None
    mosquitto.kill()
    assert not mosquitto.running
    mosquitto.start()
    assert "mosquitto version" in mosquitto.log_text()


def test_fixture_pause_freezes_the_broker(mosquitto: Mosquitto) -> None:
    mosquitto.pause()
    try:
        with pytest.raises(TimeoutError):
            connect(mosquitto, timeout=0.5)  # the TCP backlog accepts, MQTT never answers
    finally:
        mosquitto.resume()
    connect(mosquitto).disconnect()


def test_fixture_tls_listener_and_passwords(mosquitto_factory: Callable[..., Mosquitto],
                                            test_ca: TestCA) -> None:
    broker = mosquitto_factory(tls=test_ca, users={"u": "p"})
    assert broker.tls_port is not None
    context = ssl.create_default_context(cafile=str(test_ca.ca_file))
    with socket.create_connection((broker.host, broker.tls_port), timeout=3) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        assert tls.version() is not None
    refused = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    codes: list[object] = []
    refused.on_connect = lambda c, u, f, rc, p: codes.append(rc)
    refused.connect(broker.host, broker.port)
    refused.loop_start()
    wait_for(lambda: bool(codes), 3, "CONNACK")
    refused.loop_stop()
    assert getattr(codes[0], "is_failure", False)
    connect(broker, username="u", password="p").disconnect()
