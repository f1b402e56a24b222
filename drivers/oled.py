"""The OLED panel (SSD1306 / SH1106 on I²C, through luma.oled) and a dummy twin for tests.

Both draw with drivers.render, so what a test sees is what the panel shows. luma's
errors stay in here: a missing bus or panel becomes HardwareNotFound, a panel that
stops answering becomes DriverError.
"""

from __future__ import annotations

import errno
import logging
from typing import Any, Literal

from luma.core.device import device as LumaDevice
from luma.core.device import dummy
from luma.core.error import DevicePermissionError
from luma.core.error import Error as LumaError
from luma.core.interface.serial import i2c
from luma.oled.device import sh1106, ssd1306
from PIL import Image

from device.core.model import Screen
from device.ports import DriverError, HardwareNotFound
from drivers.fonts import Fonts
from drivers.layout_oled import HEIGHT, WIDTH
from drivers.render import render

log = logging.getLogger(__name__)

PanelKind = Literal["ssd1306", "sh1106"]
_PANELS = {"ssd1306": ssd1306, "sh1106": sh1106}


def _i2c_help(port: int, address: int) -> str:
    return (f"enable I²C: sudo raspi-config nonint do_i2c 0 (then reboot); check the wiring "
            f"and the address with i2cdetect -y {port} (config [display] i2c_port = {port}, "
            f"i2c_address = 0x{address:02X})")


class OledDisplay:
    """A 128×64 I²C OLED showing rendered screens.

    `bus` is an smbus-like object to use instead of opening /dev/i2c-<port> (tests, or
    boards whose bus is opened elsewhere).
    """

    def __init__(self, kind: PanelKind, i2c_port: int, i2c_address: int, rotate: int,
                 contrast: int, fonts: Fonts, *, bus: Any = None) -> None:
        if kind not in _PANELS:
            raise DriverError(f"[display] kind {kind!r}: the OLED driver knows "
                              f"{', '.join(_PANELS)}")
        if rotate not in (0, 2):
            # The screens are laid out for a landscape 128×64 panel; turned by 90° it
            # would be 64×128 and every row would be cut.
            raise DriverError(f"[display] rotate = {rotate}: only 0 and 2 (upside down) are "
                              "supported; the screens are laid out for a landscape panel")
        self.kind = kind
        self.fonts = fonts
        self._port = i2c_port
        self._address = i2c_address
        self._rotate = rotate
        self._contrast = contrast
        self._bus = bus
        self._panel: LumaDevice | None = None
        self._last: Image.Image | None = None
        self._panel = self._open()

    def _open(self) -> LumaDevice:
        try:
            serial = i2c(bus=self._bus, port=self._port, address=self._address)
            panel = _PANELS[self.kind](serial, width=WIDTH, height=HEIGHT, rotate=self._rotate)
            panel.contrast(self._contrast)
        except (PermissionError, DevicePermissionError) as e:
            raise HardwareNotFound(f"no permission to open /dev/i2c-{self._port} ({e}); add "
                                   "the service user to the i2c group") from None
        except LumaError as e:
            raise HardwareNotFound(f"{self.kind} OLED not found ({e}); "
                                   + _i2c_help(self._port, self._address)) from None
        except OSError as e:
            raise HardwareNotFound(f"{self.kind} OLED at 0x{self._address:02X} does not "
                                   f"answer ({errno.errorcode.get(e.errno or 0, e)}); "
                                   + _i2c_help(self._port, self._address)) from None
        return panel

    def show(self, screen: Screen) -> None:
        """Render `screen` and send it to the panel; DriverError if the panel is gone.

        After a failure the next show() re-initialises the panel first: one that lost
        power (a loose connector) comes back blank and unconfigured.
        """
        image = render(screen, self.fonts)
        try:
            if self._panel is None:
                self._panel = self._open()
            self._panel.display(image)
        except (LumaError, OSError) as e:
            self._panel = None
            raise DriverError(f"{self.kind} OLED at 0x{self._address:02X} stopped answering "
                              f"({e}); check the wiring") from None
        except HardwareNotFound as e:
            raise DriverError(str(e)) from None
        self._last = image

    @property
    def last_image(self) -> Image.Image | None:
        """The last frame the panel accepted."""
        return self._last

    def close(self) -> None:
        """Blank the panel and release the bus; safe to call twice."""
        panel, self._panel = self._panel, None
        if panel is None:
            return
        try:
            panel.cleanup()
        except (LumaError, OSError) as e:
            log.warning("closing the OLED: %s", e)


class DummyDisplay:
    """A Display that shows nothing but keeps every frame (luma's dummy device)."""

    def __init__(self, fonts: Fonts) -> None:
        self.fonts = fonts
        self._panel = dummy(width=WIDTH, height=HEIGHT, mode="1")
        self.screens: list[Screen] = []
        self.images: list[Image.Image] = []
        self.closed = False

    def show(self, screen: Screen) -> None:
        self._panel.display(render(screen, self.fonts))
        self.screens.append(screen)
        self.images.append(self._panel.image)

    @property
    def last_image(self) -> Image.Image | None:
        return self.images[-1] if self.images else None

    def close(self) -> None:
        self.closed = True

