"""The hall → city topology (SPEC §12, docs/hall-broker.md): three hall mosquittos bridged
to a city mosquitto with the sample systemd/examples/hall-bridge.conf, the bridge at the
city. The city broker restarts (cleanly, or killed) while every hall holds 100 ratings its
devices published during the outage: all 300 reach the platform within 60 s of the city's
return, each once, and each device gets its receipts back down through its hall — without
any device re-sending (the publishers here never re-send)."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.support.bridge import BridgeProcess
from tests.support.brokers import Sent, assert_exactly_once, publish_ratings, publisher, wait_for
from tests.support.hall import bridge_connected, hall_bridge_lines, hall_broker
from tests.support.mosquitto import Mosquitto
from tests.support.platform import RunningPlatform
from tests.support.ratings import FleetPublisher

HALLS = ["421100-HG01", "421100-HG02", "421100-HG03"]
RETURN_WITHIN_S = 60.0


def devices_of(hall: str) -> list[str]:
    return [f"{hall}-W{n:02d}" for n in range(1, 6)]


def saves(broker: Mosquitto) -> int:
    return broker.log_text().count("Saving in-memory database")


@pytest.fixture
def city_and_halls(tmp_path: Path, mosquitto_factory: Callable[..., Mosquitto]
                   ) -> Iterator[tuple[Mosquitto, list[Mosquitto]]]:
    city = mosquitto_factory()
    halls = [hall_broker(tmp_path / f"hall-{n}", city, hall, devices_of(hall))
             for n, hall in enumerate(HALLS, 1)]
    with ExitStack() as stack:
        for hall in halls:
            stack.enter_context(hall)
        for hall_id in HALLS:
            wait_for(functools.partial(bridge_connected, city, hall_id), 20,
                     f"hall {hall_id} bridged to the city")
        yield city, halls


def test_the_fixture_uses_the_sample_with_only_addresses_ids_and_devices_replaced(
        mosquitto: Mosquitto) -> None:
    lines = hall_bridge_lines(mosquitto, "421100-HG09", ["421100-HG09-W07"])
    assert f"address {mosquitto.host}:{mosquitto.port}" in lines
    assert "bridge_protocol_version mqttv50" in lines and "cleansession false" in lines
    assert "clientid hcp-hall-421100-HG09" in lines
    assert "topic hcp/v1/+/rating out 1" in lines
    assert [line for line in lines if " in 1" in line] == [
        "topic hcp/v1/421100-HG09-W07/receipt in 1", "topic hcp/v1/421100-HG09-W07/config in 1"]


@pytest.mark.parametrize("how", ["restart", pytest.param("kill", marks=pytest.mark.slow)])
def test_ratings_held_by_three_halls_reach_the_platform_within_60_s_of_the_city_return(
        tmp_path: Path, city_and_halls: tuple[Mosquitto, list[Mosquitto]],
        platform: RunningPlatform, how: str) -> None:
    city, halls = city_and_halls
    # One active bridge with a plain, persistent subscription: mosquitto restores it after
    # a restart (it does not restore $share ones), so what a hall flushes the moment its
    # link returns is queued in the bridge's session even before the bridge is back.
    bridge = BridgeProcess(tmp_path / "bridge", city, platform.url, client_id="city-bridge",
                           overrides={"mqtt": {"shared_group": ""}}).start()
    with bridge, ExitStack() as stack:
        publishers = [stack.enter_context(publisher(hall)) for hall in halls]
        # Warm up: one rating per hall, up through its hall and back down as a receipt.
        warm: Sent = {}
        for pub, hall_id in zip(publishers, HALLS, strict=True):
            warm.update(publish_ratings(pub, 1, devices_of(hall_id)))
        wait_for(lambda: all_receipted(publishers, warm), 20, "the warm-up receipts")

        if how == "kill":
            # SIGKILL keeps only what the last autosave wrote: let one save pass first.
            saved = saves(city)
            wait_for(lambda: saves(city) > saved, 10, "the city's autosave")
            city.kill()
        else:
            city.stop()
        held: Sent = {}
        for pub, hall_id in zip(publishers, HALLS, strict=True):
            held.update(publish_ratings(pub, 100, devices_of(hall_id)))
        # Let the outage last long enough for the old reconnect policy to reach its 30 s
        # delay had it still been there (1 + 2 + 4 + 8 s of retries).
        wait_for(lambda: bridge.healthz() == 503, 10, "the bridge to notice")
        time.sleep(12)
        assert platform.control.counts()["total"] == len(warm)
        city.start()
        returned = time.monotonic()
        wait_for(lambda: platform.control.counts()["total"] >= len(warm) + len(held),
                 RETURN_WITHIN_S, "the 300 held ratings at the platform", every=0.2)
        took = time.monotonic() - returned
        wait_for(lambda: all_receipted(publishers, held), 30,
                 "every receipt down through the halls")
    assert_exactly_once(platform, {**warm, **held})
    print(f"city {how}: 300 held ratings at the platform {took:.1f} s after its return")
    assert took < RETURN_WITHIN_S


def all_receipted(publishers: list[FleetPublisher], sent: Sent) -> bool:
    receipted: set[str] = set()
    for pub in publishers:
        receipted |= set(pub.receipted_ids())
    return set(sent) <= receipted


@pytest.mark.parametrize("how", ["restart", pytest.param("kill", marks=pytest.mark.slow)])
def test_a_hall_broker_restarting_while_cut_off_keeps_what_it_held(
        tmp_path: Path, city_and_halls: tuple[Mosquitto, list[Mosquitto]],
        platform: RunningPlatform, how: str) -> None:
    """The hall's queue for the city is in its persistence file: a hall restarted (or
    killed after an autosave) while its link is down still forwards every rating once the
    city is back — and nobody re-sends anything."""
    city, halls = city_and_halls
    hall = halls[0]
    bridge = BridgeProcess(tmp_path / "bridge", city, platform.url, client_id="city-bridge",
                           overrides={"mqtt": {"shared_group": ""}}).start()
    with bridge, publisher(hall) as pub:
        city.stop()
        held = publish_ratings(pub, 100, devices_of(HALLS[0]))
        if how == "kill":
            saved = saves(hall)
            wait_for(lambda: saves(hall) > saved, 10, "the hall's autosave")
            hall.kill()
        else:
            hall.stop()
        hall.start()
        city.start()
        returned = time.monotonic()
        wait_for(lambda: platform.control.counts()["total"] >= len(held), RETURN_WITHIN_S,
                 "the hall's held ratings at the platform", every=0.2)
        took = time.monotonic() - returned
    assert_exactly_once(platform, held)
    print(f"hall {how} during a city outage: 100 held ratings at the platform {took:.1f} s "
          "after the city's return")
