"""The colour gallery (docs/screens-colour.md): made by the real core and colour layout,
repeatable byte for byte, and the checked-in copy is up to date."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator.colour_gallery import REGENERATE, pictures, write_gallery
from tests.golden import colour as golden

REPO = Path(__file__).resolve().parent.parent
DOCS_PAGE = REPO / "docs" / "screens-colour.md"
DOCS_IMAGES = REPO / "docs" / "screens-colour"


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> Path:
    problem = golden.font_problem()
    if problem:
        pytest.fail(problem)
    out = tmp_path_factory.mktemp("g") / "screens-colour"
    write_gallery(out, golden.FONTS, out.with_name("screens-colour.md"))
    return out


def test_every_picture_is_on_the_page_with_its_text(gallery: Path) -> None:
    page = gallery.with_name("screens-colour.md").read_text(encoding="utf-8")
    for picture in pictures():
        assert f"(screens-colour/{picture.file})" in page
        assert (gallery / picture.file).is_file()
    assert "非常满意" in page and "扫码评价" in page and "Noto Sans CJK" in page


def test_rerun_gives_the_same_bytes(gallery: Path, tmp_path: Path) -> None:
    again = tmp_path / "screens-colour"
    write_gallery(again, golden.FONTS, tmp_path / "screens-colour.md")
    for picture in pictures():
        assert (again / picture.file).read_bytes() == (gallery / picture.file).read_bytes()


def test_checked_in_colour_gallery_is_up_to_date(gallery: Path) -> None:
    expected = {p.file for p in pictures()}
    assert {p.name for p in DOCS_IMAGES.glob("*")} == expected, (
        f"docs/screens-colour has other files than the gallery makes: run {REGENERATE}")
    for name in sorted(expected):
        assert (DOCS_IMAGES / name).read_bytes() == (gallery / name).read_bytes(), (
            f"docs/screens-colour/{name} is out of date: look at the new render, run "
            f"{REGENERATE}")
    assert DOCS_PAGE.read_text(encoding="utf-8") == gallery.with_name(
        "screens-colour.md").read_text(encoding="utf-8"), f"run {REGENERATE}"
