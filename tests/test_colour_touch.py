"""Touch on a colour screen (SPEC §10): the targets are the buttons the layout drew; raw
panel coordinates map to screen pixels through the kernel's axis ranges with swap and
mirroring from the config; a touch outside every button does nothing; the config keys
and their checks. The OLED's zones and the reader's robustness are tests/test_touch.py."""

from __future__ import annotations

import os
import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.configschema import ConfigError
from device.clock import FakeClock
from device.config import parse_device_config
from device.core.model import KeyDown, KeyUp
from drivers.targets import AxisRange, ScreenTargets, TouchCalibration
from drivers.touch import (
    ABS_MT_POSITION_X,
    ABS_MT_POSITION_Y,
    ABS_MT_SLOT,
    ABS_MT_TRACKING_ID,
    ABS_X,
    ABS_Y,
    BTN_TOUCH,
    EV_ABS,
    EV_KEY,
    EV_SYN,
    SYN_DROPPED,
    SYN_REPORT,
    TouchInput,
    TouchParser,
    pack_event,
)

SCREEN = (800, 480)
BOXES = {5: (24, 225, 162, 456), 4: (177, 225, 315, 456), 3: (330, 225, 468, 456),
         2: (483, 225, 621, 456), 1: (636, 225, 774, 456)}
RAW = (AxisRange(0, 4095), AxisRange(0, 4095))


def targets() -> ScreenTargets:
    t = ScreenTargets()
    t.set(SCREEN, BOXES)
    return t


def raw(x: int, y: int, w: int = 800, h: int = 480) -> tuple[int, int]:
    """Screen pixels as a 0..4095 panel reports them (the pixel's centre)."""
    return round((x + 0.5) / w * 4095), round((y + 0.5) / h * 4095)


def tap(x: int, y: int) -> bytes:
    return (pack_event(EV_KEY, BTN_TOUCH, 1) + pack_event(EV_ABS, ABS_X, x)
            + pack_event(EV_ABS, ABS_Y, y) + pack_event(EV_SYN, SYN_REPORT, 0)
            + pack_event(EV_KEY, BTN_TOUCH, 0) + pack_event(EV_SYN, SYN_REPORT, 0))


def centre(level: int) -> tuple[int, int]:
    x0, y0, x1, y1 = BOXES[level]
    return (x0 + x1) // 2, (y0 + y1) // 2


def locator(t: ScreenTargets, calibration: TouchCalibration | None = None) -> Any:
    calibration = calibration or TouchCalibration()
    return lambda x, y: t.hit_raw(x, y, RAW[0], RAW[1], calibration)


def test_a_tap_at_each_buttons_centre_presses_its_level() -> None:
    parser = TouchParser(locator(targets()))
    for level in BOXES:
        assert [tuple(a) for a in parser.feed(tap(*raw(*centre(level))))] == [
            ("down", level), ("up", level)]


def test_a_tap_outside_every_button_does_nothing() -> None:
    parser = TouchParser(locator(targets()))
    for point in ((5, 5), (799, 479), (170, 300), (100, 220)):
        assert parser.feed(tap(*raw(*point))) == []


def test_nothing_is_hit_before_a_screen_was_drawn() -> None:
    parser = TouchParser(locator(ScreenTargets()))
    assert parser.feed(tap(2000, 2000)) == []


def test_new_targets_apply_to_the_next_touch() -> None:
    t = targets()
    parser = TouchParser(locator(t))
    t.set(SCREEN, {7: (0, 0, 800, 480)})
    assert [tuple(a) for a in parser.feed(tap(100, 100))] == [("down", 7), ("up", 7)]
    t.set(SCREEN, {})
    assert parser.feed(tap(100, 100)) == []


@given(st.integers(-10_000, 10_000), st.integers(-10_000, 10_000),
       st.booleans(), st.booleans(), st.booleans())
def test_any_raw_point_maps_onto_the_screen(x: int, y: int, swap: bool, inv_x: bool,
                                            inv_y: bool) -> None:
    sx, sy = targets().to_screen(x, y, RAW[0], RAW[1], TouchCalibration(swap, inv_x, inv_y))
    assert 0 <= sx < 800 and 0 <= sy < 480


