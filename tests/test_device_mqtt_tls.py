"""The device over TLS with a client certificate and a password file, against a mosquitto
that trusts a test CA: a wrong password or an untrusted server is a clear error in the
log and a retry, never a crash; fixing the password file is enough to get through."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.support.device import DEVICE_ID, DeviceProcess
from tests.support.mosquitto import Mosquitto, TestCA
from tests.test_device_mqtt_support import (
    Watcher,
    device_factory,
    press_rating,
    sim_status,
    wait_until,
)

__all__ = ["device_factory"]

DeviceFactory = Callable[..., DeviceProcess]


def test_tls_with_client_certificate_and_a_password_fixed_while_running(
        mosquitto_factory: Callable[..., Mosquitto], test_ca: TestCA,
        device_factory: DeviceFactory, tmp_path: Path) -> None:
    broker = mosquitto_factory(tls=test_ca, require_certificate=True,
                               users={"w03": "right horse", "watcher": "w"})
    cert, key = test_ca.issue("device-w03")
    password_file = tmp_path / "mqtt-password"
    password_file.write_text("wrong horse\n")
    device = device_factory(broker.tls_port, mqtt={
        "tls": True, "ca_file": str(test_ca.ca_file), "client_cert": str(cert),
        "client_key": str(key), "username": "w03", "password_file": str(password_file)})
    watcher = Watcher(broker, username="watcher", password="w")
    try:
        device.start()
        # Refused: one clear line in the log, and it keeps trying.
        refused = (f"ERROR hcp.mqtt: broker 127.0.0.1:{broker.tls_port}: broker refused the "
                   "connection: Not authorized — check [mqtt] username and password_file")
        assert wait_until(lambda: refused in device.log(), 10), device.log()
        assert wait_until(lambda: broker.log_text().count("disconnected, not authorised") >= 2,
                          15), broker.log_text()[-2000:]
        assert sim_status(device)["broker"] == "offline"
        press_rating(device, 5)   # meanwhile the device works offline

        # The technician fixes the file: the next attempt gets through, no restart.
        password_file.write_text("right horse\n")
        rating = watcher.wait_for("rating", timeout=40)   # the next retry: ≤ 16 s here
        assert rating is not None, device.log()
        assert rating["device_id"] == DEVICE_ID
        assert device.log().count("broker refused") == 1   # said once, not at every retry
        assert device.proc is not None and device.proc.poll() is None
        assert f"as {DEVICE_ID} (" in broker.log_text() and "u'w03'" in broker.log_text()
        assert "over TLS" in device.log()
    finally:
        watcher.close()


def test_untrusted_server_certificate_is_a_clear_error_not_a_crash(
        mosquitto_factory: Callable[..., Mosquitto], test_ca: TestCA,
        device_factory: DeviceFactory, tmp_path: Path) -> None:
    broker = mosquitto_factory(tls=test_ca)
    other_ca = TestCA(tmp_path / "other-ca")
    device = device_factory(broker.tls_port, mqtt={"tls": True,
                                                   "ca_file": str(other_ca.ca_file)})
    device.start()
    assert wait_until(lambda: "server certificate not trusted" in device.log(), 10), \
        device.log()
    assert "ERROR hcp.mqtt" in device.log()
    press_rating(device, 4)
    assert sim_status(device)["backlog"] == 1
    assert device.proc is not None and device.proc.poll() is None
