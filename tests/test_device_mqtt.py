"""The real daemon against a real mosquitto (SPEC §7): ratings on the wire, receipts,
resends, broker outages with and without persistence, the will, the backlog window."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from device import __version__
from device.outbox import Outbox
from tests.support.device import DEVICE_ID, DeviceProcess
from tests.support.mosquitto import Mosquitto
from tests.support.ratings import make_rating
from tests.test_device_mqtt_support import (
    PREFIX,
    MqttProxy,
    Watcher,
    backlog_becomes,
    device_factory,
    press_rating,
    rate_case,
    retained_status,
    sim_status,
    wait_until,
)

__all__ = ["device_factory"]  # the fixture, used by name

DeviceFactory = Callable[..., DeviceProcess]


def test_rating_published_resent_without_receipt_and_removed_by_receipt(
        mosquitto: Mosquitto, device_factory: DeviceFactory) -> None:
    watcher = Watcher(mosquitto)
    device = device_factory(mosquitto.port, mqtt={"resend_after_s": 1.0}).start()
    try:
        status = watcher.wait_for("status", lambda s: s["online"])
        assert status["version"] == __version__ and status["since"].endswith("Z")
        press_rating(device, level=4)
        first = watcher.wait_for("rating")
        assert first is not None, device.log()
        assert (first["schema"], first["device_id"], first["level"], first["trigger"]) == \
            ("hcp.rating/1", DEVICE_ID, 4, "spontaneous")
        rid = first["rating_id"]

        # No receipt: the same record comes again (resend_after_s = 1 s).
        mark = watcher.mark()
        again = watcher.wait_for("rating", lambda r: r["rating_id"] == rid, after=mark)
        assert again == first
        assert sim_status(device)["backlog"] == 1

        # The receipt makes the device forget it, and it is not sent any more.
        watcher.receipt([rid], "duplicate")
        assert backlog_becomes(device, 0, 5), device.log()
        time.sleep(0.3)   # a copy already on its way when the receipt came may still land
        mark = watcher.mark()
        assert watcher.wait_for("rating", after=mark, timeout=2.5) is None

        # A rejected rating also leaves the outbox, into the technician's rejected list.
        press_rating(device, level=1)
        bad = watcher.wait_for("rating", lambda r: r["rating_id"] != rid)
        watcher.receipt([bad["rating_id"]], "rejected", "level out of range")
        assert backlog_becomes(device, 0, 5)
        assert "platform rejected rating " + bad["rating_id"] in device.log()
    finally:
        watcher.close()
    device.kill()   # the outbox is fsync'ed: no need for a clean stop to read it
    outbox = Outbox(device.data_dir)
    outbox.open()
    try:
        assert outbox.pending() == []
        (rejected,) = outbox.rejected()
        assert rejected["rating"]["rating_id"] == bad["rating_id"]
        assert rejected["error"] == "level out of range"
    finally:
        outbox.close()


def test_malformed_and_foreign_receipts_remove_nothing(
        mosquitto: Mosquitto, device_factory: DeviceFactory) -> None:
    watcher = Watcher(mosquitto)
    device = device_factory(mosquitto.port, mqtt={"resend_after_s": 30}).start()
    try:
        kept, other = rate_case(device, "C-KEPT"), rate_case(device, "C-OTHER")
        assert watcher.wait_for("rating", lambda r: r["rating_id"] == other), device.log()
        for junk in (b"", b"not json", b"[]", b'{"receipts": 5}', b"[" * 100_000,
                     json.dumps({"receipts": [{"rating_id": "f" * 32, "status": "accepted"},
                                              {"rating_id": kept, "status": "lost"},
                                              {"rating_id": kept[:31], "status": "accepted"},
                                              "x"]}).encode()):
            watcher.publish("receipt", junk)
        # Receipts are handled in the order they arrive: once this one took effect, the
        # junk before it has been seen too, and it removed nothing.
        watcher.publish("receipt", json.dumps({"receipts": [{"rating_id": other,
                                                             "status": "accepted"}]}))
        assert backlog_becomes(device, 1, 5), device.log()
        assert device.proc is not None and device.proc.poll() is None
        assert "ignoring malformed receipt message" in device.log()
        watcher.receipt([kept])
        assert backlog_becomes(device, 0, 5)
    finally:
        watcher.close()


def test_broker_outages_lose_nothing_even_with_persistence_wiped(
        mosquitto: Mosquitto, device_factory: DeviceFactory) -> None:
    # resend_after_s is far longer than the test: whatever arrives after an outage was
    # published again because the device reconnected.
    proxy = MqttProxy(mosquitto, f"{PREFIX}/{DEVICE_ID}/rating")
    device = device_factory(proxy.port, mqtt={"resend_after_s": 600}).start()
    bridges = [Watcher(mosquitto, auto_receipt=True)]
    rated: list[str] = []
    try:
        assert bridges[0].wait_for("status", lambda s: s["online"]), device.log()
        rated.append(rate_case(device, "C-0"))
        assert backlog_becomes(device, 0, 10)

        # 1. The broker stops: ratings are still taken and stored, the screen says offline.
        mosquitto.stop()
        assert wait_until(lambda: sim_status(device)["broker"] == "offline", 10)
        for n in range(1, 4):
            rated.append(rate_case(device, f"C-{n}"))
        assert sim_status(device)["backlog"] == 3
        mosquitto.start()
        assert backlog_becomes(device, 0, 20), device.log()

        # 2. The bridge is away: the broker PUBACKs two ratings and queues them for the
        # bridge's session; then it comes back with its disk wiped. PUBACK was not
        # enough: the device still holds them and publishes them again on reconnect.
        bridges[0].close()
        for n in range(4, 6):
            rated.append(rate_case(device, f"C-{n}"))
        assert wait_until(lambda: proxy.rating_publishes >= 6, 10)
        assert sim_status(device)["backlog"] == 2
        proxy.refusing = True      # the device returns only once the new bridge listens
        mosquitto.restart(wipe_persistence=True)
        bridges.append(Watcher(mosquitto, auto_receipt=True))
        proxy.refusing = False
        assert backlog_becomes(device, 0, 20), device.log()
    finally:
        for bridge in bridges:
            bridge.close()
        proxy.close()
    arrived = {rid for bridge in bridges for rid in bridge.rating_ids()}
    assert set(rated) <= arrived
    assert set(rated[4:]) <= set(bridges[1].rating_ids())


def test_will_marks_a_killed_device_offline_and_restart_online(
        mosquitto: Mosquitto, device_factory: DeviceFactory) -> None:
    device = device_factory(mosquitto.port).start()
    assert wait_until(lambda: (retained_status(mosquitto) or {}).get("online"), 10), \
        device.log()
    device.kill()
    assert wait_until(lambda: retained_status(mosquitto) == {"online": False}, 10)
    device.start()
    status = wait_until(lambda: (s := retained_status(mosquitto)) and s.get("online") and s,
                        10)
    assert status is not None and status["version"] == __version__

    # A clean stop says offline too (with its version), and does not rely on the will.
    assert device.stop(timeout=20) == 0
    status = retained_status(mosquitto)
    assert status is not None and status["online"] is False and status["version"]


def test_backlog_drains_through_a_bounded_window_while_new_ratings_go_first(
        mosquitto: Mosquitto, device_factory: DeviceFactory) -> None:
    topic = f"{PREFIX}/{DEVICE_ID}/rating"
    proxy = MqttProxy(mosquitto, topic, puback_delay_s=0.02)
    device = device_factory(proxy.port, mqtt={"max_inflight": 5, "resend_after_s": 60})
    # 300 ratings pending before the daemon starts (a long outage).
    outbox = Outbox(device.data_dir)
    outbox.open()
    backlog = [make_rating(DEVICE_ID, seq=i + 1) for i in range(300)]
    for r in backlog:
        outbox.store(r)
    outbox.close()
    bridge = Watcher(mosquitto, auto_receipt=True)
    try:
        device.start()
        assert bridge.wait_for("rating", timeout=10), device.log()
        # Well before the backlog is through, a citizen rates: thanks comes at once
        # and the new rating overtakes what is still queued.
        wait_until(lambda: len(bridge.rating_ids()) >= 20, 10)
        press_rating(device, 3)
        seen_at_thanks = len(set(bridge.rating_ids()))
        assert seen_at_thanks < 300
        assert backlog_becomes(device, 0, 30), device.log()
        assert 2 <= proxy.max_inflight <= 5, proxy.max_inflight
        order = bridge.rating_ids()
        old_ids = [r["rating_id"] for r in backlog]
        (new_id,) = set(order) - set(old_ids)
        assert set(old_ids) <= set(order)
        assert order.index(new_id) < max(order.index(r) for r in old_ids)
        # The backlog left oldest first.
        first_seen = sorted(old_ids, key=order.index)
        assert first_seen == old_ids
    finally:
        bridge.close()
        proxy.close()


def test_mqtt_3_1_1_is_selectable(mosquitto: Mosquitto, device_factory: DeviceFactory
                                  ) -> None:
    bridge = Watcher(mosquitto, auto_receipt=True)
    device = device_factory(mosquitto.port, mqtt={"protocol": "3.1.1"}).start()
    try:
        assert bridge.wait_for("status", lambda s: s["online"]), device.log()
        rid = rate_case(device, "C-311")
        assert bridge.wait_for("rating", lambda r: r["rating_id"] == rid)
        assert backlog_becomes(device, 0, 10), device.log()
        # mosquitto logs v3.1.1 as "p2"; c0 = not a clean session
        assert f"as {DEVICE_ID} (p2, c0" in mosquitto.log_text()
    finally:
        bridge.close()
    device.kill()
    assert wait_until(lambda: retained_status(mosquitto) == {"online": False}, 10)


def test_a_hung_broker_is_noticed_by_keepalive_and_nothing_is_lost(
        mosquitto: Mosquitto, device_factory: DeviceFactory) -> None:
    bridge = Watcher(mosquitto, auto_receipt=True)
    device = device_factory(mosquitto.port, mqtt={"keepalive_s": 5}).start()
    try:
        assert bridge.wait_for("status", lambda s: s["online"]), device.log()
        mosquitto.pause()          # sockets stay open, nothing answers
        rid = rate_case(device, "C-HUNG")
        # Noticed within about twice the keepalive, without any help from the broker.
        assert wait_until(lambda: sim_status(device)["broker"] == "offline", 20), device.log()
        mosquitto.resume()
        assert backlog_becomes(device, 0, 30), device.log()
        assert rid in bridge.rating_ids()
    finally:
        bridge.close()
