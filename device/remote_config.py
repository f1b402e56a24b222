"""The retained `config` topic (SPEC §7): display and UI settings pushed by the platform.

A message is validated as a whole against the same rules as the `[ui]` section of the
TOML file and applied atomically, on top of the file's settings; a bad one is refused
with the list of problems and changes nothing.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from common.configschema import Key, Section, validate
from device.config import SCHEMA
from device.core.settings import UiSettings

MAX_PAYLOAD = 16 * 1024

def _window_name(v: str) -> str | None:
    if not v.strip():
        return "must not be empty"
    if len(v) > 40:
        return "must be at most 40 characters"
    if any(not c.isprintable() for c in v):
        return "must not contain control characters"
    return None


_REMOTE = Section({
    "window_name": Key(str, None, _window_name),
    **SCHEMA["ui"].keys,
})


def parse_remote_config(payload: bytes) -> dict[str, Any] | list[str]:
    """The settings a message sets (only the keys it names), or its problems."""
    if len(payload) > MAX_PAYLOAD:
        return [f"payload of {len(payload)} bytes is over {MAX_PAYLOAD}"]
    try:
        data = json.loads(payload.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        # ValueError also covers NaN/Infinity and integers of thousands of digits.
        return [f"not JSON: {e}"]
    if not isinstance(data, dict):
        return ["must be a JSON object"]
    try:
        values, problems = validate("config topic", {"ui": data}, {"ui": _REMOTE})
    except OverflowError:  # an integer too large for a float setting
        return ["a number is out of range"]
    if problems:
        return [p.replace("config topic: [ui] ", "") for p in problems]
    return {k: values["ui"][k] for k in data}


def _no_constant(name: str) -> Any:
    # json accepts NaN and Infinity by default; NaN passes every range check.
    raise ValueError(f"{name} is not a number")


def apply(base: UiSettings, changes: dict[str, Any]) -> UiSettings:
    """`base` (from the config file) with the remote changes on top."""
    fields = dict(changes)
    if "reasons" in fields:
        fields["reasons"] = tuple((r["code"], r["label"]) for r in fields["reasons"])
    return replace(base, **fields)
