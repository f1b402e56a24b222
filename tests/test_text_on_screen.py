"""Any text can be shown (issue 17, "Text can stop the device"): a service name, clerk,
pause reason, window name or reason label holding line breaks, separators, control or
format characters, lone surrogates, emoji, combining marks or a megabyte of text renders
as a 128×64 frame, and the sim socket's text is plain lines of showable characters.

Each screen is rendered with the basic layout engine the device uses and, where this
machine has raqm (libfribidi0), with raqm too: raqm is the engine that raised on a line
separator, and the view model must keep such text from ever reaching any engine.
"""

from __future__ import annotations

import itertools
import time
import unicodedata
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFont, features

from common.text import display_text
from device.clock import FakeClock
from device.core import screens
from device.core.machine import Evaluator, Identity
from device.core.model import (
    FrameReceived,
    KeyDown,
    KeyUp,
    Option,
    Screen,
    SettingsChanged,
    Show,
    Staff,
    Tick,
)
from device.core.settings import UiSettings
from device.ports import HardwareNotFound
from drivers.fonts import SIZES, Fonts, load_fonts
from drivers.layout_oled import Row, layout
from drivers.render import place_rows, render, render_with_text
from tests.test_render import assert_rows_fit

W, H = 128, 64
UNSHOWABLE = {"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"}
# What the red-team pass sent, and its relatives: separators raqm refuses, bidi and
# zero-width controls, a lone surrogate, emoji (a ZWJ sequence and a flag), combining
# marks, a very wide glyph, an ideographic space.
HOSTILE = ["\r\n", "\n", "\r", "\u2028", "\u2029", "\x1c", "\x1d", "\x1e", "\x85", "\t",
           "\x00", "\x7f", "\u200b", "\u200d", "\u202e", "\u2066", "\ufeff", "\ud800",
           "\udfff", "\ue000", "\U000e0001", "\U0001f600", "\U0001f468\u200d\U0001f469",
           "\U0001f1e8\U0001f1f3", "e\u0301", "\u0301", "\u0e49\u0e49\u0e49", "\ufdfd",
           "\u3000", "不动产登记", "（）", "…", " "]
ANY_TEXT = st.lists(st.one_of(st.characters(exclude_categories=()), st.sampled_from(HOSTILE)),
                    max_size=40).map("".join)
IDENTITY = Identity("421100-HG01-W03", "421100", "HG01", "W03")


def _with_raqm(fonts: Fonts) -> Fonts:
    faces = {}
    for size in SIZES:
        face = fonts[size]
        font = ImageFont.truetype(str(face.source.path), size, index=face.source.index,
                                  layout_engine=ImageFont.Layout.RAQM)
        faces[size] = replace(face, font=font)
    return Fonts(faces)


@pytest.fixture(scope="module")
def engines() -> list[Fonts]:
    """The fonts the device draws with, and the same laid out by raqm if available."""
    try:
        fonts = load_fonts()
    except HardwareNotFound as e:
        pytest.fail(f"{e} (./hcp test installs the fonts the tests need)", pytrace=False)
    return [fonts, _with_raqm(fonts)] if features.check("raqm") else [fonts]


def _assert_shown(screen: Screen, engines: list[Fonts]) -> str:
    """Render `screen` with every engine; return the sim socket's text."""
    texts = set()
    for fonts in engines:
        image = render(screen, fonts)
        assert (image.mode, image.size) == ("1", (W, H))
        frame, text = render_with_text(screen, fonts)
        assert len(frame) == W * H // 8
        texts.add(text)
    text = texts.pop()
    lines = text.split("\n")
    assert len(lines) <= 5, lines
    for line in lines:
        bad = [ch for ch in line if unicodedata.category(ch) in UNSHOWABLE]
        assert not bad, f"unshowable {bad!r} in the sim text {line!r}"
    return text


