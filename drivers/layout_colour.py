"""The layout of colour panels (SPEC §10): a screen view model (device.core.model.Screen)
drawn as an RGB image for 480×320, 800×480, 1024×600 or any size between, landscape or
portrait, with the touch target of every option.

Sizes follow the panel: `unit` is a fiftieth of the shorter side, so a 7-inch 800×480
panel (about 154 × 86 mm) sets body text at ~24 px (4.3 mm, legible from 60 cm) and no
touch button smaller than 62 px (12 mm). Only this module knows where things go on a
colour panel; the words come from device.core.screens, the QR code from drivers/qr.py.

This module arranges each screen; the pieces it places are in drivers/colour_pieces.py,
the canvas that fits every text and the palette in drivers/colour_canvas.py, the fonts in
drivers/colour_fonts.py and staff photos in drivers/colour_photos.py.
"""

from __future__ import annotations

from device.core.model import LEVEL_LABELS, Option, Screen
from device.core.screens import OFFLINE_BADGE, countdown_text
from drivers.colour_canvas import (
    BAND,
    ERROR_INK,
    INK,
    LEVEL_COLOURS,
    MUTED,
    REASON_FILL,
    RGB,
    SKIP_FILL,
    Box,
    Canvas,
    ColourFrame,
)
from drivers.colour_fonts import ColourFonts, text_length
from drivers.colour_photos import PhotoSource
from drivers.colour_pieces import (
    button,
    clerk_card,
    grid_boxes,
    label_size,
    qr_block,
    qr_side,
    title_band,
)

# Sizes the simulator and the goldens know; a framebuffer may be any size.
COLOUR_SIZES = ((480, 320), (800, 480), (1024, 600))
MIN_SIDE = 240


# --- screens ------------------------------------------------------------------------

def _idle(c: Canvas, screen: Screen, photos: PhotoSource | None) -> None:
    top = title_band(c, screen, OFFLINE_BADGE if screen.offline else "", right_badge=True)
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
        boxes = grid_boxes((m, bottom - button_h, c.w - m, bottom), len(levels), len(levels),
                      c.px(1.2))
        bottom -= button_h + c.px(2)
    caption = c.px(4.5)
    qr_avail = (min(bottom - top - m - caption, (c.w - 2 * m) * 2 // 5) if landscape
                else min(c.w - 2 * m, (bottom - top) * 2 // 5))
    side = qr_side(c, screen.qr_url, qr_avail)
    text_area = (m, top + m, c.w - m, bottom)
    if side:
        if landscape:
            qr_block(c, (c.w - m - side, top + m + c.px(1), c.w - m, bottom), screen.qr_url)
            text_area = (m, top + m, c.w - 2 * m - side, bottom)
        else:
            qr_block(c, (m, bottom - side - caption, c.w - m, bottom), screen.qr_url)
            text_area = (m, top + m, c.w - m, bottom - m - side - caption)
    x0, y0, x1, y1 = text_area
    if screen.staff is not None:
        card_h = min(c.px(19), (y1 - y0) * 3 // 5)
        clerk_card(c, (x0, y0, x1, y0 + card_h), screen.staff, photos)
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
        size = label_size(c, levels, boxes, c.px(4.2))
        for option, box in zip(levels, boxes, strict=True):
            fill, ink = LEVEL_COLOURS[option.level]
            button(c, box, option, fill, ink, size)
            c.frame.boxes[option.level] = box


def _prompt(c: Canvas, screen: Screen) -> None:
    countdown = countdown_text(screen.remaining_s)
    top = title_band(c, screen, countdown)
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
        side = qr_side(c, screen.qr_url, min(c.h - y0 - m - caption, c.w // 4, room))
        size = c.px(4.2)
        boxes = grid_boxes((m, y0, c.w - 2 * m - side, c.h - m) if side else area, n, n, gap)
        if side and label_size(c, list(screen.options), boxes, size) < c.px(2.6):
            side = 0  # a small panel: legible levels first, the code is on idle
            boxes = grid_boxes(area, n, n, gap)
        if side:
            qr_block(c, (c.w - m - side, y0, c.w - m, c.h - m), screen.qr_url)
    else:
        room = c.h - m - y0 - n * least - (n - 1) * gap - m - caption
        side = qr_side(c, screen.qr_url, min(room, c.w // 2))
        if side:
            qr_block(c, ((c.w - side) // 2, c.h - m - side - caption, (c.w + side) // 2,
                          c.h - m), screen.qr_url)
            area = (m, y0, c.w - m, c.h - 2 * m - side - caption)
        boxes = grid_boxes(area, n, 1, gap)
        size = c.px(5)
    size = label_size(c, list(screen.options), boxes, size)
    for option, box in zip(screen.options, boxes, strict=False):
        fill, ink = LEVEL_COLOURS.get(option.level, (REASON_FILL, INK))
        button(c, box, option, fill, ink, size)
        c.frame.boxes[option.level] = box


def min_button(width: int, height: int) -> int:
    """The least short side of a touch button: 13 % of the panel's shorter side, 62 px
    on a 7-inch 800×480 panel (86 mm high: 12 mm, a fingertip with room to spare)."""
    return -(-min(width, height) * 13 // 100)


def display_line(screen: Screen) -> str:
    return screen.lines[0] if screen.lines else ""


def _reasons(c: Canvas, screen: Screen) -> None:
    top = title_band(c, screen, countdown_text(screen.remaining_s))
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
    grid = grid_boxes(area, max(1, len(picks)), cols, gap)
    size = label_size(c, picks, grid, c.px(4.2))
    for option, box in zip(picks, grid, strict=False):
        button(c, box, option, REASON_FILL, INK, size)
        c.frame.boxes[option.level] = box
    for option in skips[:1]:
        width = max(c.px(24), (c.w - 2 * m) // 3)
        box = (c.w - m - width, c.h - m - skip_h, c.w - m, c.h - m)
        button(c, box, option, SKIP_FILL, MUTED, c.px(4))
        c.frame.boxes[option.level] = box


def _centred(c: Canvas, screen: Screen, colour: RGB, band: bool) -> None:
    top = title_band(c, screen) if band else 0
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
            w = round(text_length(font, shown)) + c.px(6)
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
    c = Canvas(size, fonts)
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
