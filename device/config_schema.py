"""The device config's schema (SPEC §3): every section and key with its type, default
and check, and the limits those checks apply (id and text lengths, serial URL schemes,
panel sizes, rotations). A new key or a changed range lands here; the cross-checks
between keys and the typed result are device/config.py's and device/config_sections.py's.
"""

from __future__ import annotations

import re
from typing import Any

from common.configschema import (
    BROKER_AUTH_KEYS,
    Check,
    Key,
    Section,
    in_range,
    one_of,
    topic_prefix,
)
from common.text import has_unshowable
from device.core.qr_url import template_problem

# fullmatch, never match with "$": "$" also matches before a final newline.
DEVICE_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
REASON_CODE_RE = re.compile(r"[A-Za-z0-9_-]{1,16}")
# region_code, hall_id and window_id go into every rating record: bounded, so that no
# record can outgrow the 8 KiB payload limit (the bridge would reject every rating).
MAX_ID_CHARS = 64

# The national offline indicators for a bad rating (SPEC §5).
MAX_REASONS = 4
LEVELS = (5, 4, 3, 2, 1)
# Texts of the screen, the same limits for the file and the retained config topic.
MAX_WINDOW_NAME = 40
MAX_REASON_LABEL = 12
# TOML integers are signed 64-bit (tomllib reads longer ones anyway; so does JSON).
INT64 = 2**63
# Raw touch coordinates are evdev's signed 32-bit values.
MAX_TOUCH_COORD = 2**31 - 1
UNSHOWABLE_WHY = "must not contain control characters, line breaks or invisible characters"


def screen_text(limit: int) -> Check:
    """A text the screen shows as one row (a window name, a reason label): refused when
    blank, longer than `limit`, or holding a character the screen cannot show, so that
    what the technician or the platform wrote is exactly what the citizen reads."""
    def check(v: Any) -> str | None:
        if not v.strip():
            return "must not be empty"
        if len(v) > limit:
            return f"must be at most {limit} characters"
        if has_unshowable(v):
            return UNSHOWABLE_WHY
        return None
    return check


window_name = screen_text(MAX_WINDOW_NAME)
reason_label = screen_text(MAX_REASON_LABEL)


def _device_id(v: Any) -> str | None:
    return None if DEVICE_ID_RE.fullmatch(v) else "must match [A-Za-z0-9_-]{1,64}"


def _record_id(v: Any) -> str | None:
    if not v.strip():
        return "must not be empty"
    if len(v) > MAX_ID_CHARS:
        return f"must be at most {MAX_ID_CHARS} characters"
    if has_unshowable(v):
        return UNSHOWABLE_WHY
    return None


def _data_dir(v: Any) -> str | None:
    if not v:
        return "must not be empty"
    if has_unshowable(v):  # a NUL byte made the outbox raise ValueError at start
        return UNSHOWABLE_WHY
    if not v.startswith("/"):
        # Relative to the working directory, which is /run/hcp-device under systemd: a
        # tmpfs, so every stored rating would vanish at the next reboot.
        return "must be an absolute path (e.g. /var/lib/hcp-device)"
    return None


def _host(v: Any) -> str | None:
    if not v:
        return "must not be empty"
    if has_unshowable(v) or any(c.isspace() for c in v):
        return "must be a host name or address, without spaces or control characters"
    return None


def _prefix(v: Any) -> str | None:
    if has_unshowable(v):  # topic_prefix's "$" also matches before a final newline
        return "must not contain control characters or line breaks"
    return topic_prefix(v)

# pyserial's URL handlers (serial/urlhandler/protocol_*.py).
SERIAL_URL_SCHEMES = ("socket", "loop", "rfc2217", "spy", "hwgrep", "alt", "cp2110")


def _serial_port(v: Any) -> str | None:
    """A device path or a pyserial URL: caught here, a typo is a config error (exit 78),
    not missing hardware retried for ever."""
    if not v:
        return None  # no window business system attached
    if has_unshowable(v):
        return f"must not contain control characters, got {v!r}"
    scheme, sep, rest = v.partition("://")
    if sep:
        if scheme not in SERIAL_URL_SCHEMES:
            return (f"unknown URL scheme {scheme!r}: pyserial knows "
                    + ", ".join(f"{s}://" for s in SERIAL_URL_SCHEMES))
        if scheme in ("socket", "rfc2217"):
            host, colon, port = rest.partition("?")[0].rpartition(":")
            # isascii: "²".isdigit() is true, and int("²") raises.
            if (not colon or not host or not port.isascii() or not port.isdigit()
                    or not 0 < int(port) < 65536):
                return f"{scheme}:// needs HOST:PORT, got {v!r}"
        return None
    if not v.startswith("/"):
        return f"must be an absolute device path (e.g. /dev/ttyUSB0) or a URL, got {v!r}"
    return None


