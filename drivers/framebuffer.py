"""`[display] kind = "framebuffer"`: colour screens on a Linux fbdev (/dev/fbN): the
Raspberry Pi 7-inch DSI panel (800×480), HDMI panels (1024×600), SPI panels behind
fbtft (480×320), in any of four rotations.

The panel's geometry and pixel format come from the kernel (FBIOGET_VSCREENINFO and
FBIOGET_FSCREENINFO, or sysfs /sys/class/graphics/fbN for a device that refuses the
ioctls); RGB565 and XRGB8888 (and 24-bit BGR) are written. Each frame is drawn by
drivers/layout_colour.py at the size the rotation makes, turned, packed and written at
offset 0 with the panel's stride. No dependency beyond Pillow: luma.core's
linux_framebuffer would add a second drawing path for the same two pixel formats.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageChops

from device.core.model import Screen
from device.ports import DriverError, HardwareNotFound
from drivers.colour_fonts import ColourFonts
from drivers.colour_photos import PhotoSource
from drivers.layout_colour import MIN_SIDE, layout
from drivers.targets import ScreenTargets

log = logging.getLogger(__name__)

FBIOGET_VSCREENINFO = 0x4600
FBIOGET_FSCREENINFO = 0x4602
# struct fb_var_screeninfo starts with: xres, yres, xres_virtual, yres_virtual, xoffset,
# yoffset, bits_per_pixel, grayscale, then red/green/blue/transp bitfields (offset,
# length, msb_right); 160 bytes in all.
_VAR = struct.Struct("@8I12I")
_VAR_SIZE = 160
# struct fb_fix_screeninfo: char id[16]; unsigned long smem_start; __u32 smem_len, type,
# type_aux, visual; __u16 xpanstep, ypanstep, ywrapstep; __u32 line_length; … (the rest
# is never read: 80 bytes on 64-bit, 68 on 32-bit, padded generously here).
_FIX = struct.Struct("@16sLIIIIHHHI")
_FIX_SIZE = 128

# [display] rotate in quarter turns -> the transpose that turns a drawn frame onto the
# panel: 1 (90) means the panel is mounted turned a quarter clockwise, so the picture is
# turned a quarter clockwise to stand upright (Pillow's ROTATE_270 is clockwise).
_TURN = {1: Image.Transpose.ROTATE_270, 2: Image.Transpose.ROTATE_180,
         3: Image.Transpose.ROTATE_90}


@dataclass(frozen=True)
class FbGeometry:
    """What a framebuffer holds: visible size, bits per pixel, bytes per row, and the
    red channel's bit offset (which of RGB/BGR order)."""

    width: int
    height: int
    bits_per_pixel: int
    stride: int
    red_offset: int = 16

    @property
    def format(self) -> str:
        if self.bits_per_pixel == 16:
            return "RGB565"
        if self.bits_per_pixel == 32:
            return "XRGB8888" if self.red_offset == 16 else "XBGR8888"
        if self.bits_per_pixel == 24:
            return "RGB888" if self.red_offset == 16 else "BGR888"
        return f"{self.bits_per_pixel} bpp"


SYSFS = Path("/sys/class/graphics")


def read_geometry(fd: int, device: str, sysfs: Path = SYSFS) -> FbGeometry:
    """The panel's geometry from the kernel; sysfs when the ioctls are refused."""
    try:
        var = fcntl.ioctl(fd, FBIOGET_VSCREENINFO, bytes(_VAR_SIZE))
        fix = fcntl.ioctl(fd, FBIOGET_FSCREENINFO, bytes(_FIX_SIZE))
    except OSError:
        return _sysfs_geometry(device, sysfs)
    v = _VAR.unpack_from(var)
    line_length = _FIX.unpack_from(fix)[-1]
    return FbGeometry(v[0], v[1], v[6], line_length, red_offset=v[8])


def _sysfs_geometry(device: str, sysfs: Path) -> FbGeometry:
    base = sysfs / Path(device).name
    try:
        w, h = (int(n) for n in (base / "virtual_size").read_text().strip().split(","))
        bpp = int((base / "bits_per_pixel").read_text())
        stride = int((base / "stride").read_text())
    except (OSError, ValueError) as e:
        raise HardwareNotFound(
            f"[display] fb_device {device}: cannot read the panel's geometry ({e}); is it a "
            "framebuffer? (ls /sys/class/graphics)") from None
    return FbGeometry(w, h, bpp, stride)