@st.composite
def any_screen(draw: st.DrawFn) -> Screen:
    """Every screen, arbitrary text in every text field."""
    window = draw(ANY_TEXT)
    staff = screens.staff_of(draw(st.none() | st.fixed_dictionaries(
        {"staff_id": ANY_TEXT, "staff_name": ANY_TEXT})))
    name = draw(st.sampled_from(["idle", "prompt", "reasons", "thanks", "paused", "error"]))
    if name == "idle":
        return screens.idle(window, staff, offline=draw(st.booleans()),
                            spontaneous=draw(st.booleans()))
    if name == "thanks":
        return screens.thanks(window, staff, level=draw(st.none() | st.integers(1, 5)))
    if name == "paused":
        return screens.paused(window, staff, reason=draw(st.none() | ANY_TEXT))
    if name == "error":
        return screens.error(window, staff, message=draw(st.none() | ANY_TEXT))
    case_id = draw(st.none() | st.just("C-1"))
    service = draw(st.none() | ANY_TEXT)
    remaining = draw(st.integers(0, 10**6))
    if name == "prompt":
        return screens.prompt(window, staff, case_id=case_id, service_name=service,
                              remaining_s=remaining)
    labels = draw(st.lists(ANY_TEXT, min_size=1, max_size=4))
    choices = (*(Option(k, label, f"X{k}") for k, label in zip((5, 4, 3, 2), labels,
                                                               strict=False)),
               Option(1, "跳过", None))
    return screens.reasons(window, staff, case_id=case_id, service_name=service,
                           remaining_s=remaining, level=draw(st.integers(1, 2)),
                           choices=choices)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(screen=any_screen())
def test_any_text_in_any_field_renders(screen: Screen, engines: list[Fonts]) -> None:
    _assert_shown(screen, engines)
    staff = (screen.staff.staff_id, screen.staff.staff_name) if screen.staff else ()
    for field in (screen.heading, *screen.lines, screen.window_name, *staff,
                  *(o.label for o in screen.options)):
        assert field == display_text(field)  # the view model holds display text only


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(screen=any_screen())
def test_any_text_stays_on_its_row(screen: Screen, engines: list[Fonts]) -> None:
    """Nothing inks off the panel or over another row, whatever the glyphs."""
    assert_rows_fit(screen, engines[0])


def test_stacked_combining_marks_stay_on_their_row(engines: list[Fonts]) -> None:
    """A font that stacks combining marks (DejaVu Sans laid out by raqm, as a configured
    `[display] font` might) draws "Zalgo" text 80 px tall: each row is clipped to its
    own band, so it never reaches the window name or leaves the panel."""
    dejavu = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
    if not features.check("raqm") or not dejavu.is_file():
        pytest.skip("needs raqm and fonts-dejavu-core to stack combining marks")
    base = engines[0]
    stacking = Fonts({**base.faces, 12: replace(base[12], font=ImageFont.truetype(
        str(dejavu), 12, layout_engine=ImageFont.Layout.RAQM))})
    zalgo = "Li" + "\u0301\u030b\u0308" * 8 + "Na" + "\u0323\u0324" * 8
    staff = screens.staff_of({"staff_id": "S007", "staff_name": zalgo})
    for screen in (screens.idle("03号窗口", staff, offline=True, spontaneous=True),
                   screens.paused("03号窗口", None, reason=zalgo),
                   screens.prompt("W", None, case_id="C1", service_name=zalgo,
                                  remaining_s=9)):
        assert_rows_fit(screen, stacking)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(st.builds(Row, st.sampled_from([0, 13, 26, 39, 52]), ANY_TEXT,
                               size=st.sampled_from([11, 12, 16]),
                               align=st.sampled_from(["left", "center", "right"]),
                               invert=st.booleans(), x=st.sampled_from([0, 65]),
                               key=st.none() | st.integers(1, 5), shrink=st.booleans()),
                     max_size=6))
