"""Config files the tools write (the demo's, the simulator's, the tests' and the
benchmarks'): one TOML writer, tomli-w, so every value is quoted and escaped as TOML says.

Keys that are not strings (a pin table keyed by level, `{5: 17}`) are written as their
text, as a person would type them in the file."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tomli_w


def _keys_as_text(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _keys_as_text(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_keys_as_text(v) for v in value]
    return value


def toml_text(sections: Mapping[str, Any]) -> str:
    """A TOML document from {section: {key: value}}; a dotted section name
    ("profile.fields") is a sub-table, as in a TOML header; None values are left out
    (TOML has no null)."""
    document: dict[str, Any] = {}
    for name, keys in _keys_as_text(sections).items():
        table = document
        for part in name.split("."):
            table = table.setdefault(part, {})
        table.update(keys)
    return tomli_w.dumps(_drop_none(document))


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value
