"""The retained `config` topic (SPEC §7): display and UI settings pushed by the platform.

A message is validated as a whole against the same rules as the `[ui]` section, the
`window_name`, and `read_levels` and `volume` of `[voice]` in the TOML file
(device/config.py: one rule for both) and applied atomically, on top of the file's
settings; a bad one is refused with the list of problems and changes nothing. Whatever
the payload, `parse_remote_config` returns either the changes or the problems, never
raises: a retained message comes back at every start, so an exception here would be a
crash loop.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from common.configschema import Key, Section, validate
from device.config import SCHEMA, one_line, window_name, without_huge_ints
from device.core.settings import UiSettings

# A UI config is a few hundred bytes; 16 KiB leaves room for any future key.
MAX_PAYLOAD = 16 * 1024
MAX_PROBLEMS = 20
_WHERE = "config topic"

_REMOTE = Section({
    "window_name": Key(str, None, window_name),
    **SCHEMA["ui"].keys,
    # The voice a hall may tune from the platform (SPEC §10); which speaker stays the file's.
    "read_levels": SCHEMA["voice"].keys["read_levels"],
    "volume": SCHEMA["voice"].keys["volume"],
})


class _Refused(ValueError):
    """A JSON text this topic does not take (a constant, a key given twice)."""


def too_large(size: int) -> list[str]:
    """The problem of a payload of `size` bytes, or none: for a transport that drops a
    large message before its bytes reach `parse_remote_config`."""
    return [f"payload of {size} bytes is over {MAX_PAYLOAD}"] if size > MAX_PAYLOAD else []


def parse_remote_config(payload: bytes) -> dict[str, Any] | list[str]:
    """The settings a message sets (only the keys it names), or its problems (at most
    MAX_PROBLEMS, each one line, safe to log and to publish)."""
    problems = too_large(len(payload))
    if problems:
        return problems
    try:
        data = json.loads(payload.decode("utf-8"), parse_constant=_no_constant,
                          object_pairs_hook=_no_repeated_keys)
    except _Refused as e:
        return [one_line(str(e))]
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        # ValueError also covers integers of thousands of digits.
        return [one_line(f"not JSON: {e}")]
    if not isinstance(data, dict):
        return ["must be a JSON object"]
    sections, huge, drop = without_huge_ints(_WHERE, {"ui": data}, {"ui": _REMOTE})
    values, found = validate(_WHERE, sections, {"ui": _REMOTE})
    problems = huge + [p for p in found if not p.startswith(drop)] if drop else found
    if problems:
        return [one_line(p.replace(f"{_WHERE}: [ui] ", "")) for p in problems[:MAX_PROBLEMS]]
    return {k: values["ui"][k] for k in data}


def _no_constant(name: str) -> Any:
    # json accepts NaN and Infinity by default; NaN passes every range check.
    raise _Refused(f"{name} is not a number")


def _no_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json keeps the last of a repeated key silently: which one the platform meant is
    # anybody's guess, so neither is applied.
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise _Refused(f"key {key[:40]!r} given twice")
        seen.add(key)
    return dict(pairs)


def apply(base: UiSettings, changes: dict[str, Any]) -> UiSettings:
    """`base` (from the config file) with the remote changes on top."""
    fields = dict(changes)
    if "reasons" in fields:
        fields["reasons"] = tuple((r["code"], r["label"]) for r in fields["reasons"])
    return replace(base, **fields)
