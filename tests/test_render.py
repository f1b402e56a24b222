"""Screens drawn on the 128×64 panel: goldens, nothing off-screen or overlapping, the
frame byte order the simulator reports, and how fonts are found."""

from __future__ import annotations

import hashlib
import statistics
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageChops, ImageDraw, ImageFont

from device.core import screens
from device.core.model import Option, Screen, ScreenName, Staff
from device.core.screens import PROMPT_LINE
from device.ports import HardwareNotFound
from drivers import fonts as fonts_module
from drivers.fonts import Fonts, fonts_from_file, load_fonts, parse_font_setting
from drivers.layout_oled import layout, visible_text
from drivers.render import (
    ELLIPSIS,
    Placed,
    draw_placed,
    frame_bytes,
    place,
    render,
    render_with_text,
)
from tests.golden import cases as golden_cases
from tests.golden.cases import (
    CASES,
    DEFAULT_REASON_OPTIONS,
    GOLDEN_DIR,
    GOLDEN_FONT,
    GOLDEN_FONT_INDEX,
    GOLDEN_FONT_PACKAGE,
    GOLDEN_FONT_SHA256,
    REGENERATE,
    golden_font_problem,
)

W, H = 128, 64


@pytest.fixture(scope="module")
def golden_fonts() -> Fonts:
    problem = golden_font_problem()
    if problem is not None:
        pytest.fail(problem, pytrace=False)
    return fonts_from_file(GOLDEN_FONT, GOLDEN_FONT_INDEX)


@pytest.fixture(scope="module")
def system_fonts() -> Fonts:
    try:
        return load_fonts()
    except HardwareNotFound as e:
        pytest.fail(f"{e} (./hcp test installs the fonts the tests need)", pytrace=False)


# Goldens ---------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(CASES))
def test_screen_matches_golden(name: str, golden_fonts: Fonts) -> None:
    path = GOLDEN_DIR / f"{name}.png"
    if not path.is_file():
        pytest.fail(f"no golden {path}; look at the render and create it with {REGENERATE}")
    expected = Image.open(path).convert("1")
    actual = render(CASES[name], golden_fonts)
    assert actual.mode == "1" and actual.size == (W, H)
    diff = ImageChops.difference(actual, expected).getbbox()
    assert diff is None, (f"{name} differs from its golden in {diff}; if the change is "
                          f"intended, look at it and run {REGENERATE}")


