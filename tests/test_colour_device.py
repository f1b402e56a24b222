"""A colour sim device (SPEC §10) through the real daemon subprocess: 800×480 screen
events carry a PNG, the buttons' boxes and the QR URL, and touches at the boxes' centres
drive a whole rating, reasons included; a touch outside every button does nothing."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zxingcpp
from PIL import Image

from simulator.simclient import SimClient
from tests.support.device import DeviceProcess

QR = "https://pj.example.gov.cn/h5?projectNo={case_id}&deviceCode={device_id}"


@pytest.fixture
def device(tmp_path: Path) -> Iterator[DeviceProcess]:
    d = DeviceProcess(tmp_path, sections={
        "display": {"kind": "sim", "size": "800x480"},
        "input": {"kind": "sim"},
        "ui": {"thanks_s": 0.3, "lockout_s": 0.0, "qr_url": QR,
               "allow_spontaneous": False},
    })
    try:
        yield d.start()
    finally:
        d.close()


def screen(sim: SimClient, name: str) -> dict[str, Any]:
    event = sim.wait_screen(name, timeout=10)
    assert event is not None, f"no {name} screen"
    return event


def centre(option: dict[str, Any]) -> tuple[int, int]:
    x0, y0, x1, y1 = option["box"]
    return (x0 + x1) // 2, (y0 + y1) // 2


def png(event: dict[str, Any]) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(event["frame"])))
    assert image.format == "PNG" and image.size == (event["width"], event["height"])
    return image.convert("RGB")


def test_a_colour_device_is_driven_entirely_by_touches_at_the_boxes(
        device: DeviceProcess) -> None:
    sim, window = device.sim, device.window
    assert sim is not None and window is not None
    idle = screen(sim, "idle")
    assert (idle["format"], idle["width"], idle["height"]) == ("png", 800, 480)
    assert idle["qr"] is None  # the template names a case: no code on idle
    assert idle["options"] == []

    window.send("case_completed", case_id="C 1", service_name="不动产转移登记")
    prompt = screen(sim, "prompt")
    url = ("https://pj.example.gov.cn/h5?projectNo=C%201&deviceCode=421100-HG01-W03")
    assert prompt["qr"] == url
    assert [r.text for r in zxingcpp.read_barcodes(png(prompt))] == [url]
    boxes = {o["level"]: o for o in prompt["options"]}
    assert sorted(boxes) == [1, 2, 3, 4, 5]
    for o in prompt["options"]:
        x0, y0, x1, y1 = o["box"]
        assert 0 <= x0 < x1 <= 800 and 0 <= y0 < y1 <= 480 and min(x1 - x0, y1 - y0) >= 62

    # Outside every button (the band at the top): nothing happens.
    seen: list[dict[str, Any]] = []
    sim.touch(5, 5)
    sim.touch(799, 479)
    sim.request_status()  # answered after both touches were handled

    def status(event: dict[str, Any]) -> bool:
        seen.append(event)
        return event.get("ev") == "status"
    assert sim.wait_for(status) is not None
    assert all(e["screen"] == "prompt" for e in seen if e.get("ev") == "screen")

    sim.touch(*centre(boxes[2]))                       # 不满意 -> reasons
    reasons = screen(sim, "reasons")
    assert reasons["case_id"] == "C 1" and reasons["qr"] is None
    picks = {o["code"]: o for o in reasons["options"]}
    assert set(picks) == {"R01", "R02", "R03", "R04", None}
    sim.touch(*centre(picks["R02"]))                   # 服务效率
    screen(sim, "thanks")
    rated = window.wait_for(lambda f: f.get("type") == "rated", 5)
    assert rated is not None and rated["case_id"] == "C 1" and rated["level"] == 2

    window.send("case_completed", case_id="C2", eval_url="https://h5.example.gov.cn/r?t=9")
    prompt = screen(sim, "prompt")
    assert prompt["qr"] == "https://h5.example.gov.cn/r?t=9"
    sim.touch(*centre({o["level"]: o for o in prompt["options"]}[5]))
    screen(sim, "thanks")
    rated = window.wait_for(lambda f: f.get("type") == "rated" and f.get("case_id") == "C2", 5)
    assert rated is not None and rated["level"] == 5
    assert "Traceback" not in device.log()


def test_idle_inviting_a_rating_offers_the_levels_as_buttons(tmp_path: Path) -> None:
    d = DeviceProcess(tmp_path, sections={
        "display": {"kind": "sim", "size": "1024x600"},
        "ui": {"thanks_s": 0.3, "lockout_s": 0.0, "allow_spontaneous": True,
               "spontaneous_min_interval_s": 0,
               "qr_url": "https://pj.example.gov.cn/h5?w={window_id}"},
    })
    try:
        d.start()
        sim = d.sim
        assert sim is not None
        idle = screen(sim, "idle")
        assert idle["qr"] == "https://pj.example.gov.cn/h5?w=W03"
        assert [r.text for r in zxingcpp.read_barcodes(png(idle))] == [idle["qr"]]
        levels = {o["level"]: o for o in idle["options"]}
        assert sorted(levels) == [1, 2, 3, 4, 5] and levels[3]["label"] == "基本满意"
        sim.touch(*centre(levels[3]))
        thanks = screen(sim, "thanks")
        assert "基本满意" in thanks["text"]
        sim.request_status()
        status = sim.wait_for(lambda e: e.get("ev") == "status")
        assert status is not None and status["backlog"] == 1   # stored, waiting to be sent
    finally:
        d.close()
