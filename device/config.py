"""The device's TOML config (SPEC §3): schema, cross-checks and typed result.

Whatever a file holds, `parse_device_config` returns a config the daemon can run or raises
ConfigError with one line per problem naming the file and the key: never another
exception. Texts the screen shows (`window_name`, reason labels) are refused, not
changed, when they hold a line break or another character the screen cannot show: a
technician sees the line and fixes the file (docs/install.md). `data_dir_problems` adds
what `hcp-device check-config` checks on the disk.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.configschema import (
    BROKER_AUTH_KEYS,
    Check,
    ConfigError,
    Key,
    Section,
    broker_auth_problems,
    in_range,
    load_toml,
    one_of,
    topic_prefix,
    validate,
)
from common.text import has_unshowable
from device.core.qr_url import template_problem
from device.core.settings import DEFAULT_REASONS, UiSettings

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
        "touch_device": Key(str, "/dev/input/event0"),
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
        "font": Key(str, ""),
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


@dataclass(frozen=True)
class DeviceSection:
    id: str
    region_code: str
    hall_id: str
    window_id: str
    window_name: str
    data_dir: Path


@dataclass(frozen=True)
class SerialSection:
    port: str
    baudrate: int
    require_crc: bool
    reopen_s: float


@dataclass(frozen=True)
class InputSection:
    kind: str
    pins: dict[int, int]
    pull_up: bool
    bounce_ms: int
    touch_device: str
    zones: dict[int, tuple[int, int, int, int]]
    touch_swap_xy: bool = False
    touch_invert_x: bool = False
    touch_invert_y: bool = False


@dataclass(frozen=True)
class DisplaySection:
    kind: str
    font: str
    i2c_port: int
    i2c_address: int
    rotate: int             # quarter turns, 0..3
    contrast: int
    fb_device: str = "/dev/fb0"
    size: str = MONO_SIZE   # sim only
    staff_photos_dir: str = ""

    @property
    def colour(self) -> bool:
        """A colour panel: its own layout, and touch targets from the buttons it draws."""
        return self.kind == "framebuffer" or (self.kind == "sim" and self.size != MONO_SIZE)


@dataclass(frozen=True)
class IndicatorsSection:
    kind: str
    leds: dict[int, int]
    buzzer: int | None


@dataclass(frozen=True)
class MqttSection:
    host: str
    port: int
    prefix: str
    keepalive_s: int
    resend_after_s: float
    telemetry_s: float
    protocol: str
    session_expiry_s: int
    max_inflight: int
    tls: bool
    ca_file: str
    client_cert: str
    client_key: str
    username: str
    password_file: str


@dataclass(frozen=True)
class VoiceSection:
    """[voice]; `volume` and `read_levels` go to the core's settings (UiSettings), where
    the retained config topic may change them."""

    kind: str = "none"
    alsa_device: str = "default"
    clips_dir: str = ""


@dataclass(frozen=True)
class ClockSection:
    sync_file: str
    assume_synced: bool


@dataclass(frozen=True)
class DeviceConfig:
    path: Path
    device: DeviceSection
    serial: SerialSection
    input: InputSection
    display: DisplaySection
    indicators: IndicatorsSection
    mqtt: MqttSection
    ui: UiSettings
    clock: ClockSection
    voice: VoiceSection = VoiceSection()


def _int_table(path: Path, section: str, key: str, raw: dict[str, Any] | None,
               problems: list[str], lo: int, hi: int) -> dict[int, int]:
    out: dict[int, int] = {}
    for k, v in (raw or {}).items():
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            problems.append(f"{path}: [{section}] {key}.{k}: must be an integer {lo}..{hi}, "
                            f"got {v!r}")
        else:
            out[int(k)] = v
    return out


def one_line(problem: str, limit: int = 300) -> str:
    """A problem as one line of the journal: a key or value holding a line break (TOML
    allows "a\nb" as a key) must not split it or forge the next line."""
    if has_unshowable(problem):
        problem = "".join(ch.encode("unicode_escape").decode("ascii") if has_unshowable(ch)
                          else ch for ch in problem)
    return problem if len(problem) <= limit else problem[:limit - 1] + "…"


_TOO_BIG = object()  # stands in for an integer no setting can hold (see without_huge_ints)


def without_huge_ints(where: Path | str, data: Mapping[str, Any],
                      schema: Mapping[str, Section]) -> tuple[dict[str, Any], list[str],
                                                              tuple[str, ...]]:
    """`data` with each known key holding an integer beyond 64 bits replaced, one problem
    for each, and the problem prefixes `validate` would add for them (to drop).

    common.configschema.validate converts an integer to float for a number setting, and a
    400-digit one raises OverflowError: a traceback instead of a problem line."""
    clean: dict[str, Any] = {}
    problems: list[str] = []
    drop: list[str] = []
    for name, section in data.items():
        if not isinstance(section, Mapping) or name not in schema:
            clean[name] = section
            continue
        kept = dict(section)
        for key, value in section.items():
            if (key in schema[name].keys and isinstance(value, int)
                    and not isinstance(value, bool) and not -INT64 <= value < INT64):
                prefix = f"{where}: [{name}] {key}:"
                problems.append(f"{prefix} a number outside the 64-bit range")
                drop.append(prefix + " ")
                kept[key] = _TOO_BIG
        clean[name] = kept
    return clean, problems, tuple(drop)


def parse_device_config(path: Path, data: dict[str, Any]) -> DeviceConfig:
    """Validate parsed TOML; raise ConfigError listing every problem, one line each."""
    data, problems, drop = without_huge_ints(path, data, SCHEMA)
    v, found = validate(path, data, SCHEMA)
    problems += [p for p in found if not p.startswith(drop)] if drop else found
    if problems and any("section missing" in p or "must be a table" in p for p in problems):
        raise ConfigError([one_line(p) for p in problems])
    d, s, i, disp, ind, m, u, c, vo = (v[k] for k in (
        "device", "serial", "input", "display", "indicators", "mqtt", "ui", "clock", "voice"))

    pins = _int_table(path, "input", "pins", i.get("pins"), problems, 0, 27)
    zones: dict[int, tuple[int, int, int, int]] = {}
    for k, z in (i.get("zones") or {}).items():
        if (not isinstance(z, list) or len(z) != 4
                or not all(isinstance(n, int) and not isinstance(n, bool)
                           and 0 <= n <= MAX_TOUCH_COORD for n in z)
                or z[0] >= z[2] or z[1] >= z[3]):
            problems.append(f"{path}: [input] zones.{k}: must be [x0, y0, x1, y1] "
                            f"with x0 < x1 and y0 < y1, each 0..{MAX_TOUCH_COORD}, "
                            f"got {z!r}")
        else:
            zones[int(k)] = (z[0], z[1], z[2], z[3])
    leds = _int_table(path, "indicators", "leds", ind.get("leds"), problems, 0, 27)

    # Cross-checks ------------------------------------------------------------
    kind = i.get("kind")
    if kind == "gpio":
        if "pins" in i and sorted(pins) != [1, 2, 3, 4, 5] and i.get("pins") is not None:
            problems.append(f"{path}: [input] pins: needs a BCM pin for each level 1..5")
        if i.get("pins") is None:
            problems.append(f"{path}: [input] pins: required when kind = \"gpio\"")
    colour = disp.get("kind") == "framebuffer" or (
        disp.get("kind") == "sim" and disp.get("size", MONO_SIZE) != MONO_SIZE)
    if disp.get("size", MONO_SIZE) != MONO_SIZE and disp.get("kind") != "sim":
        problems.append(f"{path}: [display] size: only for kind = \"sim\" (a real panel "
                        "reports its own size)")
    if kind == "touch" and colour and i.get("zones") is not None:
        problems.append(f"{path}: [input] zones: not used with a colour display (the "
                        "buttons it draws are the touch targets): remove it")
    if kind == "touch" and not colour:
        if i.get("zones") is None:
            problems.append(f"{path}: [input] zones: required when kind = \"touch\"")
        elif sorted(zones) != [1, 2, 3, 4, 5] and len(zones) == len(i["zones"]):
            problems.append(f"{path}: [input] zones: needs a zone for each level 1..5")
    used = list(pins.values()) + list(leds.values())
    if ind.get("buzzer") is not None:
        used.append(ind["buzzer"])
    if kind == "gpio":
        dupes = sorted({p for p in used if used.count(p) > 1})
        if dupes:
            problems.append(f"{path}: [input]/[indicators]: BCM pins used twice: {dupes}")
    # A device may authenticate by its client certificate alone, with a user name only.
    problems += broker_auth_problems(path, m, password_required=False)
    font_path = str(disp.get("font") or "").rsplit("#", 1)[0]  # "file.ttc#2" picks a face
    if font_path and not Path(font_path).is_file():
        problems.append(f"{path}: [display] font: no such file {disp['font']!r}")

    if problems:
        raise ConfigError([one_line(p) for p in problems])

    reasons = DEFAULT_REASONS if u["reasons"] is None else tuple(
        (r["code"], r["label"]) for r in u["reasons"])
    return DeviceConfig(
        path=path,
        device=DeviceSection(d["id"], d["region_code"], d["hall_id"], d["window_id"],
                             d["window_name"], Path(d["data_dir"])),
        serial=SerialSection(s["port"], s["baudrate"], s["require_crc"], s["reopen_s"]),
        input=InputSection(str(kind), pins, i["pull_up"], i["bounce_ms"], i["touch_device"], zones,
                           i["touch_swap_xy"], i["touch_invert_x"], i["touch_invert_y"]),
        display=DisplaySection(disp["kind"], disp["font"], disp["i2c_port"],
                               disp["i2c_address"], ROTATIONS[disp["rotate"]], disp["contrast"],
                               disp["fb_device"], disp["size"], disp["staff_photos_dir"]),
        indicators=IndicatorsSection(ind["kind"], leds, ind["buzzer"]),
        mqtt=MqttSection(**m),
        ui=UiSettings(
            window_name=d["window_name"],
            prompt_timeout_s=u["prompt_timeout_s"],
            reasons_timeout_s=u["reasons_timeout_s"],
            thanks_s=u["thanks_s"],
            lockout_s=u["lockout_s"],
            allow_spontaneous=u["allow_spontaneous"],
            spontaneous_min_interval_s=u["spontaneous_min_interval_s"],
            reasons=reasons,
            qr_url=u["qr_url"],
            read_levels=vo["read_levels"],
            volume=vo["volume"],
        ),
        clock=ClockSection(c["sync_file"], c["assume_synced"]),
        voice=VoiceSection(vo["kind"], vo["alsa_device"], vo["clips_dir"]),
    )


def data_dir_problems(config: DeviceConfig) -> list[str]:
    """What `hcp-device check-config` finds on the disk: a [device] data_dir in which the
    daemon could not open its outbox (it would exit 73 at start). Creates nothing."""
    from device.outbox import Outbox  # the outbox's own rules; not needed to parse
    why = Outbox.probe(config.device.data_dir)
    return [] if why is None else [one_line(f"{config.path}: [device] data_dir: {why}")]


def load_device_config(path: str | Path) -> DeviceConfig:
    p = Path(path)
    return parse_device_config(p, load_toml(p))
