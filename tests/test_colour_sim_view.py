"""Colour screens for the technician (SPEC §10): `hcp-sim device --size 800x480` in a
terminal (true-colour half blocks, scaled), and the web view of the live screen where a
click is a touch, in a real headless Chromium, the rating reaching the platform."""

from __future__ import annotations

import base64
import io
import json
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from simulator.colour_view import cells_for, colour_blocks, frame_image
from simulator.web_view import WebView, frame_png
from tests.support import browser
from tests.support.bridge import BridgeProcess
from tests.support.device import ROOT, DeviceProcess
from tests.support.mosquitto import Mosquitto
from tests.test_city_dashboard import PlatformProcess
from tests.test_sim_terminal import Pty

browser_page = browser.browser_page
BAND = (18, 70, 128)   # the colour layout's window band


def test_cells_keep_the_pictures_shape() -> None:
    assert cells_for((800, 480), 138, 60) == (138, 41)
    cols, rows = cells_for((800, 480), 138, 30)
    assert rows == 30 and cols == 100
    cols, rows = cells_for((800, 480), 78, 17)
    assert cols <= 78 and rows <= 17 and abs(cols / (2 * rows) - 800 / 480) < 0.15
    cols, rows = cells_for((480, 800), 200, 30)
    assert rows == 30 and abs(cols / (2 * rows) - 480 / 800) < 0.1


def test_colour_blocks_draw_top_and_bottom_halves_in_true_colour() -> None:
    image = Image.new("RGB", (4, 4), (255, 0, 0))
    for x in range(4):
        image.putpixel((x, 1), (0, 0, 255))
    lines = colour_blocks(image, 4, 2)
    assert len(lines) == 2 and all(line.endswith("\x1b[0m") for line in lines)
    assert lines[0].count("▀") == 4
    assert lines[0].startswith("\x1b[38;2;255;0;0m\x1b[48;2;0;0;255m")


def test_frame_image_reads_only_png_events() -> None:
    out = io.BytesIO()
    Image.new("RGB", (3, 2), BAND).save(out, format="PNG")
    event = {"format": "png", "frame": base64.b64encode(out.getvalue()).decode()}
    picture = frame_image(event)
    assert picture is not None and picture.getpixel((0, 0)) == BAND
    assert frame_image({"format": "mono1", "frame": "AAAA"}) is None
    assert frame_image({"format": "png", "frame": "not base64!"}) is None
    # The web view serves an OLED frame as a PNG too.
    mono = {"format": "mono1", "frame": base64.b64encode(b"\xff" * 1024).decode()}
    assert Image.open(io.BytesIO(frame_png(mono))).size == (128, 64)


def test_device_simulator_shows_a_colour_screen_in_a_terminal(tmp_path: Path) -> None:
    t = Pty([sys.executable, "-m", "simulator.cli", "device", "--data-dir", str(tmp_path),
             "--broker", "127.0.0.1:9", "--size", "800x480"], ROOT, cols=140, rows=50)
    try:
        t.expect_display(r"^screen: idle")
        band = "38;2;{};{};{}".format(*BAND).encode()
        assert band in t.seen, "the window band is drawn in its own colour"
        t.send("c")
        t.expect_display(r"^screen: prompt .*非常满意")
        assert b"38;2;22;120;60" in t.seen, "the 非常满意 button's green"
        t.send("4")
        t.expect_display(r"← rated \d+ 4 满意")
        lines = t.display().splitlines()
        # Nothing wraps: the box is closed on every row of the picture.
        box = [line for line in lines if line.startswith("│")]
        assert box and all(line.endswith("│") for line in box)
        t.send("q")
        assert t.wait() == 0
    finally:
        t.close()


