"""The pieces colour screens are built from: the window's band, the clerk's card, the
QR block, option buttons and their common label size, and the grid they sit in.
"""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageOps

from device.core.model import Option, Screen, Staff
from device.core.screens import QR_HINT, STAFF_ID_PREFIX
from drivers import qr
from drivers.colour_canvas import (
    BADGE,
    BAND,
    CARD,
    INK,
    LINE,
    MUTED,
    RGB,
    WHITE,
    Box,
    Canvas,
)
from drivers.colour_fonts import text_length
from drivers.colour_photos import PhotoSource, safe_photo


def title_band(c: Canvas, screen: Screen, right_text: str = "", right_badge: bool = False) -> int:
    """The window's band at the top; returns its bottom."""
    h = c.px(7)
    c.rect((0, 0, c.w, h), BAND)
    pad = c.px(2)
    right = c.w - pad
    if right_text:
        size = c.px(3.2)
        font = c.fonts.get(size, bold=True)
        tw = round(text_length(font, right_text))
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



def portrait_box(c: Canvas, box: Box, staff: Staff, photo: Image.Image | None) -> None:
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


def clerk_card(c: Canvas, box: Box, staff: Staff, photos: PhotoSource | None) -> None:
    x0, y0, x1, y1 = box
    c.rect(box, CARD, radius=c.px(1.2), outline=LINE)
    pad = c.px(1.5)
    ph = y1 - y0 - 2 * pad
    pw = min(ph * 3 // 4, (x1 - x0) // 3)
    portrait_box(c, (x0 + pad, y0 + pad, x0 + pad + pw, y0 + pad + ph), staff,
                  safe_photo(photos, staff))
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


def qr_block(c: Canvas, box: Box, url: str | None) -> None:
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


def qr_side(c: Canvas, url: str | None, avail: int) -> int:
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


def label_size(c: Canvas, options: list[Option], boxes: list[Box], size: int) -> int:
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
            if (any(text_length(font, ln) > x1 - x0 - 2 * pad for ln in lines)
                    or len(lines) * s * 1.25 > y1 - y0 - 2 * pad):
                ok = False
                break
        if ok:
            return s
        s -= 1
    return s


def button(c: Canvas, box: Box, option: Option, fill: RGB, ink: RGB, size: int,
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


def grid_boxes(area: Box, count: int, cols: int, gap: int) -> list[Box]:
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
