"""`hcp-device doctor`'s checks of the device's own parts: the display (I²C panel or
framebuffer) and its fonts, the keys (GPIO or touch), the indicator lights and the speaker.
A part the running daemon holds is judged by its answer, never opened a second time.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import stat
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from device.config import DeviceConfig
from device.doctor_findings import Finding, fail, ok, running_fault, warn
from device.ports import DriverError

I2C_SLAVE = 0x0703     # linux/i2c-dev.h


def check_display(config: DeviceConfig, daemon: dict[str, Any] | None) -> Iterable[Finding]:
    d = config.display
    kind = d.kind
    if kind == "none":
        yield ok("display", "none configured (a headless evaluator)")
        return
    if kind in ("ssd1306", "sh1106"):
        yield running_fault(daemon, "display") or check_i2c(d.i2c_port, d.i2c_address,
                                                                  kind)
    elif kind == "framebuffer":
        # Not in every config version: read defensively.
        fb = str(getattr(d, "fb_device", "") or getattr(d, "device", "") or "/dev/fb0")
        yield running_fault(daemon, "display") or check_device_node(
            "display", fb, "framebuffer",
            "enable the panel's overlay (dtoverlay=… in /boot/firmware/config.txt) and "
            "reboot; add the daemon's user to the video group")
    elif kind == "sim":
        yield running_fault(daemon, "display") or ok("display", "simulated (sim.sock)")
    yield check_fonts(config)


def check_fonts(config: DeviceConfig) -> Finding:
    from device.compose import display_fonts  # the composition root owns the drivers
    try:
        return ok("fonts", f"Chinese glyphs from {_by_file(display_fonts(config))}")
    except DriverError as e:
        return fail("fonts", str(e), "sudo apt install fonts-wqy-zenhei, or set [display] "
                                     "font to a file with Chinese glyphs")


def check_i2c(port: int, address: int, kind: str) -> Finding:
    bus = f"/dev/i2c-{port}"
    part = f"display ({kind} at {address:#04x} on {bus})"
    enable = ("enable I²C: sudo raspi-config nonint do_i2c 0 (or dtparam=i2c_arm=on in "
              "/boot/firmware/config.txt) and reboot")
    if not os.path.exists(bus):
        return fail(part, f"{bus} does not exist", enable if port == 1 else
                    f"check [display] i2c_port ({port}); {enable}")
    try:
        fd = os.open(bus, os.O_RDWR)
    except OSError as e:
        return fail(part, f"cannot open {bus}: {e.strerror}",
                    "add the daemon's user to the i2c group (sudo adduser hcp-device i2c)")
    try:
        try:
            fcntl.ioctl(fd, I2C_SLAVE, address)
        except OSError as e:
            if e.errno == errno.EBUSY:
                return fail(part, f"address {address:#04x} is claimed by a kernel driver",
                            "remove the overlay that binds it, or stop what uses the panel")
            return fail(part, f"cannot select address {address:#04x}: {e.strerror}",
                        "check [display] i2c_address")
        try:
            os.read(fd, 1)   # the panel ACKs its address: a read of one byte tells
        except OSError as e:
            return fail(part, f"nothing answers at {address:#04x} ({e.strerror})",
                        f"check the wiring and power, and the address with "
                        f"`i2cdetect -y {port}` (0x3c or 0x3d)")
    finally:
        os.close(fd)
    return ok(part, "the panel answers")


def check_device_node(part: str, path: str, what: str, fix: str,
                      write: bool = True) -> Finding:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return fail(part, f"{what} {path} does not exist", fix)
    except OSError as e:
        return fail(part, f"{what} {path}: {e.strerror}", fix)
    if not stat.S_ISCHR(st.st_mode):
        return fail(part, f"{path} is not a device", f"check the {what} path in the config")
    try:
        os.close(os.open(path, (os.O_RDWR if write else os.O_RDONLY) | os.O_NONBLOCK))
    except OSError as e:
        return fail(part, f"cannot open {what} {path}: {e.strerror}", fix)
    return ok(part, f"{what} {path} opens")


def check_input(config: DeviceConfig, daemon: dict[str, Any] | None) -> Iterable[Finding]:
    inp = config.input
    if inp.kind == "sim":
        yield running_fault(daemon, "keys") or ok("keys", "simulated (sim.sock)")
    elif inp.kind == "touch":
        yield running_fault(daemon, "keys") or check_device_node(
            "keys (touch)", inp.touch_device, "touch device",
            "plug in the touch panel, check [input] touch_device (ls /dev/input/by-id/), "
            "add the daemon's user to the input group", write=False)
    else:
        pins = sorted(inp.pins.values())
        yield running_fault(daemon, "keys") or check_gpio(f"keys (GPIO {_pins(pins)})",
                                                           pins)


def check_indicators(config: DeviceConfig,
                     daemon: dict[str, Any] | None) -> Iterable[Finding]:
    ind = config.indicators
    pins = sorted(list(ind.leds.values()) + ([ind.buzzer] if ind.buzzer is not None else []))
    if ind.kind != "gpio" or not pins:
        return
    yield running_fault(daemon, "indicators") or check_gpio(
        f"indicators (GPIO {_pins(pins)})", pins)


def check_gpio(part: str, pins: list[int]) -> Finding:
    """Claim each pin as an input for a moment (gpiozero, as the drivers do) and let go.
    gpiozero's fallback warnings (one per pin library it tries) become one line."""
    try:
        import gpiozero
    except ImportError:
        return fail(part, "gpiozero is not installed",
                    "install the device extras: pip install '.[device]'")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        busy: list[str] = []
        try:
            for pin in pins:
                try:
                    gpiozero.DigitalInputDevice(pin).close()
                except gpiozero.GPIOPinInUse:
                    busy.append(f"GPIO{pin} in use in this process")
                except gpiozero.BadPinFactory:
                    raise
                except Exception as e:  # noqa: BLE001 - lgpio says "GPIO busy" its own way
                    busy.append(f"GPIO{pin}: {e}")
        except gpiozero.BadPinFactory:
            tried = "; ".join(str(w.message).replace("Falling back from ", "")
                              for w in caught
                              if issubclass(w.category, gpiozero.PinFactoryFallback))
            return fail(part, "no GPIO on this machine" + (f" ({tried})" if tried else ""),
                        "run on a Raspberry Pi with lgpio installed (pip install lgpio; "
                        "Raspberry Pi OS also has sudo apt install python3-lgpio)")
    if busy:
        return fail(part, "; ".join(busy), "another process holds the pin: stop it "
                                           "(`gpioinfo` names the holder) or change the pin "
                                           "in the config")
    return ok(part, "free")


