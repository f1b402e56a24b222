"""A colour screen event (SPEC §10: a PNG frame) drawn in a terminal: half-block cells
with 24-bit colour, the picture scaled down to fit, two pixel rows per character row
(upper half the foreground colour, lower half the background), so pixels stay square
on a terminal whose cells are twice as tall as wide."""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Mapping

from PIL import Image, UnidentifiedImageError

RESET = "\x1b[0m"


def frame_image(event: Mapping[str, object]) -> Image.Image | None:
    """The PNG of a colour screen event as RGB, or None when it holds none."""
    frame = event.get("frame")
    if event.get("format") != "png" or not isinstance(frame, str):
        return None
    try:
        image = Image.open(io.BytesIO(base64.b64decode(frame, validate=True)))
        return image.convert("RGB")
    except (binascii.Error, ValueError, OSError, UnidentifiedImageError):
        return None


def cells_for(size: tuple[int, int], max_cols: int, max_rows: int) -> tuple[int, int]:
    """The (columns, rows) of cells a picture of `size` takes at most in that room,
    keeping its shape (a cell is one pixel wide and two tall)."""
    w, h = size
    cols = max(1, min(max_cols, w))
    rows = max(1, round(cols * h / w / 2))
    if rows > max_rows:
        rows = max(1, max_rows)
        cols = max(1, min(max_cols, round(rows * 2 * w / h)))
    return cols, rows


def colour_blocks(image: Image.Image, max_cols: int, max_rows: int) -> list[str]:
    """`image` as lines of "▀" with true-colour escapes; every line is exactly as many
    terminal columns wide as the others and ends with a colour reset."""
    cols, rows = cells_for(image.size, max_cols, max_rows)
    small = image.convert("RGB").resize((cols, rows * 2), Image.Resampling.BOX)
    px = small.load()
    assert px is not None
    lines = []
    for r in range(rows):
        parts: list[str] = []
        fg: object = None
        bg: object = None
        for c in range(cols):
            top, bottom = px[c, 2 * r], px[c, 2 * r + 1]
            assert isinstance(top, tuple) and isinstance(bottom, tuple)
            if top == bottom and bottom == bg:
                parts.append(" ")  # both halves the background: no colour to send
                continue
            if top != fg:  # only what changed: a redraw is bytes on an SSH link
                parts.append(f"\x1b[38;2;{top[0]};{top[1]};{top[2]}m")
                fg = top
            if bottom != bg:
                parts.append(f"\x1b[48;2;{bottom[0]};{bottom[1]};{bottom[2]}m")
                bg = bottom
            parts.append("▀")
        lines.append("".join(parts) + RESET)
    return lines
