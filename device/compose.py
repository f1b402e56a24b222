"""The composition root: builds the drivers a config asks for. The only place that maps
config kinds to driver classes, and the only module of `device` that imports `drivers`;
production never falls back to a fake: a missing part raises HardwareNotFound."""

from __future__ import annotations

import logging
import os
from typing import Literal

from device.config import DeviceConfig
from device.core.model import Screen
from device.ports import Display, Drivers, Indicators, KeyInput, Voice

log = logging.getLogger("hcp.drivers")

SIM_CLOCK_OP_ENV = "HCP_SIM_CLOCK_OP"


class NullDisplay:
    """`display.kind = "none"`: a headless evaluator (e.g. keys with LEDs only)."""

    def show(self, screen: Screen) -> None:
        log.debug("screen %s: %s", screen.name, screen.text().replace("\n", " | "))

    def close(self) -> None:
        pass


def display_fonts(config: DeviceConfig) -> str:
    """Which font files the renderer would draw this config's screens with (for
    `hcp-device doctor`); HardwareNotFound saying what to install when none can draw
    Chinese."""
    from drivers.fonts import load_fonts
    return load_fonts(config.display.font).describe()


def build_drivers(config: DeviceConfig) -> Drivers:
    """The drivers this config asks for (imports only what is used)."""
    from drivers.sim import SimServer
    from drivers.sim_display import SimDisplay, SimInput

    sim: SimServer | None = None
    if "sim" in (config.input.kind, config.display.kind, config.voice.kind):
        # The socket's `clock` op (stepping the wall clock ratings carry) is a test seam:
        # served only when the environment asks for it (tests, the chaos runner).
        sim = SimServer(config.device.data_dir / "sim.sock",
                        clock_op=os.environ.get(SIM_CLOCK_OP_ENV) == "1")

    display: Display
    keys: KeyInput
    indicators: Indicators
    disp_cfg = config.display
    targets = None   # a colour display's buttons: the touch targets (SPEC §10)
    if disp_cfg.kind == "none":
        display = NullDisplay()
    elif disp_cfg.colour:
        from drivers.colour_fonts import load_colour_fonts
        from drivers.colour_photos import PhotoDir
        from drivers.targets import ScreenTargets
        colour_fonts = load_colour_fonts(disp_cfg.font)
        log.info("colour display font: %s", colour_fonts.describe())
        photos = PhotoDir(disp_cfg.staff_photos_dir) if disp_cfg.staff_photos_dir else None
        targets = ScreenTargets()
        if disp_cfg.kind == "sim":
            from drivers.colour_sim import colour_renderer, parse_size
            assert sim is not None
            sim.targets = targets
            display = SimDisplay(sim, colour_renderer(parse_size(disp_cfg.size), colour_fonts,
                                                      photos, targets))
        else:
            from drivers.framebuffer import FramebufferDisplay
            display = FramebufferDisplay(disp_cfg.fb_device, disp_cfg.rotate, colour_fonts,
                                         photos=photos, targets=targets)
    else:
        from drivers.fonts import load_fonts
        from drivers.render import render_frame
        from drivers.sim_display import SimFrame
        fonts = load_fonts(disp_cfg.font)
        log.info("display font: %s", fonts.describe())
        if disp_cfg.kind == "sim":
            assert sim is not None
            display = SimDisplay(sim, lambda screen: SimFrame(*render_frame(screen, fonts)))
        else:
            from drivers.oled import OledDisplay
            kind: Literal["ssd1306", "sh1106"] = (
                "sh1106" if disp_cfg.kind == "sh1106" else "ssd1306")
            display = OledDisplay(kind, i2c_port=disp_cfg.i2c_port,
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
        if targets is not None:
            from drivers.targets import TouchCalibration
            keys = TouchInput(inp.touch_device, {}, targets=targets, calibration=TouchCalibration(
                inp.touch_swap_xy, inp.touch_invert_x, inp.touch_invert_y))
        else:
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
    voice: Voice | None = None
    if config.voice.kind != "none":
        from drivers.voice import build_voice
        voice = build_voice(config.voice.kind, config.voice.clips_dir,
                            config.voice.alsa_device, config.ui.volume, sim)
    return Drivers(keys=keys, display=display, indicators=indicators, serial=serial,
                   control=sim, voice=voice)
