"""The faces of colour screens (SPEC §10): which CJK fonts are searched for, how
`[display] font` names one, and the measuring every colour layout does with them.

Text is set with the basic layout engine (drivers/fonts.py says why: the same pixels with
and without libraqm).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from PIL import ImageFont

from device.ports import HardwareNotFound
from drivers.fonts import LAYOUT_ENGINE


@dataclass(frozen=True)
class FontFace:
    path: Path
    index: int


@dataclass(frozen=True, eq=False)
class ColourFonts:
    """The faces of colour screens: a regular and a bold, any pixel size."""

    regular: FontFace
    bold: FontFace

    def get(self, size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
        return _font(self.bold if bold else self.regular, max(6, size))

    def describe(self) -> str:
        return f"regular={self.regular.path}#{self.regular.index}, " \
               f"bold={self.bold.path}#{self.bold.index}"


@functools.lru_cache(maxsize=128)
def _font(face: FontFace, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(face.path), size, index=face.index,
                              layout_engine=LAYOUT_ENGINE)


# Measuring is most of a layout's cost, and the same texts come back every second (the
# countdown redraws the prompt).
@functools.lru_cache(maxsize=8192)
def text_length(font: ImageFont.FreeTypeFont, text: str) -> float:
    return font.getlength(text)


@functools.lru_cache(maxsize=128)
def cjk_ink(font: ImageFont.FreeTypeFont) -> tuple[int, int]:
    """Top and bottom of a Chinese glyph's ink below the draw origin."""
    _, top, _, bottom = font.getbbox("国")
    return int(top), int(bottom)


_NOTO = Path("/usr/share/fonts/opentype/noto")
_WQY = Path("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc")
# Noto Sans CJK SC (Debian fonts-noto-cjk; index 2 of each collection is Simplified
# Chinese): drawn for screens, with a true bold, and the forms a mainland reader expects.
# WenQuanYi Zen Hei (fonts-wqy-zenhei, the OLED's font) is the fallback: one weight, and
# its outlines are coarser at 30 px and above. docs/screens.md says more.
COLOUR_FONT_SEARCH: tuple[tuple[FontFace, FontFace], ...] = (
    (FontFace(_NOTO / "NotoSansCJK-Regular.ttc", 2), FontFace(_NOTO / "NotoSansCJK-Bold.ttc", 2)),
    (FontFace(_WQY, 0), FontFace(_WQY, 0)),
)


@functools.lru_cache(maxsize=4)
def load_colour_fonts(setting: str = "") -> ColourFonts:
    """The colour screens' faces: `[display] font` ("path" or "path#N") for both weights
    when set, else the first family of COLOUR_FONT_SEARCH installed; HardwareNotFound
    saying what to install when there is none."""
    if setting:
        path, sep, index = setting.rpartition("#")
        face = (FontFace(Path(path), int(index)) if sep and index.isdigit()
                else FontFace(Path(setting), 0))
        candidates: tuple[tuple[FontFace, FontFace], ...] = ((face, face),)
    else:
        candidates = COLOUR_FONT_SEARCH
    for regular, bold in candidates:
        if regular.path.is_file() and bold.path.is_file():
            try:
                fonts = ColourFonts(regular, bold)
                fonts.get(24).getbbox("评")
                fonts.get(24, bold=True).getbbox("评")
                return fonts
            except OSError:
                continue
    raise HardwareNotFound(
        "no CJK font for the colour screen: install fonts-noto-cjk (sudo apt install "
        "fonts-noto-cjk) or fonts-wqy-zenhei, or set [display] font = \"/path/to/font.ttc\"")
