"""The layout of colour panels (SPEC §10): a screen view model (device.core.model.Screen)
drawn as an RGB image for 480×320, 800×480, 1024×600 or any size between, landscape or
portrait, with the touch target of every option.

Sizes follow the panel: `unit` is a fiftieth of the shorter side, so a 7-inch 800×480
panel (about 154 × 86 mm) sets body text at ~24 px (4.3 mm, legible from 60 cm) and no
touch button smaller than 62 px (12 mm). Only this module knows where things go on a
colour panel; the words come from device.core.screens, the QR code from drivers/qr.py.

Text is antialiased with the basic layout engine (drivers/fonts.py says why: the same
pixels with and without libraqm). Every text is measured and, when it does not fit, set
smaller down to a floor and then cut with "…"; a text Pillow cannot draw is left out and
logged, never the frame.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps

from common.text import display_text, log_text
from device.core.model import LEVEL_LABELS, Option, Screen, Staff
from device.core.screens import (
    OFFLINE_BADGE,
    QR_HINT,
    STAFF_ID_PREFIX,
    countdown_text,
)
from device.ports import HardwareNotFound
from drivers import qr
from drivers.fonts import LAYOUT_ENGINE

log = logging.getLogger(__name__)

RGB = tuple[int, int, int]
Box = tuple[int, int, int, int]   # x0, y0, x1, y1, ends exclusive

# Sizes the simulator and the goldens know; a framebuffer may be any size.
COLOUR_SIZES = ((480, 320), (800, 480), (1024, 600))
MIN_SIDE = 240

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
_SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


# --- fonts -------------------------------------------------------------------------

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
def _length(font: ImageFont.FreeTypeFont, text: str) -> float:
    return font.getlength(text)


@functools.lru_cache(maxsize=128)
def _cjk_ink(font: ImageFont.FreeTypeFont) -> tuple[int, int]:
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


PhotoSource = Callable[[str], Image.Image | None]


class _Canvas:
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
            if _length(font, text) <= width:
                return font, text
            if s <= smallest:
                break
            s = max(smallest, int(s * 0.92))
        lo, hi, best = 0, len(text), ""
        while lo <= hi:
            mid = (lo + hi) // 2
            if _length(font, text[:mid] + ELLIPSIS) <= width:
                best, lo = text[:mid] + ELLIPSIS, mid + 1
            else:
                hi = mid - 1
        return font, best if width >= _length(font, ELLIPSIS) else ""

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
        width = round(_length(font, shown))
        x = {"left": x0, "center": x0 + (x1 - x0 - width) // 2,
             "right": x1 - width}.get(align, x0)
        # Placed by the ink of a Chinese glyph, not by ascender and descender, so that
        # Chinese sits in the middle of a button whatever the font's metrics.
        ink_top, ink_bottom = _cjk_ink(font)
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
        if _length(self.fonts.get(size, bold), text) <= width or len(text) <= 3:
            return [text]
        cut = next((len(p) for p in _PREFIXES if text.startswith(p) and len(text) > len(p)),
                   (len(text) + 1) // 2)
        return [text[:cut], text[cut:]]

    def rect(self, box: Box, fill: RGB, radius: int = 0, outline: RGB | None = None,
             width: int = 1) -> None:
        x0, y0, x1, y1 = box
        self.draw.rounded_rectangle((x0, y0, x1 - 1, y1 - 1), radius=radius, fill=fill,
                                    outline=outline, width=width)


# --- pieces -------------------------------------------------------------------------

def _band(c: _Canvas, screen: Screen, right_text: str = "", right_badge: bool = False) -> int:
    """The window's band at the top; returns its bottom."""
    h = c.px(7)
    c.rect((0, 0, c.w, h), BAND)
    pad = c.px(2)
    right = c.w - pad
    if right_text:
        size = c.px(3.2)
        font = c.fonts.get(size, bold=True)
        tw = round(_length(font, right_text))
        if right_badge:
            bx0 = right - tw - 2 * c.px(1)
            c.rect((bx0, c.px(1.5), right, h - c.px(1.5)), BADGE, radius=c.px(0.8))
            c.text((bx0, 0, right, h), right_text, size, bold=True, fill=WHITE,
                   align="center", record=False)
            right = bx0 - pad
        else:
            c.text((right - tw, 0, right, h), right_text, size, bold=True, fill=WHITE,
                   align="right", record=False)
            right -= tw + pad
    c.text((pad, 0, right, h), screen.window_name, c.px(3.6), bold=True, fill=WHITE,
           floor=0.75)
    c.frame.lines.append(right_text)  # read after the window's name
    return h