def test_the_renderer_is_total_for_rows_built_from_raw_text(
        rows: list[Row], engines: list[Fonts]) -> None:
    """The last line of defence: rows that never went through the view model."""
    for fonts in engines:
        for p in place_rows(rows, fonts):
            for run in p.runs:  # a run is a whole text or one glyph of a condensed one
                assert not [ch for ch in run.text if unicodedata.category(ch) in UNSHOWABLE]
                assert "  " not in run.text


def test_a_row_pillow_cannot_draw_is_left_out_not_raised(
        engines: list[Fonts], caplog: pytest.LogCaptureFixture) -> None:
    class Refusing:
        """A font whose every measurement fails, as FreeType does for a broken file."""

        def __getattr__(self, name: str) -> Any:
            raise OSError("raster overflow")

    fonts = engines[0]
    broken = Fonts({**fonts.faces, 16: replace(fonts[16], font=Refusing())})  # type: ignore[arg-type]
    screen = screens.thanks("03号窗口", None, level=5)
    frame, text = render_with_text(screen, broken)
    assert text == "5非常满意"      # the 16 px heading is left out, the rest is drawn
    assert any(frame)
    assert "left out" in caplog.text and "raster overflow" in caplog.text


# The examples of issue 17, each through the real core ---------------------------------

class Device:
    """The core and what the display was asked to show."""

    def __init__(self, **ui: Any) -> None:
        ids = (f"{n:032x}" for n in itertools.count(1))
        self.clock = FakeClock()
        self.core = Evaluator(IDENTITY, UiSettings(**{"window_name": "03号窗口", **ui}),
                              self.clock, new_rating_id=lambda: next(ids))
        self.seq = itertools.count(1)
        self.shown: list[Screen] = []
        self._take(self.core.start(self.clock.now))

    def _take(self, actions: list[Any]) -> None:
        self.shown += [a.screen for a in actions if isinstance(a, Show)]

    def frame(self, type_: str, **fields: Any) -> None:
        self._take(self.core.handle(FrameReceived(type_, next(self.seq), fields,
                                                  self.clock.now)))

    def press(self, level: int) -> None:
        self._take(self.core.handle(KeyDown(level, self.clock.now)))
        self._take(self.core.handle(KeyUp(level, self.clock.now)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(window=ANY_TEXT, labels=st.lists(ANY_TEXT, min_size=1, max_size=4),
       clerk=ANY_TEXT, staff_id=ANY_TEXT, service=ANY_TEXT, reason=ANY_TEXT,
       level=st.integers(1, 5))
def test_every_screen_the_core_shows_renders_whatever_the_texts(
        window: str, labels: list[str], clerk: str, staff_id: str, service: str,
        reason: str, level: int, engines: list[Fonts]) -> None:
    """Texts from every source at once, through the real core: each screen it asks the
    display to show renders."""
    device = Device(window_name=window,
                    reasons=tuple((f"X{i}", label) for i, label in enumerate(labels)))
    device.frame("staff_login", staff_id=staff_id, staff_name=clerk)
    device.frame("case_completed", case_id="C1", service_name=service)
    device.press(level)
    if level <= 2:
        device.press(1)  # skip the reasons
    device.clock.advance(10)
    device._take(device.core.handle(Tick(device.clock.now)))
    device.frame("pause", reason=reason)
    names = {screen.name for screen in device.shown}
    assert {"idle", "prompt", "thanks", "paused"} <= names
    assert ("reasons" in names) == (level <= 2)
    for screen in device.shown:
        _assert_shown(screen, engines)


def test_service_name_with_a_line_break_renders(engines: list[Fonts]) -> None:
    device = Device()
    device.frame("case_completed", case_id="C1", service_name="不动产登记\r\n")
    screen = device.shown[-1]
    assert screen.name == "prompt" and screen.heading == "不动产登记"
    assert _assert_shown(screen, engines).splitlines()[0] == "不动产登记"


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x1c", "\x1d", "\x1e", "\x85",
                                       "\r\n"])
