"""The retained `config` topic (SPEC §7): display and UI settings pushed by the platform.

A message is validated as a whole against the same rules as the `[ui]` section of the
TOML file and applied atomically, on top of the file's settings; a bad one is refused
with the list of problems and changes nothing.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from device.config import SCHEMA, UiSettings
from device.configschema import Key, Section, non_empty, validate

MAX_PAYLOAD = 16 * 1024

_REMOTE = Section({
    "window_name": Key(str, None, lambda v: non_empty(v) or (
        "must be at most 40 characters" if len(v) > 40 else None)),
    **SCHEMA["ui"].keys,
})


def parse_remote_config(payload: bytes) -> dict[str, Any] | list[str]:
    """The settings a message sets (only the keys it names), or its problems."""
    if len(payload) > MAX_PAYLOAD:
        return [f"payload of {len(payload)} bytes is over {MAX_PAYLOAD}"]
    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        return [f"not JSON: {e}"]
    if not isinstance(data, dict):
        return ["must be a JSON object"]
    values, problems = validate("config topic", {"ui": data}, {"ui": _REMOTE})
    if problems:
        return [p.replace("config topic: [ui] ", "") for p in problems]
    return {k: values["ui"][k] for k in data}


def apply(base: UiSettings, changes: dict[str, Any]) -> UiSettings:
    """`base` (from the config file) with the remote changes on top."""
    fields = dict(changes)
    if "reasons" in fields:
        fields["reasons"] = tuple((r["code"], r["label"]) for r in fields["reasons"])
    return replace(base, **fields)
