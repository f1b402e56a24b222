"""QR codes for 扫码评价 (SPEC §10), drawn into a screen's image by every layout.

segno makes the module matrix (pure Python, no system library); this module only
decides how many pixels a module gets and paints dark modules on a light square, the
polarity every phone scanner reads (an inverted code, light on the OLED's black, is
not read by every phone's camera). The quiet zone is part of the square.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import segno
from PIL import Image, ImageDraw

# Modules of light margin around the code: the standard asks for 4; 2 is what phone
# scanners need in practice, and a 128×64 panel has no pixels to spare.
MIN_QUIET = 2
QUIET = 4


@dataclass(frozen=True)
class QrFit:
    """Where a code goes inside a square: `scale` px per module, its top-left corner."""

    modules: int
    scale: int
    x: int
    y: int


@functools.lru_cache(maxsize=64)
def matrix(url: str) -> tuple[tuple[bool, ...], ...]:
    """The code's modules, row by row (True = dark), without any quiet zone.

    Error correction M (15 % of the code may be dirty or covered) unless the URL is so
    long that only L keeps the code small enough; segno picks the smallest version."""
    code = segno.make_qr(url, error="m", boost_error=False, encoding="utf-8")
    if code.version is not None and int(code.version) > 10:
        code = segno.make_qr(url, error="l", boost_error=False, encoding="utf-8")
    return tuple(tuple(bool(v) for v in row) for row in code.matrix)


def fit(modules: int, side: int, quiet: int = QUIET) -> QrFit | None:
    """The largest whole-pixel scale at which a code of `modules` and its quiet zone
    (`quiet` modules, at least MIN_QUIET) fit a `side`-pixel square, centred; None when
    not even one pixel per module fits."""
    for q in (quiet, MIN_QUIET) if quiet > MIN_QUIET else (quiet,):
        scale = side // (modules + 2 * q)
        if scale >= 1:
            offset = (side - modules * scale) // 2
            return QrFit(modules, scale, offset, offset)
    return None


def draw(image: Image.Image, url: str, box: tuple[int, int, int], *,
         light: int | tuple[int, int, int], dark: int | tuple[int, int, int],
         quiet: int = QUIET) -> bool:
    """Paint the code for `url` into the square `box` = (x, y, side) of `image`: the
    square light, the modules dark. False (and nothing drawn) when it cannot fit."""
    x0, y0, side = box
    try:
        rows = matrix(url)
    except (ValueError, segno.DataOverflowError):
        return False
    placed = fit(len(rows), side, quiet)
    if placed is None:
        return False
    canvas = ImageDraw.Draw(image)
    canvas.rectangle((x0, y0, x0 + side - 1, y0 + side - 1), fill=light)
    s = placed.scale
    for r, row in enumerate(rows):
        top = y0 + placed.y + r * s
        c = 0
        while c < len(row):  # one rectangle per run of dark modules
            if not row[c]:
                c += 1
                continue
            start = c
            while c < len(row) and row[c]:
                c += 1
            left = x0 + placed.x + start * s
            canvas.rectangle((left, top, x0 + placed.x + c * s - 1, top + s - 1), fill=dark)
    return True
