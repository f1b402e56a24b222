"""Draw a screen as a 128×64 1-bit image: the one place every frame is drawn.

`render` is pure and deterministic (goldens in tests/golden compare it pixel for pixel);
`frame_bytes` packs an image the way the simulator socket reports it (SPEC §8).
Rows come from drivers.layout_oled; this module only decides where the ink goes, so
that every row stays on the panel and clear of its neighbours.

Rendering is total: whatever text a row holds, a frame comes out. The view model's
texts are display text already; each row's text is normalised again here, and a row
Pillow still cannot draw is left out (and logged) rather than losing the whole frame.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, replace

from PIL import Image, ImageDraw

from common.text import display_text, log_text
from device.core.model import Screen
from drivers import qr
from drivers.fonts import Face, Fonts
from drivers.layout_oled import HEIGHT, WIDTH, Row, layout, qr_box

log = logging.getLogger(__name__)

ELLIPSIS = "…"
GAP = 3            # px kept free between two rows sharing a line
BADGE_PAD_X = 2    # white margin left and right of an inverted badge's text
KEY_CAP_PAD = 2    # white margin left and right of the digit in a key cap
KEY_CAP_GAP = 2    # px between a key cap and its label
FRAME_BYTES = WIDTH * HEIGHT // 8
# Mode "1" stores whatever fill it is given; 255 is the value Pillow itself uses for
# "on" (PNG load, convert), so goldens compare equal pixel for pixel.
LIT, DARK = 255, 0
# What Pillow and FreeType raise for text they cannot lay out or draw (raqm, for one,
# refuses line breaks: NOTES.md); anything else is a bug that must not be hidden.
_DRAW_ERRORS = (OSError, ValueError, RuntimeError, UnicodeError)


@dataclass(frozen=True)
class Run:
    """Text drawn with its origin at (x, y); unlit text is black on a white box."""

    x: int
    y: int
    text: str
    face: Face
    lit: bool = True


@dataclass(frozen=True)
class Placed:
    """One row resolved to pixels: white boxes first, then text runs on top."""

    row: Row
    boxes: tuple[tuple[int, int, int, int], ...]  # inclusive x0, y0, x1, y1
    runs: tuple[Run, ...]
    x0: int   # horizontal extent the row occupies, end exclusive
    x1: int
    # The row's band: its ink plus one pixel above and below (accents, descenders, the
    # boxes of badges and key caps), within the panel, end exclusive. Ink is clipped to
    # it, so a glyph taller than the font's Chinese (stacked combining marks, say) never
    # reaches the next row or leaves the panel.
    y0: int = 0
    y1: int = HEIGHT

    @property
    def clip(self) -> tuple[int, int, int, int]:
        """The box (x0, y0, x1, y1, ends exclusive) the row may ink."""
        return self.x0, self.y0, self.x1, self.y1


# Measuring is most of a frame's cost; the same strings come back on every frame.
@functools.lru_cache(maxsize=4096)
def _extent(face: Face, text: str) -> tuple[int, int]:
    """(left overhang, width) of `text` drawn at an origin: ink may start left of it."""
    if not text:
        return 0, 0
    # In mode "1", the mode frames are drawn in: hinting differs from the antialiased
    # default, and a glyph can ink a column left of where the default says it starts.
    left, _, right, _ = face.font.getbbox(text, mode="1")
    overhang = max(0, -int(left))
    return overhang, overhang + max(math.ceil(face.font.getlength(text)), int(right))


@functools.lru_cache(maxsize=4096)
def _advance(face: Face, char: str) -> float:
    return face.font.getlength(char)


def _is_wide(face: Face, char: str) -> bool:
    """A full-width glyph: its cell has a blank column on the right we may give up."""
    return _advance(face, char) >= face.size


def _condensed_runs(face: Face, text: str, squeeze: int) -> tuple[list[tuple[int, str]], int]:
    """Glyph x positions with `squeeze` px taken out after wide glyphs, spread evenly.

    CJK glyphs at 12/16 px leave one blank column on the right of their cell; giving
    that column up keeps a 12 px sentence at 12 px instead of dropping to a blurry
    11 px outline rendering. Returns the positions and the resulting width.
    """
    eligible = [i for i, ch in enumerate(text[:-1]) if _is_wide(face, ch)]
    chosen = {eligible[j] for j in range(len(eligible))
              if (j + 1) * squeeze // len(eligible) > j * squeeze // len(eligible)}
    overhang, _ = _extent(face, text)
    positions: list[tuple[int, str]] = []
    x = float(overhang)
    removed = 0
    for i, ch in enumerate(text):
        positions.append((round(x) - removed, ch))
        x += _advance(face, ch)
        if i in chosen:
            removed += 1
    last_x, last = positions[-1]
    _, last_width = _extent(face, last)
    return positions, last_x + last_width


def _fit(face: Face, text: str, avail: int) -> tuple[list[tuple[int, str]], int] | None:
    """Positions (relative to the row's left edge) that fit `avail` px, or None."""
    overhang, width = _extent(face, text)
    if width <= avail:
        return [(overhang, text)], width
    eligible = sum(1 for ch in text[:-1] if _is_wide(face, ch))
    squeeze = width - avail
    if squeeze <= eligible:
        return _condensed_runs(face, text, squeeze)
    return None


def _cut(face: Face, text: str, avail: int) -> tuple[list[tuple[int, str]], int]:
    """The longest prefix plus "…" that fits, cut between characters."""
    best: tuple[list[tuple[int, str]], int] = ([], 0)  # not even "…": draw nothing
    lo, hi = 0, len(text) - 1  # binary search: a longer prefix is never narrower
    while lo <= hi:
        end = (lo + hi) // 2
        fitted = _fit(face, text[:end] + ELLIPSIS, avail)
        if fitted is None:
            hi = end - 1
        else:
            best, lo = fitted, end + 1
    return best


def _text_runs(row: Row, fonts: Fonts, avail: int) -> tuple[Face, list[tuple[int, str]], int]:
    sizes = [row.size] + ([11] if row.shrink and row.size > 11 else [])
    for size in sizes:
        fitted = _fit(fonts[size], row.text, avail)
        if fitted is not None:
            return fonts[size], *fitted
    face = fonts[row.size]
    return face, *_cut(face, row.text, avail)


def _key_cap_width(face: Face) -> int:
    widths = [_extent(face, d)[1] for d in "12345"]
    return max(widths) + 2 * KEY_CAP_PAD


@functools.lru_cache(maxsize=512)  # a new countdown only re-places its own row
def _place(row: Row, fonts: Fonts, left: int, right: int) -> Placed:
    """Resolve `row` inside the horizontal span [left, right)."""
    face = fonts[row.size]
    prefix = 0
    if row.key is not None:
        prefix = _key_cap_width(face) + KEY_CAP_GAP
    pad = BADGE_PAD_X if row.invert else 0
    avail = right - left - prefix - 2 * pad
    text_face, positions, text_width = _text_runs(row, fonts, avail)
    width = prefix + text_width + 2 * pad
    if row.align == "right":
        x = right - width
    elif row.align == "center":
        x = left + (right - left - width) // 2
    else:
        x = left
    top = row.y
    bottom = row.y + face.ink_height - 1
    boxes: list[tuple[int, int, int, int]] = []
    runs: list[Run] = []
    if row.key is not None:
        cap_w = prefix - KEY_CAP_GAP
        boxes.append((x, top - 1, x + cap_w - 1, bottom))
        digit = str(row.key)
        overhang, digit_w = _extent(face, digit)
        runs.append(Run(x + (cap_w - digit_w) // 2 + overhang, top - face.ink_top, digit,
                        face, lit=False))
    text_x = x + prefix + pad
    if row.invert and positions:
        boxes.append((x + prefix, top - 1, x + width - 1, bottom + 1))
    # Centre a shrunk (11 px) text on the row's 12 px line rather than hanging it high.
    text_top = top + (face.ink_height - text_face.ink_height) // 2
    for dx, chunk in positions:
        runs.append(Run(text_x + dx, text_top - text_face.ink_top, chunk, text_face,
                        lit=not row.invert))
    return Placed(row, tuple(boxes), tuple(runs), x, x + width,
                  max(0, top - 1), min(HEIGHT, bottom + 2))


def _place_line(rows: list[Row], fonts: Fonts) -> list[Placed]:
    """Rows sharing a y: right-aligned ones take their room first, left ones share the
    rest in order of x (each stops GAP px before the next), centred ones get the line."""
    placed: list[Placed] = []
    right_edge = min(row.right for row in rows)  # a QR code beside the text
    for row in rows:
        if row.align == "right":
            p = _place(row, fonts, row.x, right_edge)
            placed.append(p)
            right_edge = p.x0 - GAP
    lefts = sorted((r for r in rows if r.align == "left"), key=lambda r: r.x)
    for i, row in enumerate(lefts):
        limit = lefts[i + 1].x - GAP if i + 1 < len(lefts) else right_edge
        placed.append(_place(row, fonts, row.x, max(row.x, limit)))
    for row in rows:
        if row.align == "center":
            placed.append(_place(row, fonts, 0, row.right))
    return placed


def _one_line(row: Row) -> Row:
    text = display_text(row.text)
    return row if text == row.text else replace(row, text=text)


def place_rows(rows: Iterable[Row], fonts: Fonts) -> list[Placed]:
    """`rows` resolved to boxes and text runs, in drawing order; a line Pillow cannot
    lay out is left out, not raised."""
    lines: dict[int, list[Row]] = {}
    for row in map(_one_line, rows):
        if row.text:
            lines.setdefault(row.y, []).append(row)
    placed: list[Placed] = []
    for y in sorted(lines):
        try:
            placed.extend(_place_line(lines[y], fonts))
        except _DRAW_ERRORS as e:
            log.warning("screen row at y=%d left out: %s (%s)", y, e,
                        ", ".join(log_text(r.text) for r in lines[y]))
    return placed


def place(screen: Screen, fonts: Fonts) -> list[Placed]:
    """Every row of `screen` resolved to boxes and text runs, in drawing order."""
    return place_rows(layout(screen), fonts)


def draw_placed(image: Image.Image, placed: Iterable[Placed],
                offset: tuple[int, int] = (0, 0)) -> None:
    """Draw resolved rows onto `image`, each clipped to its own box; `offset` lets tests
    draw on a larger canvas to see overflow."""
    ox, oy = offset
    for p in placed:
        x0, y0, x1, y1 = p.clip
        box = (max(0, x0 + ox), max(0, y0 + oy),
               min(image.width, x1 + ox), min(image.height, y1 + oy))
        if box[0] >= box[2] or box[1] >= box[3]:
            continue
        # Draw on a copy of the row's box and paste it back: Pillow has no clip region.
        layer = image.crop(box)
        dx, dy = ox - box[0], oy - box[1]
        draw = ImageDraw.Draw(layer)
        draw.fontmode = "1"  # no antialiasing: the panel has no grey
        for bx0, by0, bx1, by1 in p.boxes:
            draw.rectangle((bx0 + dx, by0 + dy, bx1 + dx, by1 + dy), fill=LIT)
        for run in p.runs:
            try:
                draw.text((run.x + dx, run.y + dy), run.text, font=run.face.font,
                          fill=LIT if run.lit else DARK)
            except _DRAW_ERRORS as e:
                log.warning("text %s left out of the frame: %s", log_text(run.text), e)
        image.paste(layer, box[:2])


def _draw_qr(image: Image.Image, screen: Screen) -> str | None:
    """The screen's QR code, where the layout puts one: its URL, or None."""
    box = qr_box(screen)
    if box is None or screen.qr_url is None:
        return None
    return screen.qr_url if qr.draw(image, screen.qr_url, box, light=LIT, dark=DARK,
                                     quiet=qr.MIN_QUIET) else None


def render(screen: Screen, fonts: Fonts) -> Image.Image:
    """The 128×64 mode "1" image of `screen` (white ink on black, as the OLED lights)."""
    image = Image.new("1", (WIDTH, HEIGHT), 0)
    draw_placed(image, place(screen, fonts))
    _draw_qr(image, screen)
    return image


def placed_text(placed: Iterable[Placed]) -> str:
    """The text as drawn, one line per row y (rows sharing a line join with a space, left
    to right): what a person reads on the panel, a long name cut to its "…" included."""
    lines: dict[int, list[Placed]] = {}
    for p in placed:
        lines.setdefault(p.row.y, []).append(p)
    return "\n".join(
        " ".join(t for t in ("".join(r.text for r in p.runs)
                             for p in sorted(row_parts, key=lambda p: p.x0)) if t)
        for _, row_parts in sorted(lines.items()))


def render_with_text(screen: Screen, fonts: Fonts) -> tuple[bytes, str]:
    """The frame as `frame_bytes` packs it and the text it shows (SPEC §8 `frame`, `text`),
    from one layout pass."""
    frame, text, _ = render_frame(screen, fonts)
    return frame, text


def render_frame(screen: Screen, fonts: Fonts) -> tuple[bytes, str, str | None]:
    """The packed frame, the text it shows and the URL of the QR code drawn on it (or
    None): SPEC §8 `frame`, `text` and §10 `qr`, from one layout pass."""
    placed = place(screen, fonts)
    image = Image.new("1", (WIDTH, HEIGHT), 0)
    draw_placed(image, placed)
    shown_qr = _draw_qr(image, screen)
    return frame_bytes(image), placed_text(placed), shown_qr


def frame_bytes(image: Image.Image) -> bytes:
    """The image as 1024 bytes: rows top to bottom, 16 bytes a row, leftmost pixel in
    the most significant bit, 1 = lit (SPEC §8 `frame`, before base64)."""
    if image.size != (WIDTH, HEIGHT):
        raise ValueError(f"expected a {WIDTH}×{HEIGHT} image, got {image.size}")
    data = image.convert("1").tobytes()  # mode "1" packs MSB first, rows byte-aligned
    assert len(data) == FRAME_BYTES
    return data