def check_audio(config: DeviceConfig, daemon: dict[str, Any] | None) -> Iterable[Finding]:
    """The speaker of `[voice] kind = "alsa"`. A warning, never a FAIL: the device rates
    without its voice (SPEC §10)."""
    if config.voice.kind != "alsa":
        return
    part = f"voice ({config.voice.alsa_device})"
    if daemon is not None:
        faults = daemon.get("faults")
        if isinstance(faults, dict) and "voice" in faults:
            yield warn(part, f"the running daemon reports: {faults['voice']}",
                       "check the speaker and [voice] alsa_device (aplay -L); "
                       "docs/hardware-input.md §6")
            return
    if shutil.which("aplay") is None:
        yield warn(part, "no aplay", "sudo apt install alsa-utils")
        return
    cards = sorted(Path("/dev/snd").glob("pcmC*D*p")) if Path("/dev/snd").is_dir() else []
    if not cards:
        yield warn(part, "no sound playback device (/dev/snd/pcmC*D*p)",
                   "plug in the USB speaker, or enable the audio jack (dtparam=audio=on); "
                   "docs/hardware-input.md §6")
        return
    yield ok(part, f"{len(cards)} playback device(s)"
             + ("; working in the running daemon" if daemon is not None else ""))



def _by_file(described: str) -> str:
    """"11px=a, 12px=a, 16px=b" as "a (11, 12 px), b (16 px)": one file named once."""
    sizes: dict[str, list[str]] = {}
    for part in described.split(", "):
        size, _, path = part.partition("=")
        sizes.setdefault(path, []).append(size.removesuffix("px"))
    return ", ".join(f"{path} ({', '.join(s)} px)" for path, s in sizes.items())


def _pins(pins: list[int]) -> str:
    return ", ".join(str(p) for p in pins)
