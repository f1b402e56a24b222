"""`hcp-device doctor` (SPEC §13): checks the hardware and the network a device config
names, one line each `ok`, `warn` or `FAIL` with the fix for each that is not ok.

Safe on a live device: when a daemon answers on its status socket, what it holds (the
serial port, the GPIO keys and LEDs, the I²C display, its broker session) is taken from
its answer rather than opened a second time. Without a daemon each part is probed for
real, and the broker gets a real MQTT CONNECT with the device's own settings, then a
clean DISCONNECT: nothing is published or subscribed, and messages queued for the
device's session are never acknowledged, so they stay queued for the daemon.

This module runs the checks and holds those of the daemon, storage, clock, serial link
and broker; the device's own parts are checked in device/doctor_hardware.py, and a
finding is a device/doctor_findings.Finding.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from device.config import DeviceConfig
from device.control import NoDaemon, ask_status, status_socket_path
from device.doctor_broker import probe_broker
from device.doctor_findings import Finding, fail, ok, warn
from device.doctor_hardware import (
    check_audio,
    check_display,
    check_indicators,
    check_input,
)
from device.status_view import duration

DISK_FAIL_MB = 20      # below this the outbox may not take the next rating
DISK_WARN_MB = 200


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
