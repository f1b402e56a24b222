"""Find and load the CJK fonts the screens are drawn with, once per process.

`display.font` in the config names a font file; a face inside a collection is picked
with a suffix: "/path/wqy-zenhei.ttc#2". Without it the usual Debian paths are searched
in order of legibility on a 1-bit 128×64 panel (docs: NOTES.md, "luma").
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from device.ports import HardwareNotFound

SIZES = (11, 12, 16)

# Pillow picks raqm when libraqm and libfribidi are installed and its basic engine
# otherwise, and glyphs land about a pixel apart between the two: a screen would depend
# on optional system libraries (a fresh Debian or a Pi has no libfribidi0). The basic
# engine is always there and lays out Chinese left to right as the panel needs.
LAYOUT_ENGINE = ImageFont.Layout.BASIC

# A glyph every candidate must have, and the glyphs that set a face's vertical extent.
_PROBE = "评"
_CJK_EXTENT = "国谢满意评价您"


@dataclass(frozen=True)
class FontFile:
    """One face of a font file: `index` picks the face inside a .ttc collection."""

    path: Path
    index: int = 0
    # Bitmap fonts (PCF) exist at one pixel size only; None means any size.
    only_size: int | None = None

    def __str__(self) -> str:
        return f"{self.path}#{self.index}" if self.index else str(self.path)


_WQY = Path("/usr/share/fonts/truetype/wqy")
_X11 = Path("/usr/share/fonts/X11/misc")
_NOTO = Path("/usr/share/fonts/opentype/noto")
_UNIFONT = Path("/usr/share/fonts/opentype/unifont/unifont.otf")

# Index 2 of wqy-zenhei.ttc is "WenQuanYi Zen Hei Sharp": it carries hand-tuned bitmap
# strikes at 12 and 16 px, as crisp as the xfonts-wqy PCFs, so one file serves every
# size and the goldens depend on one package (fonts-wqy-zenhei). At 11 px every
# candidate is scaled from outlines: usable, but the renderer prefers 12 px.
_SEARCH: dict[int, tuple[FontFile, ...]] = {
    12: (
        FontFile(_WQY / "wqy-zenhei.ttc", 2),
        FontFile(_X11 / "wenquanyi_9pt.pcf", only_size=12),
        FontFile(_X11 / "wenquanyi_9pt.pcf.gz", only_size=12),
        FontFile(_WQY / "wqy-microhei.ttc", 0),
        FontFile(_NOTO / "NotoSansCJK-Regular.ttc", 2),  # index 2 = Simplified Chinese
        FontFile(Path("/usr/share/fonts/opentype/noto/NotoSerifCJK-Regular.ttc"), 2),
    ),
    16: (
        FontFile(_WQY / "wqy-zenhei.ttc", 2),
        FontFile(_UNIFONT),
        FontFile(_X11 / "wenquanyi_12pt.pcf", only_size=16),
        FontFile(_X11 / "wenquanyi_12pt.pcf.gz", only_size=16),
        FontFile(_WQY / "wqy-microhei.ttc", 0),
        FontFile(_NOTO / "NotoSansCJK-Regular.ttc", 2),
    ),
}
_SEARCH[11] = tuple(f for f in _SEARCH[12] if f.only_size is None)

# Collections whose best face for a small panel is not the first one.
_DEFAULT_INDEX = {"wqy-zenhei.ttc": 2, "NotoSansCJK-Regular.ttc": 2,
                  "NotoSerifCJK-Regular.ttc": 2}


@dataclass(frozen=True)
class Face:
    """A loaded font at one pixel size, with where its CJK ink starts and ends."""

    font: ImageFont.FreeTypeFont
    source: FontFile
    size: int
    ink_top: int      # offset from the draw origin to the top of CJK ink
    ink_height: int   # rows of CJK ink


@dataclass(frozen=True, eq=False)  # hashed by identity: the renderer caches per Fonts
class Fonts:
    """The faces the renderer uses, by pixel size (11, 12, 16)."""

    faces: dict[int, Face]

    def __getitem__(self, size: int) -> Face:
        return self.faces[size]

    def describe(self) -> str:
        """One line for the log: which file serves which size."""
        return ", ".join(f"{s}px={self.faces[s].source}" for s in sorted(self.faces))


def parse_font_setting(setting: str) -> FontFile:
    """`display.font` as a FontFile: "path", or "path#N" for face N of a collection."""
    path_text, sep, index_text = setting.rpartition("#")
    if sep and index_text.isdigit():
        return FontFile(Path(path_text), int(index_text))
    path = Path(setting)
    return FontFile(path, _DEFAULT_INDEX.get(path.name, 0))


def _draw_ink(font: ImageFont.FreeTypeFont, size: int,
              text: str) -> tuple[int, int, int, int] | None:
    """The ink box of `text` relative to its draw origin (measured, not from metrics:
    bitmap strikes report their whole cell)."""
    image = Image.new("1", (len(text) * size * 2 + 8, size * 3), 0)
    draw = ImageDraw.Draw(image)
    draw.fontmode = "1"
    draw.text((4, size), text, font=font, fill=255)
    box = image.getbbox()
    if box is None:
        return None
    return box[0] - 4, box[1] - size, box[2] - 4, box[3] - size


def _open(candidate: FontFile, size: int) -> Face:
    """Load one face at one size; OSError when the file is missing or cannot serve it."""
    font = ImageFont.truetype(str(candidate.path), size, index=candidate.index,
                              layout_engine=LAYOUT_ENGINE)
    ink = _draw_ink(font, size, _CJK_EXTENT)
    missing = _draw_ink(font, size, "\ufffe")  # a noncharacter: drawn as "missing glyph"
    if ink is None or _draw_ink(font, size, _PROBE) == missing:
        raise OSError(f"{candidate} has no Chinese glyphs")
    return Face(font, candidate, size, ink_top=ink[1], ink_height=ink[3] - ink[1])


def _first_usable(candidates: Sequence[FontFile], size: int) -> Face | None:
    for candidate in candidates:
        if candidate.only_size not in (None, size) or not candidate.path.is_file():
            continue
        try:
            return _open(candidate, size)
        except OSError:
            continue
    return None


@functools.lru_cache(maxsize=8)
def load_fonts(setting: str = "") -> Fonts:
    """The faces for sizes 11, 12 and 16, loaded once per setting (a .ttc costs ~50 ms).

    A configured font serves every size it can draw (a PCF has only its native size;
    the others come from the search). A configured font that cannot be used at all, or
    no CJK font on the system, raises HardwareNotFound saying what to install or set.
    """
    configured = parse_font_setting(setting) if setting else None
    faces: dict[int, Face] = {}
    if configured is not None:
        if not configured.path.is_file():
            raise HardwareNotFound(f"[display] font: no such file {str(configured.path)!r}")
        problems = []
        for size in SIZES:
            try:
                faces[size] = _open(configured, size)
            except OSError as e:
                problems.append(f"{size}px: {e}")
        if not faces:
            raise HardwareNotFound(
                f"[display] font {setting!r} cannot be used ({'; '.join(problems)}); "
                "name a font with Chinese glyphs, e.g. "
                "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc#2")
    for size in SIZES:
        if size not in faces:
            face = _first_usable(_SEARCH[size], size)
            if face is None:
                raise HardwareNotFound(
                    f"no CJK font found for {size}px text; install fonts-wqy-zenhei "
                    "(sudo apt install fonts-wqy-zenhei) or set [display] font = "
                    "\"/path/to/font.ttc\" in the device config")
            faces[size] = face
    return Fonts(faces)


def fonts_from_file(path: str | Path, index: int = 0) -> Fonts:
    """Every size from one face of one file, with no search (goldens pin their font)."""
    candidate = FontFile(Path(path), index)
    try:
        return Fonts({size: _open(candidate, size) for size in SIZES})
    except OSError as e:
        raise HardwareNotFound(f"font {candidate} cannot be used: {e}") from None