@pytest.mark.parametrize(("calibration", "panel_point"), [
    # (swap, invert_x, invert_y): where a panel mounted that way reports the screen's
    # point (600, 300) of an 800×480 picture, in fractions of its axes.
    (TouchCalibration(), (600 / 800, 300 / 480)),
    (TouchCalibration(invert_x=True), (1 - 600 / 800, 300 / 480)),
    (TouchCalibration(invert_y=True), (600 / 800, 1 - 300 / 480)),
    (TouchCalibration(swap_xy=True), (300 / 480, 600 / 800)),
    (TouchCalibration(True, True, False), (300 / 480, 1 - 600 / 800)),
])
def test_swap_and_mirroring_bring_the_panel_onto_the_picture(
        calibration: TouchCalibration, panel_point: tuple[float, float]) -> None:
    t = ScreenTargets()
    t.set(SCREEN, {})
    rx, ry = (round(f * 4095) for f in panel_point)
    x, y = t.to_screen(rx, ry, RAW[0], RAW[1], calibration)
    assert abs(x - 600) <= 1 and abs(y - 300) <= 1


def test_axis_ranges_with_an_offset_and_a_different_scale() -> None:
    # A resistive panel: x 200..3900, y 300..3800, as the kernel reports them.
    x_axis, y_axis = AxisRange(200, 3900), AxisRange(300, 3800)
    t = targets()
    cx, cy = centre(3)
    rx = round(200 + cx / 800 * 3700)
    ry = round(300 + cy / 480 * 3500)
    assert t.hit_raw(rx, ry, x_axis, y_axis, TouchCalibration()) == 3


def test_multitouch_and_dropped_events_on_a_colour_screen() -> None:
    parser = TouchParser(locator(targets()))
    x, y = raw(*centre(2))
    down = (pack_event(EV_ABS, ABS_MT_SLOT, 0) + pack_event(EV_ABS, ABS_MT_TRACKING_ID, 9)
            + pack_event(EV_ABS, ABS_MT_POSITION_X, x) + pack_event(EV_ABS, ABS_MT_POSITION_Y, y)
            + pack_event(EV_SYN, SYN_REPORT, 0))
    up = pack_event(EV_ABS, ABS_MT_TRACKING_ID, -1) + pack_event(EV_SYN, SYN_REPORT, 0)
    # A second finger in another slot while the first is down presses nothing more.
    second = (pack_event(EV_ABS, ABS_MT_SLOT, 1) + pack_event(EV_ABS, ABS_MT_TRACKING_ID, 10)
              + pack_event(EV_ABS, ABS_MT_POSITION_X, raw(*centre(5))[0])
              + pack_event(EV_SYN, SYN_REPORT, 0))
    assert [tuple(a) for a in parser.feed(down + second)] == [("down", 2)]
    dropped = (pack_event(EV_SYN, SYN_DROPPED, 0) + pack_event(EV_ABS, ABS_MT_SLOT, 0)
               + pack_event(EV_ABS, ABS_MT_TRACKING_ID, -1) + pack_event(EV_SYN, SYN_REPORT, 0))
    assert parser.feed(dropped) == []   # the packet after SYN_DROPPED is not applied
    release_both = (pack_event(EV_ABS, ABS_MT_SLOT, 0) + up
                    + pack_event(EV_ABS, ABS_MT_SLOT, 1) + up)
    assert [tuple(a) for a in parser.feed(release_both)] == [("up", 2)]


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    yield r, w
    for fd in (r, w):
        try:
            os.close(fd)
        except OSError:
            pass


def test_the_reader_presses_the_button_under_the_finger(pipe: tuple[int, int]) -> None:
    r, w = pipe
    events: queue.Queue[Any] = queue.Queue()
    touch = TouchInput(r, {}, targets=targets(), axes=RAW,
                       calibration=TouchCalibration(invert_x=True))
    touch.start(events.put, FakeClock())
    try:
        x, y = raw(*centre(5))
        os.write(w, tap(4095 - x, y))   # the panel's x runs right to left
        assert events.get(timeout=3) == KeyDown(5, 1000.0, input="touch")
        assert events.get(timeout=3) == KeyUp(5, 1000.0)
        os.write(w, tap(10, 10))        # outside every button
        x, y = raw(*centre(1))
        os.write(w, tap(4095 - x, y))
        assert events.get(timeout=3) == KeyDown(1, 1000.0, input="touch")
    finally:
        touch.close()


def test_a_panel_without_axis_ranges_ignores_touches(pipe: tuple[int, int],
                                                     caplog: pytest.LogCaptureFixture) -> None:
    r, w = pipe
    events: queue.Queue[Any] = queue.Queue()
    touch = TouchInput(r, {}, targets=targets())   # a pipe answers no EVIOCGABS
    touch.start(events.put, FakeClock())
    try:
        os.write(w, tap(*raw(*centre(3))))
        os.close(w)
        with pytest.raises(queue.Empty):
            events.get(timeout=0.3)
    finally:
        touch.close()
    assert "reports no axis ranges" in caplog.text


