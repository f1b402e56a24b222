"""Audit: an [mqtt] host the resolver cannot take. A label over 63 characters (or an
empty one, "a..b") made socket.getaddrinfo raise UnicodeError inside paho's network
thread, which ended it: the bridge ran on with no MQTT thread, never connected and never
tried again. The bridge's and the watcher's configs now refuse such a host by name."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker_bridge.bridge import Bridge
from broker_bridge.config import parse_bridge_config
from broker_bridge.metrics import BridgeMetrics
from broker_bridge.watch.config import parse_watch_config
from common.configschema import ConfigError, host_name

BAD_HOSTS = ["a" * 64 + ".example", "broker..example", ".broker", "a b", "broker\n"]


@pytest.mark.parametrize("host", BAD_HOSTS)
def test_a_host_the_resolver_cannot_take_is_a_config_problem(tmp_path: Path,
                                                             host: str) -> None:
    with pytest.raises(ConfigError) as bridge:
        parse_bridge_config(Path("b.toml"), {"mqtt": {"client_id": "x", "host": host},
                                             "platform": {"url": "http://127.0.0.1:9/a"}})
    assert any("[mqtt] host" in p for p in bridge.value.problems), bridge.value.problems
    with pytest.raises(ConfigError) as watch:
        parse_watch_config(Path("w.toml"), {
            "mqtt": {"client_id": "w", "host": host},
            "watch": {"state_file": str(tmp_path / "state.json")}})
    assert any("[mqtt] host" in p for p in watch.value.problems), watch.value.problems


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=80) | st.lists(st.text("ab-", max_size=70), max_size=4).map(
    ".".join))
def test_any_host_the_config_accepts_reaches_the_resolver(host: str) -> None:
    """What the resolver does first with a host (socket.getaddrinfo encodes every str
    with the idna codec) does not raise for an accepted host."""
    if host_name(host) is None:
        host.encode("idna")


def test_an_accepted_host_that_does_not_resolve_keeps_the_link_retrying() -> None:
    """The network thread lives on (and keeps retrying) for a host that does not exist."""
    config = parse_bridge_config(Path("b.toml"), {
        "mqtt": {"client_id": "audit-host", "host": "a" * 63 + ".invalid"},
        "platform": {"url": "http://127.0.0.1:9/a"}})
    bridge = Bridge(config, BridgeMetrics())
    thread = threading.Thread(target=bridge.run, args=(None, 0.05), daemon=True)
    thread.start()
    try:
        time.sleep(2.5)
        client = bridge.link._client  # type: ignore[attr-defined]
        assert client._thread is not None and client._thread.is_alive()
    finally:
        bridge.request_stop()
        thread.join(5)
