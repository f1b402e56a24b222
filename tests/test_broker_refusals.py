"""A broker that cannot do what the bridge asks gets one clear word (SPEC §12): shared
subscriptions refused (by CONNACK property, SUBACK 0x9E, or a DISCONNECT 0x9E the way
ejabberd does it) → one ERROR naming `[mqtt] shared_group`, /healthz 503, and at most one
connection attempt per backoff step; a broker that caps in-flight messages below a batch →
an ERROR with the figure. The brokers are scripted peers on real sockets; the bridge is the
real process."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, cast

import pytest

from broker_bridge.refusals import REFUSED_S
from simulator.natscluster import NatsCluster, nats_available
from tests.support.bridge import BridgeProcess
from tests.support.brokers import assert_exactly_once, publish_ratings, publisher, wait_for
from tests.support.mosquitto import Mosquitto
from tests.support.platform import RunningPlatform
from tests.support.scripted_broker import (
    SHARED_NOT_SUPPORTED,
    ScriptedBroker,
    refuse_shared,
    shared_unavailable,
)


def bridge_for(tmp_path: Path, broker: ScriptedBroker, platform: RunningPlatform,
               **mqtt: object) -> BridgeProcess:
    return BridgeProcess(tmp_path / "bridge", cast(Any, broker), platform.url,
                         overrides={"mqtt": mqtt} if mqtt else None)


def error_lines(bridge: BridgeProcess) -> list[str]:
    return [line for line in bridge.log_text().splitlines() if " ERROR " in f" {line}"
            or line.startswith("ERROR")]


@pytest.mark.parametrize("script", [
    pytest.param({"suback": refuse_shared,
                  "disconnect_after_suback": SHARED_NOT_SUPPORTED}, id="suback-then-disconnect"),
    pytest.param({"suback": refuse_shared, "disconnect_after_suback": 0x80},
                 id="suback-then-close"),
])
def test_a_broker_that_refuses_and_drops_us_gets_one_error_and_no_storm(
        tmp_path: Path, platform: RunningPlatform, script: dict[str, Any]) -> None:
    first_step = REFUSED_S[0]
    with ScriptedBroker(**script) as broker:
        bridge = bridge_for(tmp_path, broker, platform).start(wait_healthy=False)
        try:
            wait_for(lambda: len(broker.connects) >= 1 and bridge.healthz() == 503, 10,
                     "the first attempt")
            # Watch two backoff steps: a storm would reconnect every second or two.
            observed = first_step * 3 + 1.5
            time.sleep(observed)
            assert bridge.healthz() == 503
            attempts = list(broker.connects)
        finally:
            bridge.kill()
    gaps = [b - a for a, b in zip(attempts, attempts[1:], strict=False)]
    # Steps of 5 s then 10 s: attempts at about 0, 5 and 15 s.
    assert 2 <= len(attempts) <= 3, (attempts, bridge.log_text()[-3000:])
    assert all(gap >= first_step * 0.9 for gap in gaps), gaps
    errors = error_lines(bridge)
    assert len(errors) == 1, errors
    assert "[mqtt] shared_group" in errors[0] and "0x9e" in errors[0].lower(), errors
    assert broker.subscribes and broker.subscribes[0][0][0].startswith("$share/bridge/")


def test_a_broker_that_says_so_in_its_connack_is_not_even_asked(
        tmp_path: Path, platform: RunningPlatform) -> None:
    with ScriptedBroker(connack_properties=shared_unavailable()) as broker:
        bridge = bridge_for(tmp_path, broker, platform).start(wait_healthy=False)
        try:
            wait_for(lambda: "shared_group" in bridge.log_text(), 10, "the error")
            assert bridge.healthz() == 503
            time.sleep(3)   # still one connection, still unhealthy, nothing subscribed
            assert bridge.healthz() == 503
            assert len(broker.connects) == 1 and broker.subscribes == []
        finally:
            bridge.kill()
    errors = error_lines(bridge)
    assert len(errors) == 1 and "Shared Subscription Available = 0" in errors[0], errors


def test_a_refusal_that_keeps_the_connection_stays_unhealthy_without_reconnecting(
        tmp_path: Path, platform: RunningPlatform) -> None:
    with ScriptedBroker(suback=refuse_shared) as broker:
        bridge = bridge_for(tmp_path, broker, platform).start(wait_healthy=False)
        try:
            wait_for(lambda: "shared_group" in bridge.log_text(), 10, "the error")
            time.sleep(2)
            assert bridge.healthz() == 503 and len(broker.connects) == 1
            # connected, but with nothing granted: the gauge says what /healthz says
            assert bridge.metrics()[("hcp_bridge_broker_connected", ())] == 0
        finally:
            bridge.kill()
    assert len(error_lines(bridge)) == 1


def test_the_same_broker_with_a_plain_subscription_is_healthy(
        tmp_path: Path, platform: RunningPlatform) -> None:
    """The advice in the error works: shared_group = "" on the same broker."""
    with ScriptedBroker(suback=refuse_shared,
                        disconnect_after_suback=SHARED_NOT_SUPPORTED) as broker:
        bridge = bridge_for(tmp_path, broker, platform, shared_group="").start()
        try:
            assert bridge.healthz() == 200
            assert not any(topic.startswith("$share/") for topic, _ in broker.subscribes[0])
            wait_for(lambda: bridge.metrics()[("hcp_bridge_broker_connected", ())] == 1, 5,
                     "the gauge")
        finally:
            bridge.kill()
    assert error_lines(bridge) == []


def _drain_queued(tmp_path: Path, broker: Any, platform: RunningPlatform, count: int,
                  protocol: str) -> BridgeProcess:
    """Queue `count` ratings in a stopped bridge's session, then let it drain them."""
    overrides = {"mqtt": {"protocol": protocol, "shared_group": ""}}
    first = BridgeProcess(tmp_path / "first", broker, platform.url, client_id="capped",
                          overrides=overrides).start()
    first.kill()   # its session stays at the broker and queues what comes
    with publisher(broker, protocol) as fleet:
        sent = publish_ratings(fleet, count)
    bridge = BridgeProcess(tmp_path / "second", broker, platform.url, client_id="capped",
                           overrides=overrides).start()
    try:
        wait_for(lambda: platform.control.counts()["total"] == count, 60, "every rating")
        assert_exactly_once(platform, sent)
        time.sleep(0.5)   # the last answers reach the metrics
        requests = bridge.metric("hcp_bridge_platform_request_seconds_count")
        assert requests > 0
        bridge.requests = requests   # type: ignore[attr-defined]
    finally:
        bridge.kill()
    return bridge


