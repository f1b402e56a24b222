"""The device's TOML config (SPEC §3): parsing, cross-checks and the typed result.

Whatever a file holds, `parse_device_config` returns a config the daemon can run or raises
ConfigError with one line per problem naming the file and the key: never another
exception. Texts the screen shows (`window_name`, reason labels) are refused, not
changed, when they hold a line break or another character the screen cannot show: a
technician sees the line and fixes the file (docs/install.md). `data_dir_problems` adds
what `hcp-device check-config` checks on the disk. The schema (keys, types, ranges) is
device/config_schema.py; the dataclasses are device/config_sections.py; both are
re-exported here, so `device.config` stays the one name importers use.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common.configschema import (
    ConfigError,
    Section,
    broker_auth_problems,
    load_toml,
    validate,
)
from common.text import has_unshowable
from device.config_schema import (
    COLOUR_SIZES,
    DEVICE_ID_RE,
    INT64,
    LEVELS,
    MAX_ID_CHARS,
    MAX_REASON_LABEL,
    MAX_REASONS,
    MAX_TOUCH_COORD,
    MAX_WINDOW_NAME,
    MONO_SIZE,
    REASON_CODE_RE,
    ROTATIONS,
    SCHEMA,
    SERIAL_URL_SCHEMES,
    UNSHOWABLE_WHY,
    reason_label,
    screen_text,
    window_name,
)
from device.config_sections import (
    ClockSection,
    DeviceConfig,
    DeviceSection,
    DisplaySection,
    IndicatorsSection,
    InputSection,
    MqttSection,
    SerialSection,
    VoiceSection,
)
from device.core.settings import DEFAULT_REASONS, UiSettings

__all__ = [
    # parsing (this module)
    "ConfigError", "data_dir_problems", "load_device_config", "one_line",
    "parse_device_config", "without_huge_ints",
    # the schema (device.config_schema)
    "COLOUR_SIZES", "DEVICE_ID_RE", "INT64", "LEVELS", "MAX_ID_CHARS", "MAX_REASON_LABEL",
    "MAX_REASONS", "MAX_TOUCH_COORD", "MAX_WINDOW_NAME", "MONO_SIZE", "REASON_CODE_RE",
    "ROTATIONS", "SCHEMA", "SERIAL_URL_SCHEMES", "UNSHOWABLE_WHY", "reason_label",
    "screen_text", "window_name",
    # the typed result (device.config_sections)
    "ClockSection", "DeviceConfig", "DeviceSection", "DisplaySection", "IndicatorsSection",
    "InputSection", "MqttSection", "SerialSection", "UiSettings", "VoiceSection",
]


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