def _alsa_device(v: Any) -> str | None:
    """An ALSA PCM name as `aplay -L` lists them: default, plughw:CARD=Device,DEV=0, …"""
    if not v or len(v) > 128:
        return "must be an ALSA device name of 1..128 characters (see aplay -L)"
    if has_unshowable(v) or any(c.isspace() for c in v) or v.startswith("-"):
        return "must be an ALSA device name such as default or plughw:1,0 (see aplay -L)"
    return None


def _clips_dir(v: Any) -> str | None:
    if not v:
        return None  # the built-in clips
    if has_unshowable(v):
        return UNSHOWABLE_WHY
    if not v.startswith("/"):
        return "must be an absolute path (e.g. /etc/hcp/clips)"
    return None


# Panel classes a display may be (SPEC §10): the OLED's 1-bit 128×64, and colour panels.
MONO_SIZE = "128x64"
COLOUR_SIZES = ("480x320", "800x480", "1024x600", "320x480", "480x800", "600x1024")
# [display] rotate: degrees (SPEC §10), or the quarter turns luma.oled counts (1..3).
ROTATIONS = {0: 0, 1: 1, 2: 2, 3: 3, 90: 1, 180: 2, 270: 3}


def _rotate(v: Any) -> str | None:
    return None if v in ROTATIONS else "must be 0, 90, 180 or 270"


def _touch_device(v: Any) -> str | None:
    # A NUL byte made os.open raise ValueError and the touch reader die at start.
    return UNSHOWABLE_WHY if has_unshowable(v) else None


def _fb_device(v: Any) -> str | None:
    if has_unshowable(v) or not v.startswith("/dev/"):
        return "must be a framebuffer device such as /dev/fb0 (ls /sys/class/graphics)"
    return None


def _photos_dir(v: Any) -> str | None:
    if not v:
        return None  # a placeholder instead of photos
    if has_unshowable(v):
        return UNSHOWABLE_WHY
    if not v.startswith("/"):
        return "must be an absolute path (e.g. /var/lib/hcp-device/staff)"
    return None


# A face of a font collection, "file.ttc#N": FreeType counts faces in the low 16 bits.
MAX_FONT_FACE = 0xFFFF


def _font(v: Any) -> str | None:
    """"path" or "path#N": the drivers read N with int() when it is all digits, so such
    an N must be one int() reads ("²".isdigit() is true) and one FreeType takes."""
    _, sep, index = v.rpartition("#")
    if sep and index.isdigit() and not (index.isascii() and len(index) <= 5
                                        and int(index) <= MAX_FONT_FACE):
        return f"the face after '#' must be a number 0..{MAX_FONT_FACE}"
    return None


def _level_table(v: Any) -> str | None:
    """A table keyed by level ("5" … "1") whose values are checked by the caller."""
    bad = [k for k in v if k not in {"1", "2", "3", "4", "5"}]
    if bad:
        return f"keys must be the levels 1..5, not {', '.join(bad)}"
    return None


def _reasons(v: Any) -> str | None:
    if len(v) > MAX_REASONS:
        return f"at most {MAX_REASONS} reasons (four keys pick a reason, one skips)"
    codes = []
    for i, r in enumerate(v):
        if not isinstance(r, dict) or set(r) != {"code", "label"}:
            return f"entry {i + 1} must be a table with exactly code and label"
        if not isinstance(r["code"], str) or not REASON_CODE_RE.fullmatch(r["code"]):
            return f"entry {i + 1}: code must match [A-Za-z0-9_-]{{1,16}}"
        if not isinstance(r["label"], str):
            return f"entry {i + 1}: label must be a string"
        why = reason_label(r["label"])
        if why:
            return f"entry {i + 1}: label {why}"
        codes.append(r["code"])
    if len(set(codes)) != len(codes):
        return "reason codes must be unique"
    return None