# --- config --------------------------------------------------------------------------

def _conf(**sections: dict[str, Any]) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "device": {"id": "D1", "region_code": "421100", "hall_id": "HG01", "window_id": "W03",
                   "window_name": "03号窗口", "data_dir": "/var/lib/hcp-device"},
        "serial": {"port": ""}, "input": {"kind": "sim"}, "display": {"kind": "sim"}}
    for name, keys in sections.items():
        conf.setdefault(name, {}).update(keys)
    return conf


def _problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_device_config(Path("/etc/hcp/device.toml"), data)
    return e.value.problems


def test_a_framebuffer_with_touch_needs_no_zones() -> None:
    config = parse_device_config(Path("/x.toml"), _conf(
        display={"kind": "framebuffer", "fb_device": "/dev/fb1", "rotate": 90,
                 "staff_photos_dir": "/var/lib/hcp-device/staff"},
        input={"kind": "touch", "touch_device": "/dev/input/event3", "touch_swap_xy": True,
               "touch_invert_x": True}))
    d, i = config.display, config.input
    assert (d.kind, d.fb_device, d.rotate, d.staff_photos_dir, d.colour) == (
        "framebuffer", "/dev/fb1", 1, "/var/lib/hcp-device/staff", True)
    assert (i.touch_swap_xy, i.touch_invert_x, i.touch_invert_y) == (True, True, False)


@pytest.mark.parametrize("size", ["480x320", "800x480", "1024x600", "480x800"])
def test_a_sim_display_takes_a_colour_size(size: str) -> None:
    config = parse_device_config(Path("/x.toml"), _conf(display={"kind": "sim", "size": size}))
    assert config.display.size == size and config.display.colour
    mono = parse_device_config(Path("/x.toml"), _conf())
    assert mono.display.size == "128x64" and not mono.display.colour


@pytest.mark.parametrize(("display", "inp", "expected"), [
    ({"kind": "sim", "size": "640x480"}, {}, "[display] size"),
    ({"kind": "framebuffer", "size": "800x480"}, {}, "[display] size: only for kind = \"sim\""),
    ({"kind": "framebuffer", "rotate": 45}, {}, "[display] rotate: must be 0, 90, 180 or 270"),
    ({"kind": "framebuffer", "fb_device": "fb0"}, {}, "[display] fb_device"),
    ({"kind": "framebuffer", "staff_photos_dir": "staff"}, {}, "[display] staff_photos_dir"),
    ({"kind": "framebuffer"}, {"kind": "touch", "zones": {"5": [0, 0, 10, 10]}},
     "[input] zones: not used with a colour display"),
    ({"kind": "ssd1306"}, {"kind": "touch"}, "[input] zones: required"),
])
def test_bad_colour_settings_name_the_key(display: dict[str, Any], inp: dict[str, Any],
                                          expected: str) -> None:
    problems = _problems(_conf(display=display, input=inp or {"kind": "sim"}))
    assert any(expected in p for p in problems), problems


def test_quarter_turns_still_mean_what_they_meant_for_the_oled() -> None:
    for given_, turns in ((0, 0), (2, 2), (180, 2), (270, 3)):
        config = parse_device_config(Path("/x.toml"), _conf(display={"kind": "ssd1306",
                                                                      "rotate": given_}))
        assert config.display.rotate == turns


@pytest.mark.parametrize("turns", [0, 1, 2, 3])
def test_the_documented_settings_for_each_rotation_hit_the_pixel_under_the_finger(
        turns: int) -> None:
    from PIL import Image

    from drivers.framebuffer import _TURN
    from drivers.targets import calibration_for_rotation
    panel = (800, 480)
    logical = (480, 800) if turns in (1, 3) else panel
    t = ScreenTargets()
    t.set(logical, {})
    for lx, ly in ((10, 20), (logical[0] - 30, 40), (200, logical[1] - 7)):
        marker = Image.new("L", logical, 0)
        marker.putpixel((lx, ly), 255)
        on_panel = marker.transpose(_TURN[turns]) if turns else marker
        box = on_panel.getbbox()
        assert box is not None
        px, py = box[0], box[1]                 # where the panel shows that pixel
        # The touch layer reports the panel's own pixels (0..799, 0..479).
        x, y = t.to_screen(px, py, AxisRange(0, panel[0] - 1), AxisRange(0, panel[1] - 1),
                           calibration_for_rotation(turns))
        assert abs(x - lx) <= 1 and abs(y - ly) <= 1, (turns, (lx, ly), (x, y))
