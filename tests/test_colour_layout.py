"""Colour screens (SPEC §10): goldens at every panel size, touch targets, the QR code a
phone reads off the frame, the clerk's photo, and text that never breaks a frame."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import pytest
import zxingcpp
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageChops, ImageFont

from device.core import screens
from device.core.model import Option, Screen, Staff
from drivers import colour_fonts
from drivers.colour_photos import PhotoDir
from drivers.layout_colour import layout, min_button
from tests.golden import colour as golden
from tests.golden.cases import DEFAULT_REASON_OPTIONS, QR_CASE, QR_WINDOW, WINDOW

ALL = [(name, size) for size in golden.SIZES for name in golden.CASES]


@pytest.fixture(scope="module")
def fonts() -> colour_fonts.ColourFonts:
    problem = golden.font_problem()
    if problem:
        pytest.fail(problem)
    return golden.FONTS


@pytest.mark.parametrize(("name", "size"), ALL, ids=[f"{golden.SIZES[s]}_{n}" for n, s in ALL])
def test_colour_screens_match_their_goldens(fonts: colour_fonts.ColourFonts, name: str,
                                            size: tuple[int, int], tmp_path: Path) -> None:
    image = layout(golden.CASES[name], size, fonts, golden.photos).image
    path = golden.golden_path(name, size)
    expected = Image.open(path).convert("RGB")
    diff = ImageChops.difference(image, expected).getbbox()
    if diff is not None:
        image.save(tmp_path / path.name)
    assert diff is None, (f"{path.name} differs in {diff}; the new frame is in {tmp_path}. "
                          f"If the change is meant: {golden.REGENERATE}")


def test_every_golden_file_belongs_to_a_case() -> None:
    expected = {golden.golden_path(n, s).name for n, s in ALL}
    assert {p.name for p in golden.COLOUR_DIR.glob("*.png")} == expected


def test_fonts_use_the_basic_layout_engine(fonts: colour_fonts.ColourFonts) -> None:
    # The same pixels with and without libraqm installed (drivers/fonts.py).
    assert fonts.get(30, bold=True).layout_engine == ImageFont.Layout.BASIC
    assert fonts.get(17).layout_engine == ImageFont.Layout.BASIC


@pytest.mark.parametrize("size", list(golden.SIZES), ids=list(golden.SIZES.values()))
@pytest.mark.parametrize("name", ["prompt", "prompt_qr", "reasons", "reasons_long", "idle",
                                  "idle_staff_qr"])
def test_every_option_has_a_target_on_the_screen_none_overlapping(
        fonts: colour_fonts.ColourFonts, name: str, size: tuple[int, int]) -> None:
    screen = golden.CASES[name]
    frame = layout(screen, size, fonts)
    # Idle inviting a rating of the window draws the five levels as buttons too.
    expected = [1, 2, 3, 4, 5] if screen.name == "idle" else sorted(
        o.level for o in screen.options)
    assert sorted(frame.boxes) == expected
    w, h = size
    least = min_button(w, h)
    for x0, y0, x1, y1 in frame.boxes.values():
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        assert min(x1 - x0, y1 - y0) >= least
    for a, b in combinations(frame.boxes.values(), 2):
        assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)


def test_no_button_is_smaller_than_12_mm_on_the_7_inch_panel(
        fonts: colour_fonts.ColourFonts) -> None:
    # 800×480 on about 154 × 86 mm: 12 mm is 62 px either way.
    assert min_button(800, 480) >= 62 and min_button(480, 800) >= 62
    for name in ("prompt", "prompt_qr", "reasons", "reasons_long", "idle_staff_qr"):
        for size in ((800, 480), (480, 800)):
            for x0, y0, x1, y1 in layout(golden.CASES[name], size, fonts).boxes.values():
                assert x1 - x0 >= 62 and y1 - y0 >= 62, (name, size)


def _decoded(image: Image.Image) -> list[str]:
    return [r.text for r in zxingcpp.read_barcodes(image)]


@pytest.mark.parametrize("size", [(480, 320), (800, 480), (1024, 600), (480, 800),
                                  (600, 1024), (320, 480)])
def test_the_qr_code_decodes_to_the_url_the_frame_names(
        fonts: colour_fonts.ColourFonts, size: tuple[int, int]) -> None:
    idle = layout(screens.idle(WINDOW, Staff("S1", "李娜"), offline=False, spontaneous=True,
                               qr_url=QR_WINDOW), size, fonts)
    assert idle.qr == QR_WINDOW and _decoded(idle.image) == [QR_WINDOW]
    prompt = layout(screens.prompt(WINDOW, None, case_id="C1", service_name="不动产登记",
                                   remaining_s=60, qr_url=QR_CASE), size, fonts)
    # A small panel keeps its levels legible and leaves the code to idle.
    assert _decoded(prompt.image) == ([] if prompt.qr is None else [QR_CASE])
    if min(size) >= 480:
        assert prompt.qr == QR_CASE


def test_idle_without_spontaneous_ratings_has_no_buttons(
        fonts: colour_fonts.ColourFonts) -> None:
    frame = layout(golden.CASES["idle_placeholder_offline"], (800, 480), fonts)
    assert frame.boxes == {}


def test_screens_without_a_url_show_no_code(fonts: colour_fonts.ColourFonts) -> None:
    for name in ("idle", "thanks", "paused", "error", "reasons"):
        frame = layout(golden.CASES[name], (800, 480), fonts)
        assert frame.qr is None and _decoded(frame.image) == []


def test_text_is_what_the_screen_says(fonts: colour_fonts.ColourFonts) -> None:
    frame = layout(golden.CASES["idle_placeholder_offline"], (800, 480), fonts)
    assert frame.text.split("\n")[:2] == [WINDOW, "离线"]
    assert "张晓明" in frame.text and "工号 S0231" in frame.text and "扫码评价" in frame.text
    prompt = layout(golden.CASES["prompt_qr"], (800, 480), fonts).text
    for label in ("非常满意", "满意", "基本满意", "不满意", "非常不满意", "60秒"):
        assert label in prompt.split("\n")


def test_a_photo_comes_from_the_directory_and_nothing_outside_it(tmp_path: Path) -> None:
    Image.new("RGB", (90, 120), (200, 10, 10)).save(tmp_path / "S0107.png")
    Image.new("RGB", (90, 120), (10, 200, 10)).save(tmp_path / "S0200.jpg")
    (tmp_path / "S0300.png").write_bytes(b"not an image")
    outside = tmp_path.parent / "secret.png"
    Image.new("RGB", (9, 9)).save(outside)
    photos = PhotoDir(tmp_path)
    red = photos("S0107")
    assert red is not None and red.getpixel((5, 5)) == (200, 10, 10)
    green = photos("S0200")
    assert green is not None
    pixel = green.getpixel((5, 5))
    assert isinstance(pixel, tuple) and pixel[1] > 150
    assert photos("S0300") is None          # broken file: the placeholder
    assert photos("../secret") is None      # never a path outside the directory
    assert photos("S9999") is None
    assert photos("S0107") is red           # read once per file version


def test_the_photo_is_drawn_and_its_absence_is_a_placeholder(
        fonts: colour_fonts.ColourFonts) -> None:
    screen = screens.idle(WINDOW, golden.LI, offline=False, spontaneous=False)
    with_photo = layout(screen, (800, 480), fonts, golden.photos).image
    without = layout(screen, (800, 480), fonts, lambda _: None).image
    assert ImageChops.difference(with_photo, without).getbbox() is not None
    assert layout(screen, (800, 480), fonts).image.tobytes() == without.tobytes()


texts = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=200)


@settings(max_examples=40, deadline=None)
@given(window=texts, service=texts, name=texts, staff_id=texts, reason=texts,
       size=st.sampled_from(list(golden.SIZES)))
def test_any_text_makes_a_frame_with_targets_on_the_screen(
        window: str, service: str, name: str, staff_id: str, reason: str,
        size: tuple[int, int]) -> None:
    fonts = golden.FONTS
    staff = screens.staff_of({"staff_id": staff_id, "staff_name": name})
    choices = (Option(5, screens.shown(reason) or "R", "R01"), Option(1, "跳过", None))
    for screen in (
        screens.idle(window, staff, offline=True, spontaneous=True, qr_url=QR_WINDOW),
        screens.prompt(window, staff, case_id="C", service_name=service, remaining_s=9),
        screens.reasons(window, staff, case_id="C", service_name=service, remaining_s=9,
                        level=1, choices=choices),
        screens.paused(window, staff, reason=reason),
        screens.error(window, staff, message=reason),
    ):
        frame = layout(screen, size, fonts)
        assert frame.image.size == size
        for x0, y0, x1, y1 in frame.boxes.values():
            assert 0 <= x0 < x1 <= size[0] and 0 <= y0 < y1 <= size[1]


def test_a_panel_too_small_is_refused(fonts: colour_fonts.ColourFonts) -> None:
    with pytest.raises(ValueError, match="at least"):
        layout(Screen("idle"), (128, 64), fonts)


def test_reason_options_keep_their_keys(fonts: colour_fonts.ColourFonts) -> None:
    frame = layout(screens.reasons(WINDOW, None, case_id="C", service_name=None,
                                   remaining_s=5, level=2, choices=DEFAULT_REASON_OPTIONS),
                   (800, 480), fonts)
    assert sorted(frame.boxes) == [1, 2, 3, 4, 5]


def test_the_font_search_falls_back_to_wenquanyi_and_says_what_to_install(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from device.ports import HardwareNotFound
    from drivers.colour_fonts import COLOUR_FONT_SEARCH, FontFace, load_colour_fonts
    missing = FontFace(tmp_path / "NotoSansCJK-Regular.ttc", 2)
    wqy = COLOUR_FONT_SEARCH[-1]
    load_colour_fonts.cache_clear()
    try:
        monkeypatch.setattr(colour_fonts, "COLOUR_FONT_SEARCH", ((missing, missing), wqy))
        assert load_colour_fonts().regular.path.name == "wqy-zenhei.ttc"
        load_colour_fonts.cache_clear()
        monkeypatch.setattr(colour_fonts, "COLOUR_FONT_SEARCH", ((missing, missing),))
        with pytest.raises(HardwareNotFound, match="apt install fonts-noto-cjk"):
            load_colour_fonts()
        load_colour_fonts.cache_clear()
        with pytest.raises(HardwareNotFound):
            load_colour_fonts(str(tmp_path / "nofont.ttc"))
        # [display] font names one face for both weights.
        load_colour_fonts.cache_clear()
        fonts = load_colour_fonts(f"{wqy[0].path}#0")
        assert fonts.regular == fonts.bold == FontFace(wqy[0].path, 0)
    finally:
        load_colour_fonts.cache_clear()
