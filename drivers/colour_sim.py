"""The simulator's colour display (SPEC §10): `[display] kind = "sim"` with a colour
`size`. Each screen is drawn by drivers/layout_colour.py and sent on the sim socket as a
PNG with its touch targets; the same targets answer the socket's `touch` op."""

from __future__ import annotations

import io
from collections.abc import Callable

from device.core.model import Screen
from drivers.colour_fonts import ColourFonts
from drivers.colour_photos import PhotoSource
from drivers.layout_colour import layout
from drivers.sim_display import SimFrame
from drivers.targets import ScreenTargets


def parse_size(size: str) -> tuple[int, int]:
    """"800x480" as (800, 480)."""
    w, _, h = size.partition("x")
    return int(w), int(h)


def colour_renderer(size: tuple[int, int], fonts: ColourFonts, photos: PhotoSource | None,
                    targets: ScreenTargets) -> Callable[[Screen], SimFrame]:
    """A SimDisplay renderer for a colour panel of `size` that keeps `targets` current."""
    def render(screen: Screen) -> SimFrame:
        frame = layout(screen, size, fonts, photos)
        out = io.BytesIO()
        # Level 1: a frame is sent once and read by a test or a terminal; speed first.
        frame.image.save(out, format="PNG", compress_level=1)
        targets.set(size, frame.boxes)
        return SimFrame(out.getvalue(), frame.text, frame.qr, "png", size[0], size[1],
                        dict(frame.boxes))
    return render
