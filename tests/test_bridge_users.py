"""One broker user per process ([mqtt] username_is_client_id): what bridge.toml accepts,
which user each connection made from it logs in as (the bridge, `hcp-bridge expired`, a
standby's watcher), and `hcp-bridge forget` refusing the users of the services whose
config it reads. Against a real broker: tests/test_broker_trust.py."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker_bridge.config import (
    CLIENT_ID_RE,
    MqttSettings,
    load_bridge_config,
    login_as,
)
from broker_bridge.expired import ExpiredForwarder
from broker_bridge.forget import service_ids
from broker_bridge.mqtt_link import LinkEvent
from common.configschema import ConfigError
from tests.support.bridge import REPO, toml_text

URL = "http://127.0.0.1:9/ratings"


def write(tmp_path: Path, mqtt: dict[str, Any], **platform: Any) -> Path:
    path = tmp_path / "bridge.toml"
    path.write_text(toml_text({"mqtt": mqtt, "platform": {"url": URL, **platform}}))
    return path


@pytest.fixture
def secret(tmp_path: Path) -> str:
    path = tmp_path / "bridge.password"
    path.write_text("pw\n")
    return str(path)


def test_the_bridge_logs_in_as_its_client_id(tmp_path: Path, secret: str) -> None:
    config = load_bridge_config(write(tmp_path, {
        "client_id": "hcp-bridge-1", "username_is_client_id": True, "password_file": secret}))
    assert (config.mqtt.client_id, config.mqtt.username) == ("hcp-bridge-1", "hcp-bridge-1")
    assert config.mqtt.password_file == secret


def test_without_it_every_connection_keeps_the_one_username(tmp_path: Path,
                                                            secret: str) -> None:
    config = load_bridge_config(write(tmp_path, {
        "client_id": "hcp-bridge-1", "username": "hcp-bridge", "password_file": secret}))
    assert not config.mqtt.username_is_client_id
    assert login_as(config.mqtt, "hcp-bridge-1-expired").username == "hcp-bridge"


@pytest.mark.parametrize(("mqtt", "expected"), [
    ({"client_id": "hcp-bridge-1", "username": "hcp-bridge", "password_file": "SECRET"},
     "[mqtt] username: leave it out with username_is_client_id = true"),
    ({"password_file": "SECRET"}, "[mqtt] username_is_client_id: needs client_id"),
    ({"client_id": "hcp-bridge-1"}, "[mqtt] username_is_client_id: needs password_file"),
    ({"client_id": "hcp-bridge-1", "password_file": "/nonexistent/pw"},
     "[mqtt] password_file: no such file"),
])
def test_what_it_needs_is_named(tmp_path: Path, secret: str, mqtt: dict[str, Any],
                                expected: str) -> None:
    mqtt = {k: secret if v == "SECRET" else v for k, v in mqtt.items()}
    with pytest.raises(ConfigError) as caught:
        load_bridge_config(write(tmp_path, {**mqtt, "username_is_client_id": True}))
    assert any(expected in p for p in caught.value.problems), caught.value.problems
    # One problem per mistake, not a second one about a username nobody wrote.
    assert len(caught.value.problems) == 1, caught.value.problems


@given(client_id=st.from_regex(CLIENT_ID_RE, fullmatch=True),
       other=st.from_regex(CLIENT_ID_RE, fullmatch=True), flag=st.booleans())
def test_login_as_names_the_user_after_the_connection(client_id: str, other: str,
                                                      flag: bool) -> None:
    settings = MqttSettings(
        host="127.0.0.1", port=1883, prefix="hcp/v1", client_id=client_id, shared_group="",
        keepalive_s=30, session_expiry_s=3600, receive_maximum=100, tls=False, ca_file="",
        client_cert="", client_key="", username=client_id if flag else "svc",
        password_file="/pw", username_is_client_id=flag)
    moved = login_as(settings, other)
    assert moved.client_id == other
    assert moved.username == (other if flag else "svc")
    assert moved.password_file == "/pw"


class _Link:
    def __init__(self, settings: MqttSettings) -> None:
        self.settings = settings


def test_the_expired_forwarder_logs_in_as_its_own_user(tmp_path: Path, secret: str) -> None:
    config = load_bridge_config(write(tmp_path, {
        "client_id": "hcp-bridge-1", "username_is_client_id": True, "password_file": secret},
        profile="gov"))
    made: list[MqttSettings] = []

    def factory(settings: MqttSettings, subscriptions: Sequence[tuple[str, int]],
                sink: Callable[[LinkEvent], None], holds: Callable[[str], bool]) -> Any:
        made.append(settings)
        return _Link(settings)

    ExpiredForwarder(config, factory)
    assert [(s.client_id, s.username) for s in made] == [
        ("hcp-bridge-1-expired", "hcp-bridge-1-expired")]
    assert made[0].shared_group == "bridge-expired"


def test_forget_knows_the_services_ids() -> None:
    assert service_ids("hcp-bridge-1") == {
        "hcp-bridge-1", "hcp-bridge-1-expired", "hcp-bridge-1-standby",
        "hcp-bridge-1-expired-standby"}


def test_forget_refuses_the_configs_own_user(tmp_path: Path, secret: str) -> None:
    """Refused before any connection (port 9: nothing listens): on a broker binding ids
    to users the login would take the running bridge's session over."""
    config = write(tmp_path, {"port": 9, "client_id": "hcp-bridge-1",
                              "username_is_client_id": True, "password_file": secret})
    done = subprocess.run([sys.executable, "-m", "broker_bridge", "forget", "--config",
                           str(config), "421100-HG01-W03"], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "not logging in as hcp-bridge-1" in done.stderr
    assert "nothing was changed" in done.stderr
