"""Property test of the whole daemon, in-process and in virtual time: random windows,
presses and waits while the display, LEDs, serial writes, the serial link, the keys and
the broker fail and come back at random. Whatever happens, the daemon keeps running, a
case is stored at most once, and once the parts work again every stored rating has been
told to the window system (`rated`) and published to the broker (issue 17: "every fault
survived")."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device.ports import DriverStatus
from tests.support.inprocess import Device

CASES = [f"C{i}" for i in range(6)]

step_st = st.one_of(
    st.tuples(st.just("case"), st.sampled_from(CASES)),
    st.tuples(st.just("press"), st.integers(1, 5)),
    st.tuples(st.just("wait"), st.sampled_from([0.05, 0.3, 1.0, 2.5, 6.0, 31.0])),
    st.tuples(st.just("display"), st.booleans()),
    st.tuples(st.just("indicators"), st.booleans()),
    st.tuples(st.just("writes"), st.booleans()),
    st.tuples(st.just("plug"), st.booleans()),
    st.tuples(st.just("keys"), st.booleans()),
    st.tuples(st.just("broker"), st.booleans()),
    st.tuples(st.just("receipts"), st.none()),
)


def play(device: Device, step: tuple[str, Any]) -> None:
    kind, arg = step
    if kind == "case":
        device.serial.send_frame("case_completed", case_id=arg)
    elif kind == "press":
        device.keys.press(arg)
    elif kind == "wait":
        device.run(arg)
        return
    elif kind == "display":
        device.display.fail = "panel gone" if arg else None
    elif kind == "indicators":
        device.indicators.fail = "pin gone" if arg else None
    elif kind == "writes":
        device.serial.fail = "write timeout" if arg else None
    elif kind == "plug":
        if arg != device.serial.is_open:
            device.serial.plug(arg)
    elif kind == "keys":
        assert device.keys.emit is not None
        device.keys.emit(DriverStatus("keys", "touch lost" if arg else None,
                                      device.clock.now))
    elif kind == "broker":
        if arg != device.daemon.uplink.connected():
            if arg:
                device.broker_up()
            else:
                device.broker_down()
    elif kind == "receipts":
        if device.daemon.uplink.connected():
            ids = {p["rating_id"] for p in device.link.of("rating")}
            device.message("receipt", {"receipts": [{"rating_id": rid, "status": "accepted"}
                                                    for rid in sorted(ids)]})
    device.run(0)


def settle(device: Device) -> None:
    """Every part works again; time passes until nothing is pending."""
    device.display.fail = device.indicators.fail = device.serial.fail = None
    assert device.keys.emit is not None
    device.keys.emit(DriverStatus("keys", None, device.clock.now))
    if not device.serial.is_open:
        device.serial.plug(True)
    if not device.daemon.uplink.connected():
        device.broker_up()
    device.serial.send_frame("ping")     # an answer that works flushes held outcomes
    device.puback()
    device.run(200)                      # every prompt, reasons and thanks runs out
    # One more citizen: the LEDs are tried again only when there is feedback to give.
    device.serial.send_frame("case_completed", case_id="C-LAST")
    device.run(0.1)
    device.keys.press(5)
    device.run(10)
    device.puback()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(step_st, max_size=40))
def test_broken_parts_never_stop_the_daemon_or_lose_a_rating(
        steps: list[tuple[str, Any]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        device = Device(Path(tmp))
        stored: list[dict[str, Any]] = []
        device.daemon.on_stored = stored.append
        device.start()
        for step in steps:
            play(device, step)
        settle(device)

        cases = [r["case"]["case_id"] for r in stored if r.get("case")]
        assert "C-LAST" in cases
        assert len(cases) == len(set(cases)), f"a case stored twice: {cases}"
        told = {f["case_id"] for f in device.serial.frames("rated")}
        assert set(cases) <= told, f"stored but never told: {set(cases) - told}"
        published = {p["rating_id"] for p in device.link.of("rating")}
        assert {r["rating_id"] for r in stored} <= published
        assert device.daemon.status()["faults"] == {}
        assert device.display.current == "idle"
        assert device.daemon.core is not None and device.daemon.core.pending_cases == 0
        stats = device.daemon.stats
        assert stats.backlog + stats.receipts == len(stored)
        device.stop()
        assert len(device.pending()) == stats.backlog