@pytest.mark.skipif(not nats_available(), reason="nats-server is not installed")
def test_a_broker_capping_in_flight_messages_below_a_batch_is_named_with_the_figure(
        tmp_path: Path, platform: RunningPlatform) -> None:
    """NATS keeps at most `max_ack_pending` messages un-acknowledged toward an MQTT
    session: with 5, every batch holds 5, and the bridge names the figure once."""
    with NatsCluster(tmp_path / "nats", mqtt_extra="  max_ack_pending: 5") as nats:
        bridge = _drain_queued(tmp_path, nats.nodes[0], platform, 60, "3.1.1")
    errors = error_lines(bridge)
    assert len(errors) == 1, errors
    assert "lets only 5 un-acknowledged messages reach the bridge" in errors[0]
    assert "batch_max = 100" in errors[0] and "at most 5 ratings." in errors[0]
    assert bridge.requests >= 60 / 5   # type: ignore[attr-defined]


def test_mosquittos_receive_maximum_of_20_caps_nothing_toward_an_mqtt_5_bridge(
        tmp_path: Path, mosquitto: Mosquitto, platform: RunningPlatform) -> None:
    """mosquitto announces max_inflight_messages (20 by default) as the Receive Maximum
    of its CONNACK: a limit on what the bridge sends it. Toward the bridge it honours
    the bridge's Receive Maximum (1,000): batches of more than 20, and no ERROR."""
    bridge = _drain_queued(tmp_path, mosquitto, platform, 300, "5")
    assert error_lines(bridge) == []
    assert bridge.requests < 300 / 20   # type: ignore[attr-defined]


def test_a_broker_refusing_our_credentials_is_retried_at_backoff_steps(
        tmp_path: Path, platform: RunningPlatform) -> None:
    with ScriptedBroker(connack_reason=0x86) as broker:   # bad user name or password
        bridge = bridge_for(tmp_path, broker, platform).start(wait_healthy=False)
        try:
            wait_for(lambda: len(broker.connects) >= 1, 10, "the first attempt")
            time.sleep(REFUSED_S[0] + 1.5)
            attempts = len(broker.connects)
            assert bridge.healthz() == 503
        finally:
            bridge.kill()
    assert attempts == 2, bridge.log_text()[-2000:]
    errors = error_lines(bridge)
    assert len(errors) == 1 and "0x86" in errors[0], errors


def test_a_passing_refusal_is_asked_again_on_the_same_connection(
        tmp_path: Path, platform: RunningPlatform) -> None:
    """NATS answers SUBACK 0x80 when creating the JetStream consumer behind a subscription
    timed out (seen under load): the bridge asks again a backoff step later, on the same
    connection, and is healthy once granted."""
    answers = iter([[0x80, 0x80, 0x80, 0x80]])

    def first_refused_then_granted(filters: list[tuple[str, int]]) -> list[int]:
        return next(answers, [qos for _, qos in filters])

    with ScriptedBroker(suback=first_refused_then_granted) as broker:
        bridge = bridge_for(tmp_path, broker, platform, protocol="3.1.1",
                            shared_group="").start(
            wait_healthy=False)
        try:
            wait_for(lambda: bool(error_lines(bridge)), 10, "the error")
            assert bridge.healthz() == 503
            refused_at = time.monotonic()
            bridge.wait_healthy(REFUSED_S[0] + 5)
            assert time.monotonic() - refused_at >= REFUSED_S[0] * 0.8
            assert len(broker.connects) == 1 and len(broker.subscribes) == 2
        finally:
            bridge.kill()
    assert len(error_lines(bridge)) == 1
    assert broker.protocols == [4]


def test_a_session_taken_over_again_and_again_is_retaken_ever_more_slowly(
        tmp_path: Path, platform: RunningPlatform) -> None:
    """Two live bridges with one client_id (a standby started too early) take the session
    from each other: each turn is healthy, yet the steps keep growing, with one ERROR."""
    with ScriptedBroker(disconnect_after_grant=0x8E) as broker:
        bridge = bridge_for(tmp_path, broker, platform).start(wait_healthy=False)
        try:
            wait_for(lambda: len(broker.connects) >= 1, 10, "the first attempt")
            time.sleep(REFUSED_S[0] * 2 + 2)   # steps of 5 s, then 10 s
            attempts = list(broker.connects)
        finally:
            bridge.kill()
    assert len(attempts) == 2, (attempts, bridge.log_text()[-3000:])
    errors = error_lines(bridge)
    assert len(errors) == 1 and "took over the session (DISCONNECT 0x8e)" in errors[0], errors
    assert "(again, 2 times); next attempt in 10 s" in bridge.log_text()
