"""A broken staff photo (`[display] staff_photos_dir`) costs the clerk's picture, never the
frame: the colour display draws the placeholder instead and keeps working."""

from __future__ import annotations

import io
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from device.core import screens
from drivers.colour_photos import PhotoDir
from drivers.layout_colour import layout
from tests.golden import colour as golden
from tests.golden.cases import WINDOW


def png(colour: tuple[int, int, int] = (200, 10, 10)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (50, 60), colour).save(buf, "PNG")
    return buf.getvalue()


def with_idat_length(data: bytes, length: int) -> bytes:
    """`data` (a PNG) with its IDAT chunk's length field changed: the decoder then reads
    the next chunk from inside the compressed data (a flipped bit on a card, a torn copy)."""
    at = data.index(b"IDAT") - 4
    return data[:at] + length.to_bytes(4, "big") + data[at + 4:]


def test_a_png_with_a_wrong_chunk_length_is_the_placeholder_not_a_dead_screen(
        tmp_path: Path) -> None:
    """PIL reports this one with SyntaxError ("broken PNG file"), which PhotoDir let
    through: every screen with the clerk's card raised, and the display stayed failed
    (a `driver_fault`, the screen frozen) for as long as that clerk was logged in."""
    (tmp_path / "S0231.png").write_bytes(with_idat_length(png(), 1))
    photos = PhotoDir(tmp_path)
    assert photos("S0231") is None
    assert photos("S0231") is None                  # and again from the cache
    staff = screens.staff_of({"staff_id": "S0231", "staff_name": "张晓明"})
    screen = screens.prompt(WINDOW, staff, case_id="C-1", service_name="不动产登记",
                            remaining_s=9)
    frame = layout(screen, (800, 480), golden.FONTS, photos)
    placeholder = layout(screen, (800, 480), golden.FONTS, lambda _: None)
    assert frame.image.tobytes() == placeholder.image.tobytes()


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(fmt=st.sampled_from(["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"]),
       changes=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)),
                        min_size=1, max_size=4),
       cut=st.none() | st.integers(0, 10_000))
def test_any_damaged_photo_is_a_picture_or_none(
        tmp_path_factory: object, fmt: str, changes: list[tuple[int, int]],
        cut: int | None) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (40, 50), (1, 2, 3)).save(buf, fmt)
    data = bytearray(buf.getvalue())
    for at, value in changes:
        data[at % len(data)] = value
    if cut is not None:
        data = data[:cut % len(data)]
    folder = tmp_path_factory.mktemp("p")   # type: ignore[attr-defined]
    (folder / "S1.png").write_bytes(bytes(data))
    image = PhotoDir(folder)("S1")
    assert image is None or image.mode == "RGB"


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(length=st.integers(0, 2**32 - 1))
def test_any_idat_length_is_a_picture_or_none(tmp_path_factory: object, length: int) -> None:
    folder = tmp_path_factory.mktemp("p")   # type: ignore[attr-defined]
    (folder / "S1.png").write_bytes(with_idat_length(png(), length))
    image = PhotoDir(folder)("S1")
    assert image is None or image.mode == "RGB"


def test_a_fifo_named_like_a_photo_is_the_placeholder_not_a_hung_display(
        tmp_path: Path) -> None:
    """Image.open() of a FIFO waits for a writer: the display's show() hung, and with it
    the daemon's loop (no rating stored or told) for as long as that clerk was shown."""
    import os
    import threading
    os.mkfifo(tmp_path / "S0231.png")
    found: list[object] = []
    reader = threading.Thread(target=lambda: found.append(PhotoDir(tmp_path)("S0231")),
                              daemon=True)
    reader.start()
    reader.join(5)
    if reader.is_alive():   # let the thread go: open the FIFO's other end once
        with open(tmp_path / "S0231.png", "wb"):
            pass
        reader.join(5)
        raise AssertionError("reading the photo waited on a FIFO")
    assert found == [None]
