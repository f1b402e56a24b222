"""Who is logged in at the window, published by the device (docs/spec-proposals.md P4):
the retained status carries `staff` (the clerk, or null), re-published at every
staff_login and staff_logout, and the events `staff_login` / `staff_logout` say when the
clerk changed. In-process in virtual time, the paho link against a real mosquitto, and
the real daemon against a real mosquitto."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from device import __version__
from device.mqtt_link import MqttLink, MqttUp
from tests.support.device import DeviceProcess
from tests.support.inprocess import Device
from tests.support.mosquitto import Mosquitto
from tests.test_device_mqtt_link import CFG
from tests.test_device_mqtt_support import (
    Watcher,
    device_factory,
    retained_status,
    wait_until,
)

__all__ = ["device_factory"]  # the fixture, used by name

DeviceFactory = Callable[..., DeviceProcess]
CLERK = {"staff_id": "S0042", "staff_name": "王晓红"}


def test_the_daemon_hands_the_clerk_to_the_link_and_says_when_it_changed(
        tmp_path: Path) -> None:
    device = Device(tmp_path).start()
    link = device.link
    # Before the first connect the status already says: nobody logged in.
    assert link.statuses == [{"staff": None}]
    device.broker_up()
    device.serial.send_frame("staff_login", **CLERK)
    device.run(0)
    assert link.statuses[-1] == {"staff": CLERK}
    assert [{k: e[k] for k in CLERK} for e in link.events("staff_login")] == [CLERK]
    # The same clerk again (a window system re-sends after its own restart): no news.
    device.serial.send_frame("staff_login", **CLERK)
    device.serial.send_frame("ping")
    device.run(0)
    assert len(link.statuses) == 2 and len(link.events("staff_login")) == 1
    # Another clerk takes over without a logout: one login, the status follows.
    device.serial.send_frame("staff_login", staff_id="S0007", staff_name="")
    device.run(0)
    assert link.statuses[-1] == {"staff": {"staff_id": "S0007", "staff_name": ""}}
    device.serial.send_frame("staff_logout")
    device.run(0)
    assert link.statuses[-1] == {"staff": None}
    (left,) = link.events("staff_logout")
    assert (left["staff_id"], left["staff_name"]) == ("S0007", "")   # who left
    device.serial.send_frame("staff_logout")     # nobody there: nothing to say
    device.run(0)
    assert len(link.statuses) == 4 and len(link.events("staff_logout")) == 1
    device.stop()


def test_the_link_publishes_its_status_fields_retained_and_null_when_it_leaves(
        mosquitto: Mosquitto) -> None:
    events: queue.Queue[Any] = queue.Queue()
    device_id = "421100-HG01-W08"
    link = MqttLink(replace(CFG, port=mosquitto.port), device_id, "9.9", events.put,
                    time.monotonic)
    link.status_fields({"staff": None})
    link.start()
    try:
        assert isinstance(events.get(timeout=5), MqttUp)
        first = wait_until(lambda: retained_status(mosquitto, device_id), 5)
        assert first == {"online": True, "version": "9.9", "since": first["since"],
                         "staff": None}
        link.status_fields({"staff": CLERK})
        # A newcomer (a dashboard started later) sees the clerk; `since` is still the
        # connection's.
        now = wait_until(lambda: (s := retained_status(mosquitto, device_id))
                         and s.get("staff") and s, 5)
        assert now == {**first, "staff": CLERK}
    finally:
        link.stop()
    gone = retained_status(mosquitto, device_id)
    assert gone is not None and gone["online"] is False and gone["staff"] is None


def test_staff_login_and_logout_reach_the_retained_status_of_a_running_device(
        mosquitto: Mosquitto, device_factory: DeviceFactory) -> None:
    watcher = Watcher(mosquitto)
    device = device_factory(mosquitto.port).start()
    try:
        status = watcher.wait_for("status", lambda s: s["online"])
        assert status is not None, device.log()
        assert status["staff"] is None and status["version"] == __version__
        assert device.window is not None
        device.window.send("staff_login", **CLERK)
        event = watcher.wait_event("staff_login")
        assert event is not None and {k: event[k] for k in CLERK} == CLERK, device.log()
        assert wait_until(lambda: (retained_status(mosquitto) or {}).get("staff") == CLERK,
                          10), device.log()
        device.window.send("staff_logout")
        assert watcher.wait_event("staff_logout") is not None, device.log()
        assert wait_until(lambda: (s := retained_status(mosquitto)) is not None
                          and s["online"] and s["staff"] is None, 10), device.log()
        device.window.send("staff_login", **CLERK)
        assert wait_until(lambda: (retained_status(mosquitto) or {}).get("staff") == CLERK,
                          10), device.log()
    finally:
        watcher.close()
    # Killed: the will says only offline (no clerk). Started again, the clerk is not
    # remembered: nobody is logged in until the window system says so again.
    device.kill()
    assert wait_until(lambda: retained_status(mosquitto) == {"online": False}, 10)
    device.start()
    assert wait_until(lambda: (s := retained_status(mosquitto)) is not None
                      and s["online"] and s["staff"] is None, 10), device.log()
