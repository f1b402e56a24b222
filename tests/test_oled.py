"""The OLED driver without hardware: a recording I²C bus stands in for the panel, so the
tests check the pixels the panel would receive, and what a technician is told when the
bus or the panel is missing."""

from __future__ import annotations

import errno
from typing import Any

import pytest
import smbus2
from PIL import Image, ImageChops

from device.core import screens
from device.ports import DriverError, HardwareNotFound
from drivers.fonts import Fonts, load_fonts
from drivers.oled import DummyDisplay, OledDisplay
from drivers.render import render
from tests.golden.cases import CASES

W, H = 128, 64
ADDRESS = 0x3C


@pytest.fixture(scope="module")
def fonts() -> Fonts:
    try:
        return load_fonts()
    except HardwareNotFound as e:
        pytest.fail(f"{e} (./hcp test installs the fonts the tests need)", pytrace=False)


class PanelBus:
    """An smbus stand-in that models a panel's display RAM from the bytes it is sent.

    SSD1306 (horizontal addressing after COLUMNADDR 0x21) and SH1106 (page address
    0xB0+n, then one page of columns) both come down to: data bytes fill page rows of
    128 columns, bit i of a byte being row 8*page+i.
    """

    def __init__(self, column_offset: int = 0) -> None:
        self.commands: list[list[int]] = []
        self.ram = [bytearray(W) for _ in range(H // 8)]
        self.page = 0
        self.column = 0
        self.fail_with: OSError | None = None

    def write_i2c_block_data(self, address: int, mode: int, data: list[int]) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        assert address == ADDRESS
        if mode == 0x00:
            self.commands.append(list(data))
            first = data[0]
            if first == 0x21:        # SSD1306 COLUMNADDR: restart at page 0, column 0
                self.page, self.column = 0, 0
            elif 0xB0 <= first <= 0xB7 and len(data) == 3:  # SH1106 page address
                self.page, self.column = first - 0xB0, 0
        else:
            assert mode == 0x40
            for byte in data:
                self.ram[self.page][self.column] = byte
                self.column += 1
                if self.column == W:
                    self.column = 0
                    self.page = (self.page + 1) % (H // 8)

    def image(self) -> Image.Image:
        out = Image.new("1", (W, H), 0)
        for y in range(H):
            for x in range(W):
                if self.ram[y // 8][x] >> (y % 8) & 1:
                    out.putpixel((x, y), 255)
        return out

    def sent(self, *command: int) -> bool:
        return list(command) in self.commands


def _same(a: Image.Image, b: Image.Image) -> bool:
    return ImageChops.difference(a, b).getbbox() is None


@pytest.mark.parametrize("kind", ["ssd1306", "sh1106"])
def test_panel_receives_the_rendered_screen(kind: str, fonts: Fonts) -> None:
    bus = PanelBus()
    display = OledDisplay(kind, 1, ADDRESS, 0, 200, fonts, bus=bus)  # type: ignore[arg-type]
    assert bus.sent(0x81, 200)  # contrast from the config
    screen = CASES["prompt_60"]
    display.show(screen)
    expected = render(screen, fonts)
    assert _same(bus.image(), expected)
    assert display.last_image is not None and _same(display.last_image, expected)


def test_upside_down_panel_gets_the_frame_turned(fonts: Fonts) -> None:
    bus = PanelBus()
    display = OledDisplay("ssd1306", 1, ADDRESS, 2, 255, fonts, bus=bus)
    screen = CASES["thanks_5"]
    display.show(screen)
    assert _same(bus.image(), render(screen, fonts).rotate(180))


def test_portrait_rotation_is_refused(fonts: Fonts) -> None:
    with pytest.raises(DriverError, match="rotate = 1"):
        OledDisplay("ssd1306", 1, ADDRESS, 1, 255, fonts, bus=PanelBus())


def test_missing_i2c_bus_says_how_to_enable_it(fonts: Fonts) -> None:
    with pytest.raises(HardwareNotFound, match=r"raspi-config nonint do_i2c 0.*0x3C") as e:
        OledDisplay("ssd1306", 15, ADDRESS, 0, 255, fonts)
    assert "/dev/i2c-15" in str(e.value)


def test_no_permission_on_the_bus_says_so(fonts: Fonts,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(port: int, *args: Any, **kwargs: Any) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", f"/dev/i2c-{port}")

    monkeypatch.setattr(smbus2, "SMBus", denied)
    with pytest.raises(HardwareNotFound, match="i2c group"):
        OledDisplay("sh1106", 1, ADDRESS, 0, 255, fonts)


def test_nothing_at_the_address_is_hardware_not_found(fonts: Fonts) -> None:
    bus = PanelBus()
    bus.fail_with = OSError(errno.EREMOTEIO, "Remote I/O error")
    with pytest.raises(HardwareNotFound, match=r"0x3C.*i2cdetect -y 1"):
        OledDisplay("ssd1306", 1, ADDRESS, 0, 255, fonts, bus=bus)


def test_panel_that_stops_answering_recovers_when_it_comes_back(fonts: Fonts) -> None:
    bus = PanelBus()
    display = OledDisplay("ssd1306", 1, ADDRESS, 0, 255, fonts, bus=bus)
    display.show(CASES["idle"])
    bus.fail_with = OSError(errno.EIO, "Input/output error")
    with pytest.raises(DriverError, match="stopped answering"):
        display.show(CASES["thanks_5"])
    with pytest.raises(DriverError):  # still gone: still a DriverError, not a luma error
        display.show(CASES["thanks_5"])
    bus.fail_with = None
    bus.commands.clear()
    display.show(CASES["thanks_1"])
    assert bus.sent(0x81, 255), "a panel that lost power must be initialised again"
    assert _same(bus.image(), render(CASES["thanks_1"], fonts))


def test_close_turns_the_panel_off(fonts: Fonts) -> None:
    bus = PanelBus()
    display = OledDisplay("ssd1306", 1, ADDRESS, 0, 255, fonts, bus=bus)
    display.show(CASES["idle"])
    bus.commands.clear()
    display.close()
    assert bus.sent(0xAE)  # DISPLAYOFF
    assert bus.image().getbbox() is None  # cleared
    display.close()  # twice is harmless


def test_dummy_display_keeps_every_frame(fonts: Fonts) -> None:
    display = DummyDisplay(fonts)
    shown = [CASES["prompt_60"], CASES["reasons_default"], CASES["thanks_1"]]
    for screen in shown:
        display.show(screen)
    assert display.screens == shown
    assert len(display.images) == 3
    for screen, image in zip(shown, display.images, strict=True):
        assert image.size == (W, H) and _same(image, render(screen, fonts))
    assert display.last_image is display.images[-1]
    display.close()
    assert display.closed


def test_dummy_display_frames_are_independent_copies(fonts: Fonts) -> None:
    display = DummyDisplay(fonts)
    display.show(screens.idle("01号窗口", None, offline=False, spontaneous=False))
    first = display.images[0].copy()
    display.show(screens.paused("01号窗口", None, reason=None))
    assert _same(display.images[0], first)
    assert not _same(display.images[0], display.images[1])