SCHEMA: dict[str, Section] = {
    "device": Section({
        "id": Key(str, check=_device_id),
        "region_code": Key(str, check=_record_id),
        "hall_id": Key(str, check=_record_id),
        "window_id": Key(str, check=_record_id),
        "window_name": Key(str, check=window_name),
        "data_dir": Key(str, check=_data_dir),
    }),
    "serial": Section({
        # "" means no window business system is attached (spontaneous ratings only).
        "port": Key(str, check=_serial_port),
        "baudrate": Key(int, 115200, in_range(50, 4_000_000)),
        "require_crc": Key(bool, True),
        "reopen_s": Key(float, 2.0, in_range(0.1, 60)),
    }),
    "input": Section({
        "kind": Key(str, check=one_of("gpio", "touch", "sim")),
        "pins": Key(dict, None, _level_table),
        "pull_up": Key(bool, True),
        "bounce_ms": Key(int, 20, in_range(0, 500)),
        "touch_device": Key(str, "/dev/input/event0", _touch_device),
        # A colour display's touch (SPEC §10): the buttons drawn are the targets; the
        # panel's axes are read from the kernel, these turn them to match the screen.
        "touch_swap_xy": Key(bool, False),
        "touch_invert_x": Key(bool, False),
        "touch_invert_y": Key(bool, False),
        # zones = { 5 = [x0, y0, x1, y1], … } in the panel's raw coordinates.
        "zones": Key(dict, None, _level_table),
    }),
    "display": Section({
        "kind": Key(str, check=one_of("ssd1306", "sh1106", "framebuffer", "sim", "none")),
        "fb_device": Key(str, "/dev/fb0", _fb_device),
        # sim: the panel class shown on the socket; "128x64" is the OLED.
        "size": Key(str, MONO_SIZE, one_of(MONO_SIZE, *COLOUR_SIZES)),
        "staff_photos_dir": Key(str, "", _photos_dir),
        "font": Key(str, "", _font),
        "i2c_port": Key(int, 1, in_range(0, 16)),
        "i2c_address": Key(int, 0x3C, in_range(0x03, 0x77)),
        "rotate": Key(int, 0, _rotate),
        "contrast": Key(int, 255, in_range(0, 255)),
    }),
    "indicators": Section({
        # LEDs on each key ({ 5 = 5, … } BCM pins) and a buzzer; all optional.
        "leds": Key(dict, None, _level_table),
        "buzzer": Key(int, None, in_range(0, 27)),
        "kind": Key(str, "gpio", one_of("gpio", "none")),
    }, required=False),
    "mqtt": Section({
        "host": Key(str, "127.0.0.1", _host),
        "port": Key(int, 1883, in_range(1, 65535)),
        "prefix": Key(str, "hcp/v1", _prefix),
        "keepalive_s": Key(int, 30, in_range(5, 3600)),
        "resend_after_s": Key(float, 300.0, in_range(1, 86400)),
        "telemetry_s": Key(float, 60.0, in_range(1, 86400)),
        "protocol": Key(str, "5", one_of("5", "3.1.1")),
        "session_expiry_s": Key(int, 86400, in_range(0, 2**32 - 1)),
        "max_inflight": Key(int, 20, in_range(1, 1000)),
        **BROKER_AUTH_KEYS,
    }, required=False),
    "ui": Section({
        "prompt_timeout_s": Key(float, 60.0, in_range(1, 3600)),
        "reasons_timeout_s": Key(float, 30.0, in_range(1, 3600)),
        "thanks_s": Key(float, 3.0, in_range(0.1, 60)),
        "lockout_s": Key(float, 1.0, in_range(0, 60)),
        "allow_spontaneous": Key(bool, True),
        "spontaneous_min_interval_s": Key(float, 60.0, in_range(0, 86400)),
        "reasons": Key(list, None, _reasons),
        # 扫码评价 (SPEC §10): placeholders {case_id}, {device_id}, … URL-encoded.
        "qr_url": Key(str, "", template_problem),
    }, required=False),
    "voice": Section({
        # SPEC §10: the clips of the screens through a speaker (ALSA), the sim socket, or not.
        "kind": Key(str, "none", one_of("alsa", "sim", "none")),
        "alsa_device": Key(str, "default", _alsa_device),
        "volume": Key(int, 80, in_range(0, 100)),
        "clips_dir": Key(str, "", _clips_dir),   # <clip>.wav replaces the built-in clip
        "read_levels": Key(bool, False),         # 适老化: the levels read aloud after the prompt
    }, required=False),
    "clock": Section({
        # The device trusts its clock once this file exists (systemd-timesyncd).
        "sync_file": Key(str, "/run/systemd/timesync/synchronized"),
        # For machines that keep time another way (RTC, chrony): always synced.
        "assume_synced": Key(bool, False),
    }, required=False),
}
