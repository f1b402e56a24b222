"""The framebuffer display (SPEC §10) against a file standing in for /dev/fbN: the pixels
written in RGB565 and XRGB8888, with the panel's stride and rotation; a missing device
names the key and the fix; a failed write is a DriverError and the next show reopens."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from PIL import Image

from device.core import screens
from device.ports import DriverError, HardwareNotFound
from drivers.framebuffer import FbGeometry, FramebufferDisplay, pack, read_geometry
from drivers.layout_colour import layout
from tests.golden import colour as golden

WINDOW = "03号窗口 不动产登记"
PROMPT = screens.prompt(WINDOW, None, case_id="C1", service_name="不动产转移登记",
                        remaining_s=60)


@pytest.fixture(scope="module", autouse=True)
def _fonts() -> None:
    problem = golden.font_problem()
    if problem:
        pytest.fail(problem)


def fb_file(tmp_path: Path, g: FbGeometry) -> Path:
    path = tmp_path / "fb0"
    path.write_bytes(bytes(g.stride * g.height))
    return path


def pixels_565(data: bytes, g: FbGeometry) -> Image.Image:
    image = Image.new("RGB", (g.width, g.height))
    px = image.load()
    assert px is not None
    for y in range(g.height):
        row = data[y * g.stride:y * g.stride + g.width * 2]
        for x, (v,) in enumerate(struct.iter_unpack("<H", row)):
            px[x, y] = ((v >> 11) << 3, ((v >> 5) & 0x3F) << 2, (v & 0x1F) << 3)
    return image


def pixels_8888(data: bytes, g: FbGeometry) -> Image.Image:
    rows = b"".join(data[y * g.stride:y * g.stride + g.width * 4] for y in range(g.height))
    return Image.frombytes("RGB", (g.width, g.height), rows, "raw", "BGRX")


def test_xrgb8888_pixels_are_the_layouts_rows_a_stride_apart(tmp_path: Path) -> None:
    g = FbGeometry(800, 480, 32, 800 * 4 + 64)   # a stride wider than a row
    path = fb_file(tmp_path, g)
    path.write_bytes(b"\xAA" * (g.stride * g.height))
    display = FramebufferDisplay(str(path), 0, golden.FONTS, geometry=g)
    display.show(PROMPT)
    data = path.read_bytes()
    expected = layout(PROMPT, (800, 480), golden.FONTS).image
    assert pixels_8888(data, g).tobytes() == expected.tobytes()
    # One write of whole rows: the padding past each row is written as zeros.
    assert len(data) == g.stride * g.height
    assert all(data[y * g.stride + 3200:(y + 1) * g.stride] == bytes(64)
               for y in range(g.height))
    assert display.targets.size == (800, 480)
    assert display.targets.hit(*_centre(display, 5)) == 5
    display.close()


def _centre(display: FramebufferDisplay, level: int) -> tuple[int, int]:
    for lvl in range(1, 6):
        if display.targets.hit(0, 0) == lvl:
            pytest.fail("the corner is not a button")
    frame = layout(PROMPT, display.size, golden.FONTS)
    x0, y0, x1, y1 = frame.boxes[level]
    return (x0 + x1) // 2, (y0 + y1) // 2


def test_rgb565_pixels_are_the_layouts_to_five_and_six_bits(tmp_path: Path) -> None:
    g = FbGeometry(480, 320, 16, 480 * 2, red_offset=11)
    path = fb_file(tmp_path, g)
    FramebufferDisplay(str(path), 0, golden.FONTS, geometry=g).show(PROMPT)
    got = pixels_565(path.read_bytes(), g)
    expected = layout(PROMPT, (480, 320), golden.FONTS).image.point(
        lambda v: v).convert("RGB")
    # Each channel loses its low bits and nothing else.
    for xy in ((0, 0), (5, 100), (240, 200), (470, 310), (30, 250)):
        e = expected.getpixel(xy)
        assert isinstance(e, tuple)
        assert got.getpixel(xy) == (e[0] & 0xF8, e[1] & 0xFC, e[2] & 0xF8)


@pytest.mark.parametrize(("rotate", "turn"), [
    (1, Image.Transpose.ROTATE_270), (2, Image.Transpose.ROTATE_180),
    (3, Image.Transpose.ROTATE_90)])
def test_rotation_draws_the_turned_layout(tmp_path: Path, rotate: int,
                                          turn: Image.Transpose) -> None:
    g = FbGeometry(800, 480, 32, 800 * 4)
    path = fb_file(tmp_path, g)
    display = FramebufferDisplay(str(path), rotate, golden.FONTS, geometry=g)
    logical = (480, 800) if rotate in (1, 3) else (800, 480)
    assert display.size == logical
    display.show(PROMPT)
    expected = layout(PROMPT, logical, golden.FONTS).image.transpose(turn)
    assert pixels_8888(path.read_bytes(), g).tobytes() == expected.tobytes()
    # Targets stay in the picture's own pixels: the touch side maps into them.
    assert display.targets.size == logical


def test_rotate_90_turns_the_picture_clockwise(tmp_path: Path) -> None:
    # The window band is the picture's top; on a panel mounted a quarter clockwise
    # the picture is turned clockwise, so the band is the panel's right-hand edge.
    g = FbGeometry(800, 480, 32, 800 * 4)
    path = fb_file(tmp_path, g)
    FramebufferDisplay(str(path), 1, golden.FONTS, geometry=g).show(PROMPT)
    image = pixels_8888(path.read_bytes(), g)
    band = (18, 70, 128)
    assert image.getpixel((799, 240)) == band and image.getpixel((0, 240)) != band


def test_a_missing_device_names_the_key_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(HardwareNotFound) as e:
        FramebufferDisplay(str(tmp_path / "fb7"), 0, golden.FONTS)
    text = str(e.value)
    assert "[display] fb_device" in text and "fb7" in text and "ls /sys/class/graphics" in text


def test_a_small_or_odd_panel_is_refused(tmp_path: Path) -> None:
    g = FbGeometry(128, 64, 16, 256)
    with pytest.raises(HardwareNotFound, match="240 px"):
        FramebufferDisplay(str(fb_file(tmp_path, g)), 0, golden.FONTS, geometry=g)
    g = FbGeometry(800, 480, 8, 800)
    with pytest.raises(HardwareNotFound, match="bits per pixel"):
        FramebufferDisplay(str(fb_file(tmp_path, g)), 0, golden.FONTS, geometry=g)


def test_a_failed_write_is_a_driver_error_and_the_next_show_reopens(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    g = FbGeometry(800, 480, 32, 800 * 4)
    path = fb_file(tmp_path, g)
    display = FramebufferDisplay(str(path), 0, golden.FONTS, geometry=g)
    first_fd = display._fd
    real_pwrite = os.pwrite

    def failing(fd: int, data: bytes, offset: int) -> int:
        raise OSError(5, "Input/output error")
    monkeypatch.setattr("drivers.framebuffer.os.pwrite", failing)
    with pytest.raises(DriverError, match="framebuffer .*Input/output error"):
        display.show(PROMPT)
    assert display._fd is None          # closed: the next show opens the device again
    monkeypatch.setattr("drivers.framebuffer.os.pwrite", real_pwrite)
    display.show(PROMPT)
    assert display._fd is not None and first_fd is not None
    assert pixels_8888(path.read_bytes(), g).getpixel((0, 0)) == (18, 70, 128)
    display.close()


def test_geometry_comes_from_sysfs_when_the_device_refuses_the_ioctls(tmp_path: Path) -> None:
    sysfs = tmp_path / "graphics" / "fb3"
    sysfs.mkdir(parents=True)
    (sysfs / "virtual_size").write_text("480,320\n")
    (sysfs / "bits_per_pixel").write_text("16\n")
    (sysfs / "stride").write_text("960\n")
    path = tmp_path / "fb3"
    path.write_bytes(b"")
    fd = os.open(path, os.O_RDONLY)
    try:
        g = read_geometry(fd, str(path), sysfs=tmp_path / "graphics")
    finally:
        os.close(fd)
    assert g == FbGeometry(480, 320, 16, 960) and g.format == "RGB565"


def test_pack_keeps_exact_colours_in_32_bits() -> None:
    image = Image.new("RGB", (2, 1), (1, 2, 3))
    image.putpixel((1, 0), (250, 128, 7))
    assert pack(image, FbGeometry(2, 1, 32, 8)) == bytes([3, 2, 1, 0, 7, 128, 250, 0])
    assert pack(image, FbGeometry(2, 1, 16, 4)) == struct.pack(
        "<HH", (0 << 11) | (0 << 5) | 0, (31 << 11) | (32 << 5) | 0)


def test_hcp_device_with_a_missing_framebuffer_exits_with_one_clear_line(
        tmp_path: Path) -> None:
    import subprocess
    import sys

    from simulator.tomlfile import toml_text
    from tests.support.device import ROOT
    config = tmp_path / "device.toml"
    config.write_text(toml_text({
        "device": {"id": "D1", "region_code": "421100", "hall_id": "HG01",
                   "window_id": "W03", "window_name": "03号窗口",
                   "data_dir": str(tmp_path / "data")},
        "serial": {"port": ""},
        "input": {"kind": "sim"},
        "display": {"kind": "framebuffer", "fb_device": "/dev/fb-hcp-test-missing9"},
        "mqtt": {"port": 9},
    }), encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "device.cli", "run", "--config", str(config)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 69, done.stderr   # EX_UNAVAILABLE: systemd does not loop
    assert "[display] fb_device" in done.stderr and "fb-hcp-test-missing9" in done.stderr
    assert "Traceback" not in done.stderr