def pack(image: Image.Image, geometry: FbGeometry) -> bytes:
    """`image` (RGB, the panel's size) in the panel's pixel format, rows `stride` apart."""
    g = geometry
    rgb = image.convert("RGB")
    if g.bits_per_pixel == 16:
        r, gr, b = rgb.split()
        # RGB565, little-endian: high byte rrrrrggg, low byte gggbbbbb (disjoint bits, so
        # adding the parts never carries).
        high = ImageChops.add(r.point(lambda v: v & 0xF8), gr.point(lambda v: v >> 5))
        low = ImageChops.add(gr.point(lambda v: ((v >> 2) & 0x07) << 5),
                             b.point(lambda v: v >> 3))
        data = Image.merge("LA", (low, high)).tobytes()
        bpp = 2
    elif g.bits_per_pixel == 32:
        data = rgb.tobytes("raw", "BGRX" if g.red_offset == 16 else "RGBX")
        bpp = 4
    elif g.bits_per_pixel == 24:
        data = rgb.tobytes("raw", "BGR" if g.red_offset == 16 else "RGB")
        bpp = 3
    else:
        raise DriverError(f"framebuffer has {g.bits_per_pixel} bits per pixel; RGB565, "
                          "RGB888 and XRGB8888 are supported (set the panel's overlay to "
                          "16 or 32 bpp)")
    row = g.width * bpp
    if g.stride == row:
        return data
    pad = bytes(g.stride - row)
    return b"".join(data[i:i + row] + pad for i in range(0, len(data), row))


class FramebufferDisplay:
    """Implements device.ports.Display on /dev/fbN.

    `geometry` is a test seam: given, the device is any writable file (a test's stand-in
    for /dev/fbN) and the kernel is not asked.
    """

    def __init__(self, device: str, rotate: int, fonts: ColourFonts, *,
                 photos: PhotoSource | None = None, targets: ScreenTargets | None = None,
                 geometry: FbGeometry | None = None) -> None:
        if rotate not in (0, 1, 2, 3):
            raise DriverError(f"[display] rotate = {rotate}: 0, 90, 180 or 270")
        self.device = device
        self.rotate = rotate
        self.fonts = fonts
        self.photos = photos
        self.targets = targets if targets is not None else ScreenTargets()
        self._given = geometry
        self.geometry: FbGeometry | None = None
        self._fd: int | None = None
        self.last_image: Image.Image | None = None
        self._open()

    @property
    def size(self) -> tuple[int, int]:
        """The size the layout draws at: the panel's, turned by the rotation."""
        assert self.geometry is not None
        w, h = self.geometry.width, self.geometry.height
        return (h, w) if self.rotate in (1, 3) else (w, h)

    def _open(self) -> None:
        try:
            fd = os.open(self.device, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            raise HardwareNotFound(
                f"[display] fb_device {self.device}: no such framebuffer. Enable the panel "
                "(Raspberry Pi 7-inch: dtoverlay=vc4-kms-dsi-7inch in /boot/firmware/"
                "config.txt; SPI panels: their fbtft overlay) and set fb_device to the "
                "panel's /dev/fbN (ls /sys/class/graphics)") from None
        except PermissionError:
            raise HardwareNotFound(
                f"[display] fb_device {self.device}: no permission; add the service user "
                "to the video group") from None
        except OSError as e:
            raise HardwareNotFound(f"[display] fb_device {self.device}: {e.strerror}") from None
        try:
            geometry = self._given or read_geometry(fd, self.device)
            if min(geometry.width, geometry.height) < MIN_SIDE:
                raise HardwareNotFound(
                    f"[display] fb_device {self.device} is {geometry.width}×"
                    f"{geometry.height}: colour screens need {MIN_SIDE} px a side (an OLED "
                    "is kind = \"ssd1306\")")
            if geometry.bits_per_pixel not in (16, 24, 32):
                raise HardwareNotFound(
                    f"[display] fb_device {self.device} has {geometry.bits_per_pixel} bits "
                    "per pixel; set the panel to 16 or 32")
        except BaseException:
            os.close(fd)
            raise
        self._fd, self.geometry = fd, geometry
        log.info("framebuffer %s: %d×%d %s, stride %d, rotate %d°", self.device,
                 geometry.width, geometry.height, geometry.format, geometry.stride,
                 self.rotate * 90)

    def show(self, screen: Screen) -> None:
        """Draw `screen` and write it to the panel; DriverError when the write fails
        (the next show() opens the device again)."""
        try:
            if self._fd is None:
                self._open()
        except HardwareNotFound as e:
            raise DriverError(str(e)) from None
        assert self._fd is not None and self.geometry is not None
        frame = layout(screen, self.size, self.fonts, self.photos)
        image = frame.image
        if self.rotate:
            image = image.transpose(_TURN[self.rotate])
        data = pack(image, self.geometry)
        try:
            written = os.pwrite(self._fd, data, 0)
            if written != len(data):
                raise OSError(errno.EIO, f"short write ({written} of {len(data)} bytes)")
        except OSError as e:
            self._close_fd()
            raise DriverError(f"framebuffer {self.device}: {e.strerror or e}") from None
        self.targets.set(self.size, frame.boxes)
        self.last_image = frame.image

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def close(self) -> None:
        self._close_fd()
