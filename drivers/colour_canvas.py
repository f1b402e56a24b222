"""The drawing surface of colour screens: the palette, what a layout returns
(`ColourFrame`), and a canvas on which every text fits its box or is made smaller, then
cut with "…"; a text Pillow cannot draw is left out and logged, never the frame.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from PIL import Image, ImageDraw, ImageFont

from common.text import display_text, log_text
from drivers.colour_fonts import ColourFonts, cjk_ink, text_length

log = logging.getLogger(__name__)

RGB = tuple[int, int, int]
Box = tuple[int, int, int, int]   # x0, y0, x1, y1, ends exclusive


# A calm palette: a deep blue band for the window, warm white ground, and the five
# levels from green to red, each with text of at least 4.5:1 contrast on it.
BAND = (18, 70, 128)
GROUND = (247, 245, 240)
INK = (33, 37, 41)
MUTED = (92, 99, 106)
CARD = (255, 255, 255)
LINE = (218, 214, 206)
WHITE = (255, 255, 255)
BADGE = (176, 42, 32)
LEVEL_COLOURS: dict[int, tuple[RGB, RGB]] = {   # level -> (fill, text)
    5: ((22, 120, 60), WHITE),
    4: ((70, 140, 50), WHITE),
    3: ((236, 178, 46), INK),
    2: ((222, 110, 32), INK),
    1: ((196, 43, 33), WHITE),
}
REASON_FILL = (225, 232, 242)
SKIP_FILL = (233, 231, 226)
ERROR_INK = (170, 36, 26)

ELLIPSIS = "…"
# Two-line labels break after these (非常|不满意, 基本|满意), else in the middle.
_PREFIXES = ("非常", "基本")


# --- what a layout returns ----------------------------------------------------------

@dataclass
class ColourFrame:
    """A drawn screen: the image, the text as drawn (reading order, one line per text),
    the URL of the QR code drawn (or None), and each option's touch target by level."""

    image: Image.Image
    lines: list[str] = field(default_factory=list)
    qr: str | None = None
    boxes: dict[int, Box] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "\n".join(t for t in self.lines if t)



class Canvas:
    """Drawing with measuring: every text fits its box or is made smaller, then cut."""

    def __init__(self, size: tuple[int, int], fonts: ColourFonts) -> None:
        self.w, self.h = size
        self.u = min(self.w, self.h) / 50          # one unit: 9.6 px on 800×480
        self.fonts = fonts
        self.frame = ColourFrame(Image.new("RGB", size, GROUND))
        self.draw = ImageDraw.Draw(self.frame.image)

    def px(self, units: float) -> int:
        return max(1, round(units * self.u))

    def fit(self, text: str, width: int, size: int, bold: bool = False,
            floor: float = 0.6) -> tuple[ImageFont.FreeTypeFont, str]:
        """The largest size down to `floor`×`size` at which `text` fits `width`, else the
        smallest with the text cut and "…"."""
        smallest = max(6, int(size * floor))
        s = size
        while True:
            font = self.fonts.get(s, bold)
            if text_length(font, text) <= width:
                return font, text
            if s <= smallest:
                break
            s = max(smallest, int(s * 0.92))
        lo, hi, best = 0, len(text), ""
        while lo <= hi:
            mid = (lo + hi) // 2
            if text_length(font, text[:mid] + ELLIPSIS) <= width:
                best, lo = text[:mid] + ELLIPSIS, mid + 1
            else:
                hi = mid - 1
        return font, best if width >= text_length(font, ELLIPSIS) else ""

    def text(self, box: Box, text: str, size: int, *, bold: bool = False,
             fill: RGB = INK, align: str = "left", valign: str = "center",
             floor: float = 0.6, record: bool = True) -> int:
        """Draw `text` in `box`; returns the right edge of its ink."""
        text = display_text(text)
        x0, y0, x1, y1 = box
        if not text or x1 <= x0:
            return x0
        font, shown = self.fit(text, x1 - x0, size, bold, floor)
        if record:
            self.frame.lines.append(shown)
        if not shown:
            return x0
        width = round(text_length(font, shown))
        x = {"left": x0, "center": x0 + (x1 - x0 - width) // 2,
             "right": x1 - width}.get(align, x0)
        # Placed by the ink of a Chinese glyph, not by ascender and descender, so that
        # Chinese sits in the middle of a button whatever the font's metrics.
        ink_top, ink_bottom = cjk_ink(font)
        if valign == "top":
            y = y0 - ink_top
        elif valign == "bottom":
            y = y1 - ink_bottom
        else:
            y = (y0 + y1 - ink_top - ink_bottom) // 2
        try:
            self.draw.text((x, y), shown, font=font, fill=fill)
        except (OSError, ValueError, RuntimeError, UnicodeError) as e:
            log.warning("text %s left out of the frame: %s", log_text(shown), e)
        return x + width

    def lines_fit(self, text: str, width: int, size: int, bold: bool) -> list[str]:
        """`text` as one line when it fits at `size`, else two (after 非常/基本, else
        in the middle); a word of three characters or fewer is never broken."""
        if text_length(self.fonts.get(size, bold), text) <= width or len(text) <= 3:
            return [text]
        cut = next((len(p) for p in _PREFIXES if text.startswith(p) and len(text) > len(p)),
                   (len(text) + 1) // 2)
        return [text[:cut], text[cut:]]

    def rect(self, box: Box, fill: RGB, radius: int = 0, outline: RGB | None = None,
             width: int = 1) -> None:
        x0, y0, x1, y1 = box
        self.draw.rounded_rectangle((x0, y0, x1 - 1, y1 - 1), radius=radius, fill=fill,
                                    outline=outline, width=width)