@pytest.fixture
def chain(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[tuple[PlatformProcess,
                                                                   DeviceProcess]]:
    platform = PlatformProcess(tmp_path / "platform", mosquitto)
    bridge = BridgeProcess(tmp_path / "bridge", mosquitto,
                           f"{platform.base_url}/api/ratings").start()
    # thanks_s 20: under a loaded run the page may poll long after the click; with the
    # default 3 s the thanks screen could come and go unseen.
    device = DeviceProcess(tmp_path / "device", mqtt_port=mosquitto.port, sections={
        "display": {"kind": "sim", "size": "800x480"}, "ui": {"thanks_s": 20}}).start()
    try:
        yield platform, device
    finally:
        device.close()
        bridge.terminate()
        assert platform.stop() == 0, platform.log.read_text()[-2000:]


def _total(platform: PlatformProcess) -> int:
    with urllib.request.urlopen(platform.base_url + "/api/counts", timeout=2) as r:
        return int(json.load(r)["total"])


def test_a_click_on_a_level_in_the_web_view_reaches_the_platform(
        chain: tuple[PlatformProcess, DeviceProcess], browser_page: Any) -> None:
    platform, device = chain
    sim, window = device.sim, device.window
    assert sim is not None and window is not None
    web = WebView(lambda: sim)
    sim.listeners.append(web.on_event)
    if sim.screen is not None:
        web.on_event(sim.screen)
    page = browser_page
    try:
        page.goto(web.start())
        assert "实时屏幕" in page.title()
        page.wait_for_function('() => document.body.dataset.screen === "idle"', timeout=10000)
        window.send("case_completed", case_id="C-WEB-1", service_name="不动产转移登记")
        page.wait_for_function('() => document.body.dataset.screen === "prompt"',
                               timeout=10000)
        state = web.state()
        box = next(o["box"] for o in state["options"] if o["level"] == 4)
        # Where the 满意 button's centre is on the page: the picture is scaled to fit.
        geometry = page.evaluate("""() => { const i = document.getElementById("screen");
            const r = i.getBoundingClientRect();
            return [r.left + i.clientLeft, r.top + i.clientTop, i.clientWidth,
                    i.clientHeight, i.naturalWidth, i.naturalHeight]; }""")
        left, top, cw, ch, nw, nh = geometry
        assert (nw, nh) == (800, 480)
        x = left + (box[0] + box[2]) / 2 * cw / nw
        y = top + (box[1] + box[3]) / 2 * ch / nh
        # Every screen the page shows from now on, however briefly.
        page.evaluate("""() => { window.seen = [document.body.dataset.screen];
            new MutationObserver(() => window.seen.push(document.body.dataset.screen))
              .observe(document.body, {attributes: true, attributeFilter: ["data-screen"]});
        }""")
        page.mouse.click(x, y)
        rated = window.wait_for(lambda f: f.get("type") == "rated", 10)
        assert rated is not None and rated["case_id"] == "C-WEB-1" and rated["level"] == 4
        page.wait_for_function('() => window.seen.includes("thanks")', timeout=20000)
        deadline = time.monotonic() + 20
        while _total(platform) < 1:
            assert time.monotonic() < deadline, "the platform never received the rating"
            time.sleep(0.1)
        assert _total(platform) == 1
    finally:
        web.close()


def test_a_colour_panels_config_is_simulated_in_colour(tmp_path: Path) -> None:
    from simulator.device_sim import build_config, parse_args
    config = tmp_path / "device.toml"
    config.write_text('[device]\nid = "D1"\nwindow_name = "03号窗口"\n'
                      '[display]\nkind = "framebuffer"\nfb_device = "/dev/fb0"\nrotate = 90\n'
                      'staff_photos_dir = "/srv/staff"\n', encoding="utf-8")
    conf = build_config(parse_args(["--config", str(config)]), tmp_path, "loop://")
    assert conf["display"] == {"kind": "sim", "size": "800x480",
                               "staff_photos_dir": "/srv/staff"}
    conf = build_config(parse_args(["--config", str(config), "--size", "480x320"]), tmp_path,
                        "loop://")
    assert conf["display"]["size"] == "480x320"
    conf = build_config(parse_args([]), tmp_path, "loop://")
    assert conf["display"] == {"kind": "sim"}
