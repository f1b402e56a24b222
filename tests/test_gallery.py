"""`hcp-sim gallery`: every screen drawn by the real core and renderer, repeatable to the
byte, and the checked-in docs/screens pictures up to date."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest
from PIL import Image, ImageChops

from device.core.model import ScreenName
from device.core.settings import DEFAULT_REASONS
from device.ports import HardwareNotFound
from drivers.fonts import Fonts, load_fonts
from drivers.layout_oled import visible_text
from simulator import cli
from simulator.gallery import BEZEL_GREY, LONG_SERVICE, LONG_WINDOW, SHOTS, Scene, Shot
from tests.golden.cases import (
    GOLDEN_FONT,
    GOLDEN_FONT_INDEX,
    REGENERATE_GALLERY,
    golden_font_problem,
)

REPO = Path(__file__).resolve().parent.parent
DOCS_PAGE = REPO / "docs" / "screens.md"
DOCS_IMAGES = REPO / "docs" / "screens"
W, H = 128, 64


@pytest.fixture(scope="module")
def fonts() -> Fonts:
    try:
        return load_fonts()
    except HardwareNotFound as e:
        pytest.fail(f"{e} (./hcp test installs the fonts the tests need)", pytrace=False)


def _expected_files(scale: int) -> set[str]:
    return {f"{s.name}.png" for s in SHOTS} | {f"{s.name}-x{scale}.png" for s in SHOTS}


def _snapshot(out: Path, page: Path) -> dict[str, bytes]:
    files = {p.name: p.read_bytes() for p in out.iterdir()}
    files[page.name] = page.read_bytes()
    return files


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory, fonts: Fonts) -> Path:
    """One run of the installed command, as a technician would type it."""
    out = tmp_path_factory.mktemp("gallery") / "screens"
    proc = subprocess.run([sys.executable, "-m", "simulator.cli", "gallery", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return out


# What the command writes ----------------------------------------------------------

def test_writes_native_and_framed_pictures_of_every_screen(gallery: Path) -> None:
    assert {p.name for p in gallery.iterdir()} == _expected_files(4)
    for shot in SHOTS:
        native = Image.open(gallery / f"{shot.name}.png")
        assert (native.mode, native.size) == ("1", (W, H))
        assert native.getbbox() is not None, f"{shot.name} is blank"
        framed = Image.open(gallery / f"{shot.name}-x4.png")
        assert (framed.mode, framed.size) == ("L", ((W + 2) * 4, (H + 2) * 4))
        # Inside the bezel: the native picture, every pixel a 4×4 square.
        inner = framed.crop((4, 4, 4 + 4 * W, 4 + 4 * H))
        assert inner.resize((W, H), Image.Resampling.NEAREST).tobytes() == \
            native.convert("L").tobytes()
        assert inner.tobytes() == native.convert("L").resize(
            (4 * W, 4 * H), Image.Resampling.NEAREST).tobytes()
        # The bezel is one panel pixel of grey all round: the glass edge shows on any page.
        for box in ((0, 0, framed.width, 4), (0, framed.height - 4, framed.width, framed.height),
                    (0, 0, 4, framed.height), (framed.width - 4, 0, framed.width, framed.height)):
            assert framed.crop(box).getextrema() == (BEZEL_GREY, BEZEL_GREY)


def test_page_shows_every_picture_with_its_text(gallery: Path) -> None:
    page = gallery.with_name("screens.md").read_text(encoding="utf-8")
    links = re.findall(r"!\[([^\]]*)\]\(([^)]+)\)", page)
    assert [target for _, target in links] == [f"screens/{s.name}-x4.png" for s in SHOTS]
    for (alt, target), shot in zip(links, SHOTS, strict=True):
        assert (gallery.parent / target).is_file()
        first_row = visible_text(shot.screen()).splitlines()[0]
        assert alt.startswith(first_row)
    assert "hcp-sim gallery --out docs/screens" in page


def test_rerun_gives_the_same_bytes(gallery: Path, tmp_path: Path) -> None:
    again = tmp_path / "screens"
    assert cli.main(["gallery", "--out", str(again)]) == 0
    assert _snapshot(again, tmp_path / "screens.md") == \
        _snapshot(gallery, gallery.with_name("screens.md"))
    # Regenerating in place over existing files changes nothing either.
    before = _snapshot(again, tmp_path / "screens.md")
    assert cli.main(["gallery", "--out", str(again)]) == 0
    assert _snapshot(again, tmp_path / "screens.md") == before


def test_scale_doc_and_no_doc_options(tmp_path: Path, fonts: Fonts) -> None:
    out = tmp_path / "png"
    assert cli.main(["gallery", "--out", str(out), "--scale", "2", "--no-doc"]) == 0
    assert {p.name for p in out.iterdir()} == _expected_files(2)
    assert not (tmp_path / "png.md").exists()
    framed = Image.open(out / "idle-x2.png")
    assert framed.size == ((W + 2) * 2, (H + 2) * 2)
    page = tmp_path / "site" / "ui.md"
    assert cli.main(["gallery", "--out", str(out), "--scale", "2", "--doc", str(page)]) == 0
    assert "](../png/idle-x2.png)" in page.read_text(encoding="utf-8")


def test_bad_arguments_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["gallery", "--out", str(tmp_path), "--scale", "1"])
    assert exc.value.code == 2
    assert cli.main(["gallery", "--out", str(tmp_path), "--font", "/nonexistent.ttc"]) == 1
    assert "no such file" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


# The scenes reach the screens they claim ----------------------------------------------

def _shot(name: str) -> Shot:
    return next(s for s in SHOTS if s.name == name)


def test_every_kind_of_screen_is_in_the_gallery() -> None:
    assert {s.shows for s in SHOTS} == set(get_args(ScreenName))
    assert len({s.name for s in SHOTS}) == len(SHOTS)


def test_scenes_show_what_the_device_shows() -> None:
    text = {s.name: visible_text(s.screen()) for s in SHOTS}
    assert "李娜" not in text["idle"] and "欢迎评价本窗口服务" in text["idle"]
    assert "欢迎评价本窗口服务" not in text["idle_no_spontaneous"]
    assert "李娜 工号S007" in text["idle_staff"] and "离线" not in text["idle_staff"]
    assert "离线" in text["idle_offline"]
    assert _shot("idle_long_window_name").screen().window_name == LONG_WINDOW
    assert text["prompt"].endswith("60秒") and text["prompt_5s"].endswith(" 5秒")
    assert text["prompt_long_service"].startswith(LONG_SERVICE)
    assert text["prompt_no_service"].startswith("本次服务")
    default = _shot("reasons").screen().options
    assert [(o.code, o.label) for o in default if o.code] == list(DEFAULT_REASONS)
    assert [(o.level, o.code) for o in _shot("reasons_custom_two").screen().options] == [
        (5, "X01"), (4, "X02"), (1, None)]
    assert _shot("thanks_5").screen().level == 5 and _shot("thanks_1").screen().level == 1
    assert text["paused_reason"].endswith("午间休息")
    assert text["paused"].endswith("暂停服务")
    assert "评价未能保存" in text["error_storage"]


def test_a_scene_that_drifts_to_another_screen_stops_the_gallery() -> None:
    drifted = Shot("thanks_oops", "thanks", "thanks", "never", lambda: Scene().press(9))
    with pytest.raises(RuntimeError, match="ended on 'idle', not 'thanks'"):
        drifted.screen()


# The checked-in pictures ----------------------------------------------------------

def test_checked_in_gallery_is_up_to_date(gallery: Path, fonts: Fonts) -> None:
    problem = golden_font_problem(REGENERATE_GALLERY)
    if problem is not None:
        pytest.fail(f"docs/screens: {problem}", pytrace=False)
    # The gallery draws with the font the device finds; with the golden font installed
    # the search picks it for every size (drivers/fonts.py _SEARCH).
    found = {str(fonts[size].source) for size in (11, 12, 16)}
    assert found == {f"{GOLDEN_FONT}#{GOLDEN_FONT_INDEX}"}, (
        f"this machine draws with {sorted(found)}, not the font docs/screens was drawn "
        f"with ({GOLDEN_FONT}#{GOLDEN_FONT_INDEX}): the font search order changed?")
    stale = sorted({p.name for p in DOCS_IMAGES.iterdir()} - _expected_files(4))
    assert not stale, f"docs/screens has files no screen makes (delete them): {stale}"
    fresh = _snapshot(gallery, gallery.with_name("screens.md"))
    for name, data in sorted(fresh.items()):
        path = DOCS_PAGE if name == "screens.md" else DOCS_IMAGES / name
        assert path.is_file(), f"{path} is missing: run {REGENERATE_GALLERY}"
        if name.endswith(".png") and path.read_bytes() != data:
            diff = ImageChops.difference(Image.open(path).convert("L"),
                                         Image.open(gallery / name).convert("L")).getbbox()
            where = (f"pixels differ in {diff}" if diff else
                     "same pixels, different PNG bytes")
            pytest.fail(f"{path} is out of date ({where}): look at the new render and run "
                        f"{REGENERATE_GALLERY}")
        assert path.read_bytes() == data, (f"{path} is out of date: run "
                                           f"{REGENERATE_GALLERY}")
