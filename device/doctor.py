"""`hcp-device doctor` (SPEC §13): checks the hardware and the network a device config
names, one line each `ok`, `warn` or `FAIL` with the fix for each that is not ok.

Safe on a live device: when a daemon answers on its status socket, what it holds (the
serial port, the GPIO keys and LEDs, the I²C display, its broker session) is taken from
its answer rather than opened a second time. Without a daemon each part is probed for
real, and the broker gets a real MQTT CONNECT with the device's own settings, then a
clean DISCONNECT: nothing is published or subscribed, and messages queued for the
device's session are never acknowledged, so they stay queued for the daemon.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import socket
import stat
import sys
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TextIO

from device.config import DeviceConfig
from device.control import NoDaemon, ask_status, status_socket_path
from device.doctor_broker import probe_broker
from device.ports import DriverError
from device.status_view import duration, t

Level = Literal["ok", "warn", "FAIL"]

DISK_FAIL_MB = 20      # below this the outbox may not take the next rating
DISK_WARN_MB = 200
I2C_SLAVE = 0x0703     # linux/i2c-dev.h


@dataclass(frozen=True)
class Finding:
    level: Level
    part: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        """One line, whatever the texts hold (a driver's error, a daemon's answer)."""
        text = f"{self.level:<4} {t(self.part)}: {t(self.detail, 400)}"
        return text + (f" — fix: {t(self.fix, 400)}" if self.fix and self.level != "ok"
                       else "")


def ok(part: str, detail: str) -> Finding:
    return Finding("ok", part, detail)


def warn(part: str, detail: str, fix: str) -> Finding:
    return Finding("warn", part, detail, fix)


def fail(part: str, detail: str, fix: str) -> Finding:
    return Finding("FAIL", part, detail, fix)


def doctor_command(config: DeviceConfig, out: TextIO = sys.stdout) -> int:
    """Print one line per check as it is found; 1 when any check FAILs, else 0."""
    failed = False
    for finding in run_checks(config):
        print(finding.line(), file=out, flush=True)
        failed = failed or finding.level == "FAIL"
    return 1 if failed else 0


def run_checks(config: DeviceConfig) -> Iterable[Finding]:
    daemon, daemon_finding = _ask_daemon(config)
    yield daemon_finding
    yield from check_data_dir(config)
    yield check_clock(config, daemon)
    yield from check_display(config, daemon)
    yield from check_input(config, daemon)
    yield from check_indicators(config, daemon)
    yield check_serial(config, daemon)
    yield from check_audio(config, daemon)
    yield check_broker(config, daemon)


# --- the running daemon -------------------------------------------------------------


def _ask_daemon(config: DeviceConfig) -> tuple[dict[str, Any] | None, Finding]:
    path = status_socket_path(config.device.data_dir)
    try:
        status = ask_status(path)
    except NoDaemon as e:
        if "permission denied" in str(e):
            return None, fail("daemon", str(e), "run the doctor with sudo, or as a member "
                                                "of the daemon's group")
        return None, warn("daemon", f"not running ({e})",
                          "start it when the checks below pass: "
                          "sudo systemctl start hcp-device")
    return status, ok("daemon", f"running, version {status.get('version', '?')}, up "
                                f"{duration(status.get('uptime_s'))}; parts it holds are "
                                "checked through it")


# --- storage and time -------------------------------------------------------------------


def check_data_dir(config: DeviceConfig) -> Iterable[Finding]:
    from device.outbox import Outbox
    data_dir = config.device.data_dir
    why = Outbox.probe(data_dir)
    if why is None:
        yield ok("data_dir", f"{data_dir} can hold the outbox")
    else:
        yield fail("data_dir", f"{data_dir} {why}",
                   f"sudo install -d -o <daemon user> -g <daemon group> -m 0750 {data_dir} "
                   "(the packaged unit runs as hcp-device)")
    existing = Path(data_dir)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        free_mb = shutil.disk_usage(existing).free / (1 << 20)
    except OSError as e:
        yield fail("disk", f"cannot read free space of {existing}: {e.strerror}",
                   "check the file system holding [device] data_dir")
        return
    fix = "free space on that file system (old logs: sudo journalctl --vacuum-size=50M)"
    if free_mb < DISK_FAIL_MB:
        yield fail("disk", f"{free_mb:.0f} MiB free at {existing}", fix)
    elif free_mb < DISK_WARN_MB:
        yield warn("disk", f"{free_mb:.0f} MiB free at {existing}", fix)
    else:
        yield ok("disk", f"{free_mb:.0f} MiB free at {existing}")


def check_clock(config: DeviceConfig, daemon: dict[str, Any] | None) -> Finding:
    synced = daemon.get("clock_synced") if daemon else None
    if synced is None:
        synced = config.clock.assume_synced or os.path.exists(config.clock.sync_file)
    if synced:
        how = "assumed ([clock] assume_synced)" if config.clock.assume_synced else \
            f"synchronised ({config.clock.sync_file} exists)"
        return ok("clock", how)
    return warn("clock", f"not synchronised ({config.clock.sync_file} is missing): the "
                         "device rates on, and its ratings say clock_synced=false",
                "enable systemd-timesyncd with an NTP server the hall can reach "
                "(NTP= in /etc/systemd/timesyncd.conf; sudo timedatectl set-ntp true)")


# --- screen, keys, lights, sound ---------------------------------------------------


def check_display(config: DeviceConfig, daemon: dict[str, Any] | None) -> Iterable[Finding]:
    d = config.display
    kind = d.kind
    if kind == "none":
        yield ok("display", "none configured (a headless evaluator)")
        return
    if kind in ("ssd1306", "sh1106"):
        yield _running_fault(daemon, "display") or check_i2c(d.i2c_port, d.i2c_address,
                                                                  kind)
    elif kind == "framebuffer":
        # Not in every config version: read defensively.
        fb = str(getattr(d, "fb_device", "") or getattr(d, "device", "") or "/dev/fb0")
        yield _running_fault(daemon, "display") or check_device_node(
            "display", fb, "framebuffer",
            "enable the panel's overlay (dtoverlay=… in /boot/firmware/config.txt) and "
            "reboot; add the daemon's user to the video group")
    elif kind == "sim":
        yield _running_fault(daemon, "display") or ok("display", "simulated (sim.sock)")
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
        yield _running_fault(daemon, "keys") or ok("keys", "simulated (sim.sock)")
    elif inp.kind == "touch":
        yield _running_fault(daemon, "keys") or check_device_node(
            "keys (touch)", inp.touch_device, "touch device",
            "plug in the touch panel, check [input] touch_device (ls /dev/input/by-id/), "
            "add the daemon's user to the input group", write=False)
    else:
        pins = sorted(inp.pins.values())
        yield _running_fault(daemon, "keys") or check_gpio(f"keys (GPIO {_pins(pins)})",
                                                           pins)


def check_indicators(config: DeviceConfig,
                     daemon: dict[str, Any] | None) -> Iterable[Finding]:
    ind = config.indicators
    pins = sorted(list(ind.leds.values()) + ([ind.buzzer] if ind.buzzer is not None else []))
    if ind.kind != "gpio" or not pins:
        return
    yield _running_fault(daemon, "indicators") or check_gpio(
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


# --- the window system ----------------------------------------------------------------


def check_serial(config: DeviceConfig, daemon: dict[str, Any] | None) -> Finding:
    port = config.serial.port
    part = f"serial ({port})" if port else "serial"
    if not port:
        return ok(part, "none configured (no window business system attached)")
    if daemon is not None:
        if daemon.get("serial_open"):
            return ok(part, "open by the running daemon")
        return fail(part, "the running daemon cannot open it"
                    + (f" ({daemon['faults']['serial']})"
                       if isinstance(daemon.get("faults"), dict)
                       and "serial" in daemon["faults"] else ""),
                    "check the cable and [serial] port; `journalctl -u hcp-device` says why")
    scheme, sep, rest = port.partition("://")
    if sep:
        if scheme not in ("socket", "rfc2217"):
            return ok(part, "a pyserial URL; not probed")
        host, _, tcp_port = rest.partition("?")[0].rpartition(":")
        try:
            socket.create_connection((host, int(tcp_port)), timeout=3).close()
        except OSError as e:
            return fail(part, f"cannot connect: {e.strerror or e}",
                        "start the window system's serial server, or check the URL")
        return ok(part, "the serial server accepts connections")
    fix_missing = ("plug in the USB-serial adapter and name it by its stable path "
                   "(ls /dev/serial/by-id/)")
    try:
        fd = os.open(port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except FileNotFoundError:
        return fail(part, "does not exist", fix_missing)
    except PermissionError:
        return fail(part, "permission denied",
                    "add the daemon's user to the dialout group (sudo adduser hcp-device "
                    "dialout)")
    except OSError as e:
        return fail(part, f"cannot open: {e.strerror}", fix_missing)
    try:
        # pyserial's exclusive open is this flock: if it is held, the daemon's open fails.
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return fail(part, "busy: another process holds it",
                    f"find it with `fuser -v {port}` (a serial console on the port? "
                    "sudo raspi-config nonint do_serial_cons 1)")
    except OSError:
        pass   # a port that cannot be flock'ed cannot be busy that way either
    finally:
        os.close(fd)
    return ok(part, "exists, opens and is not busy")


# --- the broker ---------------------------------------------------------------------


def check_broker(config: DeviceConfig, daemon: dict[str, Any] | None) -> Finding:
    cfg = config.mqtt
    url = f"{'mqtts' if cfg.tls else 'mqtt'}://{cfg.host}:{cfg.port}"
    part = f"broker ({url})"
    if daemon is not None:
        if daemon.get("mqtt_connected"):
            return ok(part, f"the running daemon is connected "
                            f"({daemon.get('broker_connects', '?')} connection(s) since start)")
        # Connecting here with the device's client id would take its session over: tell
        # what it sees, and how to learn more.
        return fail(part, "the running daemon is not connected "
                          f"({daemon.get('broker_connects', '?')} connection(s) since start)",
                    "`journalctl -u hcp-device` says why it is refused or unreachable; "
                    "check [mqtt] host, port, tls and credentials, and the broker")
    why, fix = probe_broker(cfg, config.device.id)
    if why is None:
        login = f" as {cfg.username}" if cfg.username else ""
        tls = " over TLS" if cfg.tls else ""
        return ok(part, f"accepted a CONNECT{login}{tls} (MQTT {cfg.protocol})")
    return fail(part, why, fix)


# --- helpers --------------------------------------------------------------------------


def _running_fault(daemon: dict[str, Any] | None, part: str) -> Finding | None:
    """A part the running daemon reports as failing; None when it is fine or no daemon
    answers (then the part is probed directly)."""
    if daemon is None:
        return None
    faults = daemon.get("faults")
    if isinstance(faults, dict) and part in faults:
        return fail(part, f"the running daemon reports: {faults[part]}",
                    "check the part's wiring; `journalctl -u hcp-device` has the detail")
    return ok(part, "working in the running daemon")


def _by_file(described: str) -> str:
    """"11px=a, 12px=a, 16px=b" as "a (11, 12 px), b (16 px)": one file named once."""
    sizes: dict[str, list[str]] = {}
    for part in described.split(", "):
        size, _, path = part.partition("=")
        sizes.setdefault(path, []).append(size.removesuffix("px"))
    return ", ".join(f"{path} ({', '.join(s)} px)" for path, s in sizes.items())


def _pins(pins: list[int]) -> str:
    return ", ".join(str(p) for p in pins)
