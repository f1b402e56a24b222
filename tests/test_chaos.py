"""Reliability as a whole: the real daemon on a disk that fills up, and a short chaos run
of the whole chain (tests/chaos, docs/reliability.md) whose ledger must balance.

The chaos run takes about two minutes; `python -m tests.chaos --minutes 10` is the long
one. Both need root for a size-limited tmpfs; without it the disk tests are skipped and
the chaos run goes on without its disk-full fault (the report says why). The network
faults need root and ip, nft and tc (devices in namespaces of their own); without them
the run goes on without the net_* kinds and the report says which and why.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from device.outbox import Outbox
from simulator.localbroker import Mosquitto
from simulator.windowlink import answer_to
from tests.chaos.chain import Chain
from tests.chaos.disk import DiskUnavailable, SmallDisk
from tests.chaos.faults import KINDS, NET_KINDS, FaultInjector
from tests.chaos.ledger import Case, Ledger, PlatformRating
from tests.chaos.netns import unavailable_reason
from tests.chaos.runner import ChaosOptions, ChaosRun
from tests.support.device import DeviceProcess


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    disk = SmallDisk(tmp_path / "device" / "data", size_mb=1)
    try:
        disk.mount()
    except DiskUnavailable as e:
        pytest.skip(f"no size-limited filesystem here: {e}")
    yield disk
    disk.unmount()


class EventLog:
    """The device's `event` messages, as the hall's monitoring would see them."""

    def __init__(self, broker: Mosquitto) -> None:
        self.events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-events")
        self.client.on_connect = lambda c, *_: c.subscribe("hcp/v1/+/event", qos=1)
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self._subscribed.wait(5)

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.events.append(json.loads(message.payload))
            self._cond.notify_all()

    def named(self, name: str) -> list[dict[str, Any]]:
        with self._cond:
            return [e for e in self.events if e.get("event") == name]

    def wait(self, name: str, count: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
        with self._cond:
            self._cond.wait_for(lambda: len(self.named(name)) >= count, timeout)
        return self.named(name)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def rated(case_id: str):  # type: ignore[no-untyped-def]
    return lambda f: f.get("type") == "rated" and f.get("case_id") == case_id


def test_disk_full_shows_the_error_reports_it_and_recovers_when_space_returns(
        tmp_path: Path, small_disk: SmallDisk, mosquitto: Mosquitto) -> None:
    events = EventLog(mosquitto)
    device = DeviceProcess(tmp_path / "device", mqtt_port=mosquitto.port,
                           sections={"ui": {"thanks_s": 0.3, "lockout_s": 0.0}})
    try:
        device.start()
        w, sim = device.window, device.sim
        assert w is not None and sim is not None

        def rate(case_id: str, level: int = 5) -> str:
            """Send a case and press; the screen that follows the press."""
            seq = w.send("case_completed", case_id=case_id, service_name="不动产登记")
            assert w.wait_for(answer_to(seq), 5) == {"type": "ack", "seq": seq}
            assert sim.wait_screen("prompt", 5, where=lambda e: e["case_id"] == case_id)
            sim.press(level)
            after = sim.wait_for(lambda e: e.get("ev") == "screen"
                                 and e["screen"] in ("thanks", "error"), 5)
            assert after is not None, device.log()
            return str(after["screen"])

        assert rate("BEFORE") == "thanks"
        before = w.wait_for(rated("BEFORE"), 5)
        assert before is not None

        small_disk.fill()
        # The journal's last page may still take a record or two: rate until it is full.
        thanked: list[str] = []
        for n in range(12):
            case_id = f"FULL-{n}"
            if rate(case_id) == "error":
                break
            thanked.append(case_id)
            assert w.wait_for(rated(case_id), 5)
            assert sim.wait_screen("idle", 5)
        else:
            pytest.fail("the daemon kept thanking on a full disk")
        error = sim.screen
        assert error is not None and "评价未能保存" in error["text"]
        # Not thanked, and the window is not told the case was rated.
        assert w.wait_for(rated(case_id), 1.0) is None
        (overflow,) = events.wait("outbox_overflow")
        assert overflow["backlog"] >= 1 and overflow["disk_free_mb"] is not None
        assert events.wait("storage_error")[0]["error"].endswith("No space left on device")

        # The case comes back on the prompt; still full: the error again, one overflow.
        assert sim.wait_screen("prompt", 8, where=lambda e: e["case_id"] == case_id)
        sim.press(4)
        assert sim.wait_screen("error", 5)
        assert len(events.wait("storage_error", 2)) == 2
        assert len(events.named("outbox_overflow")) == 1

        small_disk.free()
        assert sim.wait_screen("prompt", 8, where=lambda e: e["case_id"] == case_id)
        sim.press(3)
        assert sim.wait_screen("thanks", 5)
        recovered = w.wait_for(rated(case_id), 5)
        assert recovered is not None and recovered["level"] == 3
        assert device.stop() == 0
    finally:
        events.close()
        device.close()

    outbox = Outbox(device.data_dir)
    report = outbox.open()
    try:
        # Nothing already stored was damaged; the recovered rating is there, once.
        assert report.dropped_records == 0 and not report.details
        cases = [r["case"]["case_id"] for r in outbox.pending()]
        assert cases == ["BEFORE", *thanked, case_id]
        assert outbox.pending()[0]["rating_id"] == before["rating_id"]
    finally:
        outbox.close()
    assert "outbox: storing ratings again" in device.log()


@pytest.mark.slow
def test_chaos_run_of_the_whole_chain_balances(tmp_path: Path) -> None:
    """About two minutes: three devices, two bridges, mosquitto and the platform under
    every kind of fault (the network ones when this machine allows, else the report
    says which were skipped and why); every confirmed rating at the platform once, no
    phantom."""
    report = ChaosRun(ChaosOptions(minutes=1.25, devices=3, mean_fault_gap_s=2.5,
                                   resend_after_s=5.0, drain_timeout_s=90.0,
                                   workdir=tmp_path / "chaos")).run()
    text = report.text()
    print(text)
    assert report.ok, text
    summary = report.summary()
    injected = set(summary["faults"])
    assert injected | set(report.skipped) == set(KINDS), text
    if unavailable_reason() is None:
        assert set(NET_KINDS) <= injected, text
    else:
        print(f"network faults skipped: {unavailable_reason()}")
        assert set(NET_KINDS) <= set(report.skipped), text
    # The driver faults were seen by the daemons, reported and cleared.
    assert {"display_fault", "indicator_fault"} <= injected, text
    assert summary["device_events"].get("driver_fault", 0) >= 1, text
    assert summary["ratings_confirmed"] >= 30, text


def test_network_kinds_are_skipped_with_the_reason_when_devices_have_no_namespaces(
        tmp_path: Path) -> None:
    chain = Chain(tmp_path, devices=1, use_disks=False)   # not started: nothing runs
    chain.netns_skip_reason = "not root: network namespaces need root"
    injector = FaultInjector(chain, Ledger(), random.Random(1))
    assert {k: injector.skipped[k] for k in NET_KINDS} == dict.fromkeys(
        NET_KINDS, "not root: network namespaces need root")
    assert not set(NET_KINDS) & set(injector.kinds)
    assert {"display_fault", "indicator_fault"} <= set(injector.kinds)


# The ledger's rules on synthetic data: the chaos run is only as good as its reckoning.

def platform_rating(rating_id: str, case_id: str | None, level: int, device: str = "W1",
                    received_at: float = 2e9, trigger: str = "case") -> PlatformRating:
    return PlatformRating(rating_id, device, level, trigger, case_id, received_at, 1)


def pressed_case(ledger: Ledger, case_id: str, level: int, device: str = "W1") -> Case:
    case = ledger.new_case(device, case_id)
    ledger.press(case, level)
    return case


def test_ledger_balances_when_every_confirmed_rating_is_there_once() -> None:
    ledger = Ledger()
    case = pressed_case(ledger, "C1", 5)
    ledger.rated("W1", {"type": "rated", "case_id": "C1", "level": 5, "rating_id": "a" * 32})
    ledger.outcome(case, "rated")
    verdict = ledger.reconcile([platform_rating("a" * 32, "C1", 5)])
    assert verdict.ok and verdict.confirmed == 1 and len(verdict.latencies_s) == 1


def test_ledger_finds_a_confirmed_rating_missing_at_the_platform() -> None:
    ledger = Ledger()
    pressed_case(ledger, "C1", 5)
    ledger.rated("W1", {"type": "rated", "case_id": "C1", "level": 5, "rating_id": "a" * 32})
    verdict = ledger.reconcile([])
    assert [f.kind for f in verdict.findings] == ["lost"]


def test_ledger_finds_a_case_proved_stored_by_duplicate_case_but_missing() -> None:
    ledger = Ledger()
    case = pressed_case(ledger, "C1", 4)
    ledger.outcome(case, "stored")
    assert [f.kind for f in ledger.reconcile([]).findings] == ["lost"]
    assert ledger.reconcile([platform_rating("b" * 32, "C1", 4)]).ok


def test_ledger_finds_a_case_rated_twice() -> None:
    ledger = Ledger()
    pressed_case(ledger, "C1", 5)
    verdict = ledger.reconcile([platform_rating("a" * 32, "C1", 5),
                                platform_rating("b" * 32, "C1", 5)])
    assert [f.kind for f in verdict.findings] == ["duplicated"]


def test_ledger_finds_phantoms_wrong_level_unknown_case_and_spontaneous() -> None:
    ledger = Ledger()
    pressed_case(ledger, "C1", 5)
    verdict = ledger.reconcile([
        platform_rating("a" * 32, "C1", 3),                       # level never pressed
        platform_rating("b" * 32, "C9", 5),                       # case never sent
        platform_rating("c" * 32, None, 5, trigger="spontaneous"),
    ])
    assert [f.kind for f in verdict.findings] == ["phantom"] * 3
    ledger.rated("W1", {"type": "rated", "case_id": "C1", "level": 2, "rating_id": "d" * 32})
    assert any(f.kind == "phantom" for f in ledger.reconcile([]).findings)


def test_ledger_lets_a_press_with_no_case_in_mind_rate_the_next_case_once() -> None:
    ledger = Ledger()
    pressed_case(ledger, "C1", 5)
    ledger.new_case("W1", "C2")
    ledger.loose_press("W1", 4)
    now = time.time() + 1
    assert ledger.reconcile([platform_rating("a" * 32, "C1", 5, received_at=now),
                             platform_rating("b" * 32, "C2", 4, received_at=now)]).ok
    # ... but one such press cannot account for two ratings.
    ledger.new_case("W1", "C3")
    verdict = ledger.reconcile([platform_rating("b" * 32, "C2", 4, received_at=now),
                                platform_rating("c" * 32, "C3", 4, received_at=now)])
    assert [f.kind for f in verdict.findings] == ["phantom"]