def test_a_different_golden_font_is_a_failure_that_says_what_to_do(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A Debian font update must turn the suite red, not skip every golden quietly."""
    font = tmp_path / "wqy-zenhei.ttc"
    font.write_bytes(b"another release of the font")
    monkeypatch.setattr(golden_cases, "GOLDEN_FONT", font)
    problem = golden_font_problem()
    assert problem is not None
    found = hashlib.sha256(font.read_bytes()).hexdigest()
    assert GOLDEN_FONT_SHA256 in problem and found in problem and str(font) in problem
    assert REGENERATE in problem and "GOLDEN_FONT_SHA256" in problem


def test_a_missing_golden_font_is_a_failure_naming_the_package(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(golden_cases, "GOLDEN_FONT", tmp_path / "absent.ttc")
    problem = golden_font_problem()
    assert problem is not None
    assert f"apt install {GOLDEN_FONT_PACKAGE}" in problem and "absent.ttc" in problem


def test_the_installed_golden_font_is_the_expected_one() -> None:
    assert golden_font_problem() is None


def test_every_golden_has_a_case() -> None:
    stale = {p.stem for p in GOLDEN_DIR.glob("*.png")} - set(CASES)
    assert not stale, f"goldens without a case (delete them): {sorted(stale)}"


def test_render_is_deterministic(system_fonts: Fonts) -> None:
    for screen in CASES.values():
        a, b = render(screen, system_fonts), render(screen, system_fonts)
        assert ImageChops.difference(a, b).getbbox() is None


def test_no_grey_pixels(system_fonts: Fonts) -> None:
    """Text is drawn without antialiasing, and "on" is stored as Pillow's own 255."""
    image = render(CASES["prompt_60"], system_fonts)
    values = {value for value, count in enumerate(image.histogram()) if count}
    assert values == {0, 255}


# Nothing off-screen, nothing overlapping ---------------------------------------

def _ink_masks(placed: list[Placed]) -> list[Image.Image]:
    """Each row drawn alone on a canvas 3× the panel, the panel in the middle."""
    masks = []
    for p in placed:
        canvas = Image.new("1", (3 * W, 3 * H), 0)
        draw_placed(canvas, [p], offset=(W, H))
        # Inverted text draws black on its box: count the box as ink too.
        for x0, y0, x1, y1 in p.boxes:
            ImageDraw.Draw(canvas).rectangle((x0 + W, y0 + H, x1 + W, y1 + H), fill=255)
        masks.append(canvas)
    return masks


def assert_rows_fit(screen: Screen, fonts: Fonts) -> None:
    placed = place(screen, fonts)
    masks = _ink_masks(placed)
    for p, mask in zip(placed, masks, strict=True):
        box = mask.getbbox()
        if box is None:
            continue
        assert W <= box[0] and box[2] <= 2 * W and H <= box[1] and box[3] <= 2 * H, (
            f"row {p.row.text!r} inks {box} outside the panel (offset {W},{H})")
    for i in range(len(masks)):
        for j in range(i + 1, len(masks)):
            both = ImageChops.logical_and(masks[i], masks[j]).getbbox()
            assert both is None, (f"rows {placed[i].row.text!r} and {placed[j].row.text!r} "
                                  f"overlap at {both}")


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_screens_fit(name: str, system_fonts: Fonts) -> None:
    assert_rows_fit(CASES[name], system_fonts)


CJK = st.characters(min_codepoint=0x4E00, max_codepoint=0x9FA5)
MIXED = st.one_of(CJK, st.sampled_from("0123456789ABCXYZabcgjpqy-（）：·"))
LONG = st.text(MIXED, min_size=1, max_size=40)


@st.composite
def any_screen(draw: st.DrawFn) -> Screen:
    names: list[ScreenName] = ["idle", "prompt", "reasons", "thanks", "paused", "error"]
    name = draw(st.sampled_from(names))
    window = draw(LONG)
    staff = draw(st.none() | st.builds(Staff, LONG, LONG))
    if name == "idle":
        return screens.idle(window, staff, offline=draw(st.booleans()),
                            spontaneous=draw(st.booleans()))
    if name == "thanks":
        return screens.thanks(window, staff, level=draw(st.integers(1, 5)))
    if name == "paused":
        return screens.paused(window, staff, reason=draw(st.none() | LONG))
    if name == "error":
        return screens.error(window, staff, message=draw(st.none() | LONG))
    case_id = draw(st.none() | st.just("C1"))
    service = draw(st.none() | LONG)
    remaining = draw(st.integers(0, 3600))
    if name == "prompt":
        return screens.prompt(window, staff, case_id=case_id, service_name=service,
                              remaining_s=remaining)
    labels = draw(st.lists(st.text(MIXED, min_size=1, max_size=12), min_size=1, max_size=4))
    keys = (5, 4, 3, 2)[:len(labels)]
    choices = (*(Option(k, label, f"X{k}") for k, label in zip(keys, labels, strict=True)),
               Option(1, "跳过", None))
    return screens.reasons(window, staff, case_id=case_id, service_name=service,
                           remaining_s=remaining, level=draw(st.integers(1, 2)),
                           choices=choices)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(screen=any_screen())
def test_any_text_stays_on_the_panel(screen: Screen) -> None:
    try:
        fonts = load_fonts()
    except HardwareNotFound as e:
        pytest.fail(f"{e} (./hcp test installs the fonts the tests need)", pytrace=False)
    assert_rows_fit(screen, fonts)


def _row_text(placed: list[Placed], y: int) -> str:
    return "".join(run.text for p in placed if p.row.y == y and p.row.align == "left"
                   for run in p.runs if run.lit)


def test_long_service_name_is_cut_with_an_ellipsis(system_fonts: Fonts) -> None:
    screen = CASES["prompt_long_service"]
    shown = _row_text(place(screen, system_fonts), 0)
    assert shown.endswith("…")
    assert screen.service_name is not None and screen.service_name.startswith(shown[:-1])
    assert len(shown) > 5  # cut where it must, not at a fixed short length


def test_window_name_drops_to_11px_before_being_cut(system_fonts: Fonts) -> None:
    placed = place(CASES["idle_window_name_fits_small"], system_fonts)
    title = next(p for p in placed if p.row.y == 1)
    assert {run.face.size for run in title.runs} == {11}
    assert "".join(run.text for run in title.runs) == "03号窗口 不动产登记中心"


def test_clerk_row_shows_the_name_and_the_staff_id(system_fonts: Fonts) -> None:
    """SPEC §10: the OLED shows the clerk's 工号 with the name; a long name is cut with
    "…" so the 工号 still shows, and a long 工号 is cut at the panel's edge."""
    assert "张晓明 工号S0231" in visible_text(CASES["idle_staff"]).splitlines()
    assert "工作人员：张晓明" in visible_text(CASES["idle_staff_name_only"]).splitlines()
    assert "工号S0231" in visible_text(CASES["idle_staff_id_only"]).splitlines()
    _, text = render_with_text(CASES["idle_staff_long"], system_fonts)
    name, staff_id = text.splitlines()[1].split(" ")
    assert name.endswith(ELLIPSIS) and "司马欧阳明月晓".startswith(name[:-1])
    assert staff_id.startswith("工号4211") and staff_id.endswith(ELLIPSIS)
    rows = [p for p in place(CASES["idle_staff_long"], system_fonts) if p.row.y == 16]
    assert [p.x1 <= W for p in rows] == [True, True] and rows[0].x1 < rows[1].x0


def test_prompt_sentence_is_whole_on_one_row(system_fonts: Fonts) -> None:
    """SPEC §5 names the sentence: it is never cut, and it is kept at the crisp 12 px."""
    screen = CASES["prompt_60"]
    assert PROMPT_LINE in visible_text(screen).splitlines()
    row = next(p for p in place(screen, system_fonts) if p.row.text == PROMPT_LINE)
    assert "".join(run.text for run in row.runs) == PROMPT_LINE
    assert {run.face.size for run in row.runs} == {12}


def test_offline_badge_is_inverted_and_keeps_clear_of_the_window_name(
        system_fonts: Fonts) -> None:
    screen = CASES["idle_staff_offline"]
    image = render(screen, system_fonts)
    badge = next(p for p in place(screen, system_fonts) if p.row.invert)
    x0, y0, x1, y1 = badge.boxes[0]
    assert x1 == W - 1
    # Mostly white with black text inside: an inverted badge.
    lit = sum(image.getpixel((x, y)) == 255
              for x in range(x0, x1 + 1) for y in range(y0, y1 + 1))
    assert lit > 0.6 * (x1 - x0 + 1) * (y1 - y0 + 1)
    title = next(p for p in place(screen, system_fonts) if p.row.y == 1 and not p.row.invert)
    assert title.x1 < x0


def test_text_is_what_the_panel_shows_a_long_name_cut_like_on_screen(
        system_fonts: Fonts) -> None:
    """SPEC §8 `text` is the visible text: a name too long for its row reads as drawn,
    cut to its "…", while rows that fit read exactly as laid out."""
    screen = CASES["prompt_long_service"]
    frame, text = render_with_text(screen, system_fonts)
    assert frame == frame_bytes(render(screen, system_fonts))
    first, *rest = text.splitlines()
    assert first.endswith(ELLIPSIS) and len(first) < len(screen.service_name or "")
    assert (screen.service_name or "").startswith(first[:-1])
    assert rest == visible_text(screen).splitlines()[1:]
    for name in ("prompt_60", "reasons_default", "thanks_5"):
        assert render_with_text(CASES[name], system_fonts)[1] == visible_text(CASES[name])


def test_prompt_shows_every_level_with_its_key() -> None:
    text = visible_text(CASES["prompt_5"])
    for level, label in ((5, "非常满意"), (4, "满意"), (3, "基本满意"), (2, "不满意"),
                         (1, "非常不满意")):
        assert f"{level}{label}" in text
    assert "5秒" in text


def test_reasons_show_which_key_picks_which_reason() -> None:
    rows = [r for r in layout(CASES["reasons_default"]) if r.key is not None]
    assert [(r.key, r.text) for r in rows] == [
        (o.level, o.label) for o in DEFAULT_REASON_OPTIONS]
    assert (1, "跳过") in [(r.key, r.text) for r in rows]


# Frame bytes ---------------------------------------------------------------------

def test_frame_bytes_order_is_row_major_msb_first() -> None:
    image = Image.new("1", (W, H), 0)
    for xy in ((0, 0), (7, 0), (8, 0), (3, 1), (127, 63)):
        image.putpixel(xy, 255)
    data = frame_bytes(image)
    assert len(data) == 1024
    expected = bytearray(1024)
    expected[0] = 0b1000_0001       # (0,0) is the top bit, (7,0) the bottom bit
    expected[1] = 0b1000_0000       # (8,0)
    expected[16] = 0b0001_0000      # (3,1): second row starts at byte 16
    expected[1023] = 0b0000_0001    # (127,63)
    assert data == bytes(expected)


def test_frame_bytes_round_trip_a_rendered_screen(system_fonts: Fonts) -> None:
    image = render(CASES["prompt_60"], system_fonts)
    data = frame_bytes(image)
    decoded = Image.new("1", (W, H), 0)
    for y in range(H):
        for x in range(W):
            if data[y * 16 + x // 8] & (0x80 >> (x % 8)):
                decoded.putpixel((x, y), 255)
    assert ImageChops.difference(decoded, image).getbbox() is None
    assert any(data)


def test_frame_bytes_rejects_a_wrong_size() -> None:
    with pytest.raises(ValueError):
        frame_bytes(Image.new("1", (64, 32)))


def test_thanks_renders_fast(system_fonts: Fonts) -> None:
    """The thanks frame is on the press-to-feedback path: a few ms at most."""
    screen = CASES["thanks_5"]
    render(screen, system_fonts)
    times = []
    for _ in range(30):
        t0 = time.perf_counter()
        render(screen, system_fonts)
        times.append(time.perf_counter() - t0)
    assert statistics.median(times) < 0.005


# Fonts -------------------------------------------------------------------------

def test_font_setting_picks_a_face_of_a_collection() -> None:
    assert parse_font_setting("/f/x.ttc#3") == fonts_module.FontFile(Path("/f/x.ttc"), 3)
    assert parse_font_setting("/f/wqy-zenhei.ttc").index == 2  # the Sharp face
    assert parse_font_setting("/f/a#b.ttf") == fonts_module.FontFile(Path("/f/a#b.ttf"), 0)


def test_system_fonts_cover_every_size(system_fonts: Fonts) -> None:
    for size in (11, 12, 16):
        face = system_fonts[size]
        assert face.size == size and face.ink_height > 0
    assert load_fonts() is load_fonts()  # loaded once per process


def test_every_face_lays_out_text_with_the_basic_engine(system_fonts: Fonts) -> None:
    """raqm, when the machine happens to have libfribidi, moves glyphs by a pixel: a
    frame must not depend on what optional libraries are installed (NOTES.md, Pillow)."""
    golden = fonts_from_file(GOLDEN_FONT, GOLDEN_FONT_INDEX) if GOLDEN_FONT.is_file() else None
    for fonts in (system_fonts, golden):
        if fonts is None:
            continue
        for size in (11, 12, 16):
            assert fonts[size].font.layout_engine == ImageFont.Layout.BASIC, size


def test_configured_font_missing_is_a_clear_error() -> None:
    with pytest.raises(HardwareNotFound, match=r"\[display\] font: no such file"):
        load_fonts("/nonexistent/font.ttc")


def test_configured_font_without_chinese_is_refused() -> None:
    latin = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
    if not latin.is_file():
        pytest.skip("DejaVuSans is not installed")
    with pytest.raises(HardwareNotFound, match="Chinese"):
        load_fonts(str(latin))


def test_configured_bitmap_font_serves_its_own_size(system_fonts: Fonts) -> None:
    pcf = Path("/usr/share/fonts/X11/misc/wenquanyi_9pt.pcf")
    if not pcf.is_file():
        pytest.skip("xfonts-wqy is not installed")
    fonts = load_fonts(str(pcf))
    assert fonts[12].source.path == pcf
    assert fonts[16].source.path != pcf and fonts[11].source.path != pcf


def test_no_cjk_font_tells_what_to_install(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    nowhere = (fonts_module.FontFile(tmp_path / "none.ttc"),)
    monkeypatch.setattr(fonts_module, "_SEARCH", {11: nowhere, 12: nowhere, 16: nowhere})
    load_fonts.cache_clear()
    try:
        with pytest.raises(HardwareNotFound, match=r"fonts-wqy-zenhei.*\[display\] font"):
            load_fonts()
    finally:
        load_fonts.cache_clear()
