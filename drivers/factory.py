"""Builds the drivers a config asks for. The only place that maps config kinds to classes;
production never falls back to a fake: a missing part raises HardwareNotFound."""

from __future__ import annotations

import logging

from device.config import DeviceConfig
from device.core.model import Screen
from drivers.errors import DriverError

log = logging.getLogger("hcp.drivers")


class NullDisplay:
    """`display.kind = "none"`: a headless evaluator (e.g. keys with LEDs only)."""

    def show(self, screen: Screen) -> None:
        log.debug("screen %s: %s", screen.name, screen.text().replace("\n", " | "))

    def close(self) -> None:
        pass


def build_drivers(config: DeviceConfig):  # type: ignore[no-untyped-def]
    """Return a `device.daemon.Drivers` for this config (imports only what is used)."""
    from device.daemon import Drivers
    from drivers.sim import SimDisplay, SimInput, SimServer

    sim: SimServer | None = None
    if "sim" in (config.input.kind, config.display.kind):
        sim = SimServer(config.device.data_dir / "sim.sock")

    disp_cfg = config.display
    if disp_cfg.kind == "none":
        display = NullDisplay()
    else:
        from drivers.fonts import load_fonts
        from drivers.render import frame_bytes, render
        if disp_cfg.kind == "sim":
            assert sim is not None
            try:
                fonts = load_fonts(disp_cfg.font or None)
            except DriverError as e:
                log.warning("%s; the simulated screen will show placeholder glyphs", e)
                fonts = load_fonts(None, allow_fallback=True)
            display = SimDisplay(sim, lambda screen: frame_bytes(render(screen, fonts)))
        else:
            from drivers.oled import OledDisplay
            fonts = load_fonts(disp_cfg.font or None)
            display = OledDisplay(disp_cfg.kind, i2c_port=disp_cfg.i2c_port,
                                  i2c_address=disp_cfg.i2c_address, rotate=disp_cfg.rotate,
                                  contrast=disp_cfg.contrast, fonts=fonts)

    inp = config.input
    if inp.kind == "sim":
        assert sim is not None
        keys = SimInput(sim)
    elif inp.kind == "gpio":
        from drivers.buttons import GpioButtons
        keys = GpioButtons(inp.pins, pull_up=inp.pull_up, bounce_ms=inp.bounce_ms)
    else:
        from drivers.touch import TouchInput
        keys = TouchInput(inp.touch_device, inp.zones)

    ind = config.indicators
    if ind.kind == "gpio" and (ind.leds or ind.buzzer is not None):
        from drivers.indicators import GpioIndicators
        indicators = GpioIndicators(ind.leds, ind.buzzer)
    else:
        from drivers.indicators import NullIndicators
        indicators = NullIndicators()

    serial = None
    if config.serial.port:
        from drivers.serial_link import PySerialLink
        serial = PySerialLink(config.serial.port, config.serial.baudrate,
                              reopen_s=config.serial.reopen_s)
    return Drivers(keys=keys, display=display, indicators=indicators, serial=serial, sim=sim)
