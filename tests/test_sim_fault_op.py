"""The sim socket's `fail` op (drivers/sim.py): a display and indicators that fail on
demand in the real daemon, for the chaos run's display_fault and indicator_fault. Served
only with HCP_SIM_FAULT_OP=1 in the daemon's environment, like the `clock` op."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from device.core.model import Screen
from device.ports import DriverError, DriverStatus
from drivers.sim import SIM_FAULT_OP_ENV, SimServer
from drivers.sim_display import SimDisplay
from simulator.localbroker import Mosquitto
from simulator.simclient import SimClient
from simulator.windowlink import answer_to
from tests.support.device import DeviceProcess


def status_faults(sim: SimClient) -> dict[str, Any]:
    sim.request_status()
    ev = sim.wait_for(lambda e: e.get("ev") == "status", 5)
    assert ev is not None
    faults: dict[str, Any] = ev.get("faults", {})
    return faults


def fail_reply(sim: SimClient) -> dict[str, Any]:
    ev = sim.wait_for(lambda e: e.get("ev") in ("fail", "error"), 5)
    assert ev is not None
    return ev


def test_display_fails_on_demand_and_comes_back(tmp_path: Path, mosquitto: Mosquitto) -> None:
    device = DeviceProcess(tmp_path, mqtt_port=mosquitto.port, env={SIM_FAULT_OP_ENV: "1"})
    try:
        device.start()
        sim, window = device.sim, device.window
        assert sim is not None and window is not None
        assert sim.wait_screen("idle", 10)
        sim.send({"op": "fail", "part": "display", "error": "panel gone (test)"})
        assert fail_reply(sim) == {"ev": "fail", "part": "display", "error": "panel gone (test)"}
        sim.drain()
        # A case: the prompt is not drawn, yet the key is read and the rating stored.
        seq = window.send("case_completed", case_id="DARK-1", service_name="不动产登记")
        assert window.wait_for(answer_to(seq), 5) == {"type": "ack", "seq": seq}
        assert sim.wait_screen("prompt", 1.5) is None
        assert status_faults(sim).get("display") == "panel gone (test)"
        sim.press(5)
        rated = window.wait_for(lambda f: f.get("type") == "rated", 10)
        assert rated is not None and rated["case_id"] == "DARK-1", device.log()
        sim.send({"op": "fail", "part": "display", "error": None})
        assert fail_reply(sim)["error"] is None
        assert sim.wait_screen("idle", 15), device.log()   # re-shown by the daemon's retry
        assert "display" not in status_faults(sim)
    finally:
        device.close()


def test_fail_op_is_refused_unless_asked_for(tmp_path: Path) -> None:
    device = DeviceProcess(tmp_path)
    try:
        device.start()
        assert device.sim is not None
        device.sim.send({"op": "fail", "part": "display", "error": "x"})
        reply = fail_reply(device.sim)
        assert reply["ev"] == "error" and "unknown op" in reply["error"]
    finally:
        device.close()


def test_fail_op_names_what_is_wrong_with_a_bad_request(tmp_path: Path) -> None:
    server = SimServer(tmp_path / "sim.sock", fault_op=True)
    server.acquire()
    server.open()
    sim = SimClient(tmp_path / "sim.sock")
    try:
        for bad, expect in (({"part": "voice", "error": "x"}, "part must be one of"),
                            ({"part": "display", "error": ""}, "error must be null"),
                            ({"part": "display", "error": 5}, "error must be null"),
                            ({"part": "display", "error": "x" * 201}, "error must be null")):
            sim.send({"op": "fail", **bad})
            reply = fail_reply(sim)
            assert reply["ev"] == "error" and expect in reply["error"], bad
        assert server.failing == {}
    finally:
        sim.close()
        server.release()


def test_indicators_fault_is_reported_through_the_input_emit(tmp_path: Path) -> None:
    server = SimServer(tmp_path / "sim.sock", fault_op=True)
    seen: list[Any] = []

    class Clock:
        def monotonic(self) -> float:
            return 12.5

    server.acquire()
    server.attach_input(seen.append, Clock())
    server.open()
    display = SimDisplay(server, lambda screen: (bytes(1024), "text"))
    sim = SimClient(tmp_path / "sim.sock")
    try:
        sim.send({"op": "fail", "part": "indicators", "error": "LEDs dark"})
        assert fail_reply(sim)["part"] == "indicators"
        sim.send({"op": "fail", "part": "indicators", "error": None})
        assert fail_reply(sim)["error"] is None
        assert seen == [DriverStatus("indicators", "LEDs dark", 12.5),
                        DriverStatus("indicators", None, 12.5)]
        # The display is untouched by an indicators fault, and fails by itself on demand.
        display.show(Screen("idle"))
        server.failing["display"] = "gone"
        with pytest.raises(DriverError, match="gone"):
            display.show(Screen("idle"))
    finally:
        sim.close()
        display.close()
        server.release()


def test_fault_op_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SIM_FAULT_OP_ENV, raising=False)
    assert not SimServer(tmp_path / "a.sock").fault_op
    monkeypatch.setenv(SIM_FAULT_OP_ENV, "1")
    assert SimServer(tmp_path / "b.sock").fault_op
    assert not SimServer(tmp_path / "c.sock", fault_op=False).fault_op