def _safe_photo(photos: PhotoSource | None, staff: Staff) -> Image.Image | None:
    if photos is None or not _SAFE_ID.fullmatch(staff.staff_id):
        return None
    try:
        return photos(staff.staff_id)
    except OSError as e:
        log.warning("photo of %s not shown: %s", log_text(staff.staff_id), e)
        return None


def _portrait_box(c: _Canvas, box: Box, staff: Staff, photo: Image.Image | None) -> None:
    x0, y0, x1, y1 = box
    if photo is not None:
        fitted = ImageOps.fit(photo.convert("RGB"), (x1 - x0, y1 - y0),
                              Image.Resampling.LANCZOS, centering=(0.5, 0.3))
        mask = Image.new("L", fitted.size, 0)
        ImageDraw.Draw(mask).rounded_rectangle((0, 0, fitted.width - 1, fitted.height - 1),
                                               radius=c.px(1), fill=255)
        c.frame.image.paste(fitted, (x0, y0), mask)
        return
    # The placeholder: the surname on a soft disc, as contact lists show a person
    # without a picture (the 工号's first character without a name).
    c.rect(box, (226, 232, 240), radius=c.px(1))
    side = min(x1 - x0, y1 - y0) * 3 // 4
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    c.draw.ellipse((cx - side // 2, cy - side // 2, cx + side // 2, cy + side // 2),
                   fill=(120, 144, 176))
    initial = (staff.staff_name or staff.staff_id or "?")[:1]
    c.text((cx - side // 2, cy - side // 2, cx + side // 2, cy + side // 2), initial,
           side // 2, bold=True, fill=WHITE, align="center", record=False)


def _clerk_card(c: _Canvas, box: Box, staff: Staff, photos: PhotoSource | None) -> None:
    x0, y0, x1, y1 = box
    c.rect(box, CARD, radius=c.px(1.2), outline=LINE)
    pad = c.px(1.5)
    ph = y1 - y0 - 2 * pad
    pw = min(ph * 3 // 4, (x1 - x0) // 3)
    _portrait_box(c, (x0 + pad, y0 + pad, x0 + pad + pw, y0 + pad + ph), staff,
                  _safe_photo(photos, staff))
    tx = x0 + 2 * pad + pw
    mid = (y0 + y1) // 2
    if staff.staff_name:
        c.text((tx, y0 + pad, x1 - pad, mid), staff.staff_name, c.px(5), bold=True,
               valign="bottom")
    if staff.staff_id:
        top = mid + c.px(1) if staff.staff_name else y0 + pad
        c.text((tx, top, x1 - pad, y1 - pad if not staff.staff_name else top + c.px(4)),
               f"{STAFF_ID_PREFIX} {staff.staff_id}", c.px(3.2), fill=MUTED,
               valign="top" if staff.staff_name else "center")


def _qr_block(c: _Canvas, box: Box, url: str | None) -> None:
    """The QR code in a white card with 扫码评价 under it; nothing when it cannot fit."""
    if not url:
        return
    x0, y0, x1, y1 = box
    caption = c.px(4.5)
    side = min(x1 - x0, y1 - y0 - caption)
    if side <= 0:
        return
    qx = x0 + (x1 - x0 - side) // 2
    c.rect((qx - c.px(0.6), y0 - c.px(0.6), qx + side + c.px(0.6), y0 + side + caption),
           CARD, radius=c.px(1), outline=LINE)
    if qr.draw(c.frame.image, url, (qx, y0, side), light=WHITE, dark=(0, 0, 0)):
        c.frame.qr = url
        c.text((qx, y0 + side, qx + side, y0 + side + caption), QR_HINT, c.px(3),
               bold=True, fill=INK, align="center")


def _qr_side(c: _Canvas, url: str | None, avail: int) -> int:
    """How many pixels a QR code wants (0 without one): phones read 2+ px per module."""
    if not url:
        return 0
    try:
        modules = len(qr.matrix(url))
    except ValueError:
        return 0
    best = 0
    for scale in range(12, 0, -1):
        side = (modules + 2 * qr.QUIET) * scale
        if side <= avail:
            best = side
            break
    return best


def _label_size(c: _Canvas, options: list[Option], boxes: list[Box], size: int) -> int:
    """One size for every button's label (a row of buttons set in one size reads as a
    scale): the largest down to a third of `size` at which each label fits its button, on
    one line or two; a label that fits at none is cut at that floor."""
    pad = c.px(1)
    s = size
    while s > max(12, size // 3):
        ok = True
        for option, (x0, y0, x1, y1) in zip(options, boxes, strict=False):
            lines = c.lines_fit(option.label, x1 - x0 - 2 * pad, s, True)
            font = c.fonts.get(s, True)
            if (any(_length(font, ln) > x1 - x0 - 2 * pad for ln in lines)
                    or len(lines) * s * 1.25 > y1 - y0 - 2 * pad):
                ok = False
                break
        if ok:
            return s
        s -= 1
    return s


def _button(c: _Canvas, box: Box, option: Option, fill: RGB, ink: RGB, size: int,
            key_hint: bool = True) -> None:
    x0, y0, x1, y1 = box
    c.rect(box, fill, radius=c.px(1.4))
    pad = c.px(1)
    lines = c.lines_fit(option.label, x1 - x0 - 2 * pad, size, True)
    if len(lines) == 1:
        c.text((x0 + pad, y0, x1 - pad, y1), lines[0], size, bold=True, fill=ink,
               align="center", floor=1.0)
    else:
        step = int(size * 1.25)
        top = (y0 + y1) // 2 - step
        shown = []
        for i, line in enumerate(lines):
            font, text = c.fit(line, x1 - x0 - 2 * pad, size, True, 1.0)
            shown.append(text)
            c.text((x0 + pad, top + i * step, x1 - pad, top + (i + 1) * step), text,
                   int(font.size), bold=True, fill=ink, align="center", record=False)
        c.frame.lines.append("".join(shown))
    if key_hint:  # the key that picks it, for a panel with keys as well
        k = c.px(2.4)
        c.text((x0 + c.px(0.8), y0 + c.px(0.5), x0 + c.px(0.8) + k, y0 + c.px(0.5) + k),
               str(option.level), k, fill=ink, align="left", valign="top", record=False)


def _grid(area: Box, count: int, cols: int, gap: int) -> list[Box]:
    x0, y0, x1, y1 = area
    rows = -(-count // cols)
    cw = (x1 - x0 - gap * (cols - 1)) // cols
    rh = (y1 - y0 - gap * (rows - 1)) // rows
    boxes = []
    for i in range(count):
        r, col = divmod(i, cols)
        bx = x0 + col * (cw + gap)
        by = y0 + r * (rh + gap)
        boxes.append((bx, by, bx + cw, by + rh))
    return boxes


# --- screens ------------------------------------------------------------------------

def _idle(c: _Canvas, screen: Screen, photos: PhotoSource | None) -> None:
    top = _band(c, screen, OFFLINE_BADGE if screen.offline else "", right_badge=True)
    m = c.px(2.5)
    landscape = c.w >= c.h
    bottom = c.h - m
    # A press now rates the window (allow_spontaneous): on a touch panel the levels must
    # be there to touch, a row of buttons across the foot of the screen.
    levels = ([Option(level, LEVEL_LABELS[level]) for level in (5, 4, 3, 2, 1)]
              if screen.spontaneous else [])
    boxes: list[Box] = []
    if levels:
        button_h = max(min_button(c.w, c.h), c.px(13 if landscape else 15))
        boxes = _grid((m, bottom - button_h, c.w - m, bottom), len(levels), len(levels),
                      c.px(1.2))
        bottom -= button_h + c.px(2)
    caption = c.px(4.5)
    qr_avail = (min(bottom - top - m - caption, (c.w - 2 * m) * 2 // 5) if landscape
                else min(c.w - 2 * m, (bottom - top) * 2 // 5))
    side = _qr_side(c, screen.qr_url, qr_avail)
    text_area = (m, top + m, c.w - m, bottom)
    if side:
        if landscape:
            _qr_block(c, (c.w - m - side, top + m + c.px(1), c.w - m, bottom), screen.qr_url)
            text_area = (m, top + m, c.w - 2 * m - side, bottom)
        else:
            _qr_block(c, (m, bottom - side - caption, c.w - m, bottom), screen.qr_url)
            text_area = (m, top + m, c.w - m, bottom - m - side - caption)
    x0, y0, x1, y1 = text_area
    if screen.staff is not None:
        card_h = min(c.px(19), (y1 - y0) * 3 // 5)
        _clerk_card(c, (x0, y0, x1, y0 + card_h), screen.staff, photos)
        y0 += card_h + c.px(2)
    welcome_h = c.px(9)
    invite_h = c.px(6) if screen.lines else 0
    if y1 - y0 >= welcome_h + invite_h:
        wy = y0 + (y1 - y0 - welcome_h - invite_h) // 2
        c.text((x0, wy, x1, wy + welcome_h), screen.heading, c.px(7.5), bold=True, fill=BAND,
               align="center")
        if screen.lines:
            c.text((x0, wy + welcome_h, x1, wy + welcome_h + invite_h), screen.lines[0],
                   c.px(3.6), fill=MUTED, align="center")
    elif y1 - y0 >= c.px(5):  # little room beside a clerk: the invitation says it all
        c.text((x0, y0, x1, y1), screen.lines[0] if screen.lines else screen.heading,
               c.px(4), bold=True, fill=BAND, align="center")
    if levels:
        size = _label_size(c, levels, boxes, c.px(4.2))
        for option, box in zip(levels, boxes, strict=True):
            fill, ink = LEVEL_COLOURS[option.level]
            _button(c, box, option, fill, ink, size)
            c.frame.boxes[option.level] = box


def _prompt(c: _Canvas, screen: Screen) -> None:
    countdown = countdown_text(screen.remaining_s)
    top = _band(c, screen, countdown)
    m = c.px(2.5)
    landscape = c.w >= c.h
    head_h = c.px(7)
    c.text((m, top + m, c.w - m, top + m + head_h), screen.heading, c.px(4.6), bold=True,
           floor=0.65)
    line_h = c.px(5)
    c.text((m, top + m + head_h, c.w - m, top + m + head_h + line_h), display_line(screen),
           c.px(3.4), fill=MUTED)
    y0 = top + m + head_h + line_h + c.px(2)
    area = (m, y0, c.w - m, c.h - m)
    gap = c.px(1.6)
    n = max(1, len(screen.options))
    least = min_button(c.w, c.h)
    caption = c.px(4.5)
    if landscape:
        # The QR code takes what the buttons leave above their least width.
        room = c.w - 2 * m - n * least - (n - 1) * gap - m
        side = _qr_side(c, screen.qr_url, min(c.h - y0 - m - caption, c.w // 4, room))
        size = c.px(4.2)
        boxes = _grid((m, y0, c.w - 2 * m - side, c.h - m) if side else area, n, n, gap)
        if side and _label_size(c, list(screen.options), boxes, size) < c.px(2.6):
            side = 0  # a small panel: legible levels first, the code is on idle
            boxes = _grid(area, n, n, gap)
        if side:
            _qr_block(c, (c.w - m - side, y0, c.w - m, c.h - m), screen.qr_url)
    else:
        room = c.h - m - y0 - n * least - (n - 1) * gap - m - caption
        side = _qr_side(c, screen.qr_url, min(room, c.w // 2))
        if side:
            _qr_block(c, ((c.w - side) // 2, c.h - m - side - caption, (c.w + side) // 2,
                          c.h - m), screen.qr_url)
            area = (m, y0, c.w - m, c.h - 2 * m - side - caption)
        boxes = _grid(area, n, 1, gap)
        size = c.px(5)
    size = _label_size(c, list(screen.options), boxes, size)
    for option, box in zip(screen.options, boxes, strict=False):
        fill, ink = LEVEL_COLOURS.get(option.level, (REASON_FILL, INK))
        _button(c, box, option, fill, ink, size)
        c.frame.boxes[option.level] = box


def min_button(width: int, height: int) -> int:
    """The least short side of a touch button: 13 % of the panel's shorter side, 62 px
    on a 7-inch 800×480 panel (86 mm high: 12 mm, a fingertip with room to spare)."""
    return -(-min(width, height) * 13 // 100)


def display_line(screen: Screen) -> str:
    return screen.lines[0] if screen.lines else ""


def _reasons(c: _Canvas, screen: Screen) -> None:
    top = _band(c, screen, countdown_text(screen.remaining_s))
    m = c.px(2.5)
    head_h = c.px(8)
    c.text((m, top + m, c.w - m, top + m + head_h), screen.heading, c.px(4.8), bold=True)
    y0 = top + m + head_h + c.px(1)
    picks = [o for o in screen.options if o.code is not None]
    skips = [o for o in screen.options if o.code is None]
    gap = c.px(1.6)
    skip_h = c.px(9)
    area = (m, y0, c.w - m, c.h - m - (skip_h + gap if skips else 0))
    cols = 2 if c.w >= c.h and len(picks) > 1 else 1
    grid = _grid(area, max(1, len(picks)), cols, gap)
    size = _label_size(c, picks, grid, c.px(4.2))
    for option, box in zip(picks, grid, strict=False):
        _button(c, box, option, REASON_FILL, INK, size)
        c.frame.boxes[option.level] = box
    for option in skips[:1]:
        width = max(c.px(24), (c.w - 2 * m) // 3)
        box = (c.w - m - width, c.h - m - skip_h, c.w - m, c.h - m)
        _button(c, box, option, SKIP_FILL, MUTED, c.px(4))
        c.frame.boxes[option.level] = box


def _centred(c: _Canvas, screen: Screen, colour: RGB, band: bool) -> None:
    top = _band(c, screen) if band else 0
    m = c.px(3)
    big = c.px(9)
    lines = [ln for ln in screen.lines if ln]
    small = c.px(6)
    block = big + small * len(lines)
    y = top + max(m, (c.h - top - block) // 2)
    c.text((m, y, c.w - m, y + big), screen.heading, c.px(8), bold=True, fill=colour,
           align="center")
    y += big
    for i, line in enumerate(lines):
        if screen.name == "thanks" and screen.level in LEVEL_COLOURS and i == 0:
            fill, ink = LEVEL_COLOURS[screen.level]
            font, shown = c.fit(line, c.w - 2 * m, c.px(4.2), True)
            w = round(_length(font, shown)) + c.px(6)
            x = (c.w - w) // 2
            c.rect((x, y + c.px(1), x + w, y + small), fill, radius=c.px(2.5))
            c.text((x, y + c.px(1), x + w, y + small), line, c.px(4.2), bold=True, fill=ink,
                   align="center")
        else:
            c.text((m, y, c.w - m, y + small), line, c.px(4),
                   fill=MUTED if screen.name != "error" else INK, align="center")
        y += small


def layout(screen: Screen, size: tuple[int, int], fonts: ColourFonts,
           photos: PhotoSource | None = None) -> ColourFrame:
    """`screen` drawn at `size` (width, height): image, text, QR and touch targets."""
    w, h = size
    if min(w, h) < MIN_SIDE:
        raise ValueError(f"a colour layout needs at least {MIN_SIDE} px a side, got {w}×{h}")
    c = _Canvas(size, fonts)
    if screen.name == "idle":
        _idle(c, screen, photos)
    elif screen.name == "prompt":
        _prompt(c, screen)
    elif screen.name == "reasons":
        _reasons(c, screen)
    elif screen.name == "thanks":
        _centred(c, screen, (22, 120, 60), band=False)
    elif screen.name == "paused":
        _centred(c, screen, BAND, band=True)
    else:
        _centred(c, screen, ERROR_INK, band=False)
    return c.frame


class PhotoDir:
    """`[display] staff_photos_dir`: `<staff_id>.png` or `.jpg`, read once per file
    version (a new photo is picked up when its mtime changes), bounded in memory."""

    MAX_PIXELS = 4096 * 4096

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self._cache: dict[str, tuple[float, Image.Image | None]] = {}

    def __call__(self, staff_id: str) -> Image.Image | None:
        if not _SAFE_ID.fullmatch(staff_id):
            return None  # never a path outside the directory
        for ext in (".png", ".jpg", ".jpeg"):
            path = self.dir / f"{staff_id}{ext}"
            try:
                mtime = path.stat().st_mtime
            except OSError:
                continue
            cached = self._cache.get(staff_id)
            if cached is not None and cached[0] == mtime:
                return cached[1]
            image: Image.Image | None
            try:
                with Image.open(path) as raw:
                    if raw.width * raw.height > self.MAX_PIXELS:
                        raise OSError(f"{raw.width}×{raw.height} is too large")
                    raw.thumbnail((600, 800))
                    image = ImageOps.exif_transpose(raw).convert("RGB")
            except (OSError, ValueError, Image.DecompressionBombError) as e:
                log.warning("staff photo %s not used: %s", path, e)
                image = None
            if len(self._cache) > 64:
                self._cache.clear()
            self._cache[staff_id] = (mtime, image)
            return image
        return None