def test_clerk_name_with_a_separator_renders_after_every_login(
        separator: str, engines: list[Fonts]) -> None:
    """A staff_login re-sent after every hello made this a crash loop."""
    device = Device()
    for _ in range(2):
        device.frame("staff_login", staff_id="S007", staff_name=f"李{separator}娜")
        screen = device.shown[-1]
        assert screen.staff == Staff("S007", "李 娜")
        assert "李 娜 工号S007" in _assert_shown(screen, engines).splitlines()


def test_pause_reason_with_separators_renders(engines: list[Fonts]) -> None:
    device = Device()
    device.frame("pause", reason="午间\u2029休息\x85\r\n")
    screen = device.shown[-1]
    assert screen.name == "paused" and screen.message == "午间 休息"
    assert _assert_shown(screen, engines).endswith("午间 休息")


def test_reason_label_from_the_retained_config_renders(engines: list[Fonts]) -> None:
    """The label was persisted and crashed the device at every level 1–2 press."""
    device = Device()
    labels = (("X01", "等候\r\n太久"), ("X02", "\u2028"), ("X03", "态度\x1e差"))
    device._take(device.core.handle(SettingsChanged(
        replace(device.core.settings, reasons=labels), device.clock.now)))
    device.frame("case_completed", case_id="C1", service_name="社保卡申领")
    device.press(1)
    screen = device.shown[-1]
    assert screen.name == "reasons"
    assert [o.label for o in screen.options] == ["等候 太久", "X02", "态度 差", "跳过"]
    _assert_shown(screen, engines)


def test_window_name_with_a_separator_renders(engines: list[Fonts]) -> None:
    device = Device(window_name="03号窗口\u2028不动产登记")
    screen = device.shown[-1]
    assert screen.window_name == "03号窗口 不动产登记"
    _assert_shown(screen, engines)
    device.frame("pause")
    _assert_shown(device.shown[-1], engines)


def test_a_huge_text_is_cut_before_it_is_measured(engines: list[Fonts]) -> None:
    huge = "不动产登记" * 200_000  # a megabyte of service name
    screen = screens.prompt("03号窗口", None, case_id="C1", service_name=huge,
                            remaining_s=60)
    assert len(screen.heading) == screens.MAX_TEXT
    t0 = time.perf_counter()
    text = _assert_shown(screen, engines)
    assert text.splitlines()[0].endswith("…")
    assert time.perf_counter() - t0 < 5  # generous: the point is it is not minutes


def test_text_with_nothing_showable_falls_back(engines: list[Fonts]) -> None:
    screen = screens.prompt("\r\n", None, case_id="C1", service_name="\u2028\x00\t",
                            remaining_s=9)
    assert screen.heading == "本次服务" and screen.service_name is None
    assert screens.paused("W", None, reason="\r\n").lines == ()
    assert screens.error("W", None, message="\x1e").lines[0] == "设备故障"
    assert screens.staff_of({"staff_id": "\r", "staff_name": "\u2029"}) is None
    _assert_shown(screen, engines)


def test_emoji_and_combining_marks_are_drawn_not_dropped(engines: list[Fonts]) -> None:
    screen = screens.paused("W", None, reason="e\u0301\U0001f600好")
    assert screen.message == "e\u0301\U0001f600好"
    assert _assert_shown(screen, engines).endswith("e\u0301\U0001f600好")
    blank = Image.new("1", (W, H), 0)
    assert render(screen, engines[0]).getbbox() != blank.getbbox()


def test_layout_rows_hold_display_text_only() -> None:
    staff = screens.staff_of({"staff_id": "S\r1", "staff_name": "c\nd"})
    screen = screens.idle("a\u2028b", staff, offline=True, spontaneous=True)
    assert staff == Staff("S 1", "c d")
    for row in layout(screen):
        assert row.text == display_text(row.text)
