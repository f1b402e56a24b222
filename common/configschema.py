"""A small declarative TOML schema: every problem in a config file is found in one pass.

Both daemons describe their config as sections of `Key`s; `validate` returns the
typed values plus a list of human-readable problems ("file: [section] key: what is
wrong"), so a technician fixes a broken file in one round instead of one per start.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """A config file that cannot be used; `problems` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


_MISSING: Any = object()

Check = Callable[[Any], str | None]


@dataclass(frozen=True)
class Key:
    """One config key: its type, default (or required) and an optional extra check."""

    kind: type | tuple[type, ...]
    default: Any = _MISSING
    check: Check | None = None
    doc: str = ""

    @property
    def required(self) -> bool:
        return self.default is _MISSING


@dataclass
class Section:
    keys: dict[str, Key]
    required: bool = True
    # A free-form table (e.g. pins = {5 = 17}) is one Key of kind dict.
    extra: dict[str, Any] = field(default_factory=dict)


def _type_name(kind: type | tuple[type, ...]) -> str:
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string",
             dict: "a table", list: "a list"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _type_ok(value: Any, kind: type | tuple[type, ...]) -> bool:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool):
        return bool in kinds
    if isinstance(value, float) and not math.isfinite(value):
        return False  # TOML allows nan and inf; no setting of ours means either
    if float in kinds and isinstance(value, int):
        return True
    return isinstance(value, kinds)


def load_toml(path: Path) -> dict[str, Any]:
    """Read a TOML file, turning every failure into a one-line ConfigError."""
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError([f"{path}: file not found"]) from None
    except PermissionError:
        raise ConfigError([f"{path}: permission denied"]) from None
    except IsADirectoryError:
        raise ConfigError([f"{path}: is a directory, not a config file"]) from None
    except UnicodeDecodeError as e:
        raise ConfigError([f"{path}: not valid UTF-8 ({e.reason} at byte {e.start})"]) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"{path}: not valid TOML: {e}"]) from None


def shown(value: Any, limit: int = 60) -> str:
    """A value from a config file as a problem line shows it: quoted, escaped (a newline
    in a key must not split the line) and cut."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _name(name: Any) -> str:
    """A section or key name as written, or quoted when it is not a plain word."""
    text = str(name)
    return text if re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", text) else shown(text)


def validate(
    path: Path | str, data: Mapping[str, Any], schema: Mapping[str, Section]
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Check `data` against `schema`; return (values with defaults, problems)."""
    problems: list[str] = []
    values: dict[str, dict[str, Any]] = {}
    for name in data:
        if name not in schema:
            known = ", ".join(f"[{s}]" for s in schema)
            problems.append(f"{path}: [{_name(name)}]: unknown section (known: {known})")
    for name, section in schema.items():
        raw = data.get(name, _MISSING)
        if raw is _MISSING:
            if section.required and any(k.required for k in section.keys.values()):
                problems.append(f"{path}: [{name}]: section missing")
            raw = {}
        if not isinstance(raw, Mapping):
            problems.append(f"{path}: [{name}]: must be a table")
            raw = {}
        out: dict[str, Any] = {}
        for key in raw:
            if key not in section.keys:
                known = ", ".join(section.keys)
                problems.append(f"{path}: [{name}] {_name(key)}: unknown key (known: {known})")
        for key, spec in section.keys.items():
            if key not in raw:
                if spec.required:
                    problems.append(f"{path}: [{name}] {key}: required key missing")
                else:
                    out[key] = spec.default
                continue
            value = raw[key]
            if not _type_ok(value, spec.kind):
                problems.append(
                    f"{path}: [{name}] {key}: must be {_type_name(spec.kind)}, got {shown(value)}"
                )
                continue
            if isinstance(value, int) and not isinstance(value, bool) and spec.kind is float:
                try:
                    value = float(value)
                except OverflowError:
                    problems.append(f"{path}: [{name}] {key}: a number of {len(str(value))} "
                                    "digits is out of any sensible range")
                    continue
            if spec.check is not None:
                why = spec.check(value)
                if why:
                    problems.append(f"{path}: [{name}] {key}: {why} (got {shown(value)})")
                    continue
            out[key] = value
        values[name] = out
    return values, problems


# Reusable checks -----------------------------------------------------------

def in_range(lo: float | None = None, hi: float | None = None) -> Check:
    def check(v: Any) -> str | None:
        if lo is not None and v < lo:
            return f"must be at least {lo}"
        if hi is not None and v > hi:
            return f"must be at most {hi}"
        return None
    return check


def one_of(*choices: str) -> Check:
    def check(v: Any) -> str | None:
        return None if v in choices else "must be one of " + ", ".join(repr(c) for c in choices)
    return check


def non_empty(v: Any) -> str | None:
    return "must not be empty" if not v else None


def host_name(v: Any) -> str | None:
    """A broker host: a name the resolver takes, or an address. A label over 63
    characters or an empty one ("a..b") makes the resolver raise UnicodeError, which
    ended paho's network thread: the client never connected and never tried again."""
    if not v:
        return "must not be empty"
    if not v.isprintable() or any(c.isspace() for c in v):
        return "must be a host name or address, without spaces or control characters"
    try:
        v.encode("idna")
    except UnicodeError:
        return "is not a host name (a label is empty or over 63 characters)"
    return None


def host_port(v: Any) -> str | None:
    host, sep, port = str(v).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return "must be HOST:PORT"
    return None


# fullmatch: "$" would also match before a final newline.
_TOPIC_PREFIX_RE = re.compile(r"[^#+\x00-\x1f\x7f]{1,64}")


def topic_prefix(v: Any) -> str | None:
    """An MQTT topic prefix such as "hcp/v1" (devices, bridge and watcher share it)."""
    if not _TOPIC_PREFIX_RE.fullmatch(v) or v.startswith(("/", "$")) or v.endswith("/"):
        return "must be a topic prefix without wildcards, leading '$' or '/' or trailing '/'"
    return None


# How a client authenticates to the broker: the same keys in every config that has an
# [mqtt] section.
BROKER_AUTH_KEYS: dict[str, Key] = {
    "tls": Key(bool, False),
    "ca_file": Key(str, ""),
    "client_cert": Key(str, ""),
    "client_key": Key(str, ""),
    "username": Key(str, ""),
    "password_file": Key(str, ""),
}


def broker_auth_problems(path: Path | str, mqtt: Mapping[str, Any],
                         password_required: bool = True) -> list[str]:
    """The cross-checks of BROKER_AUTH_KEYS, the same in every config with an [mqtt]
    section: TLS files only with TLS, a client certificate with its key, a password file
    with a user (and, for service users, a user with a password file), every file there."""
    problems: list[str] = []
    if mqtt.get("tls") is False and (mqtt.get("ca_file") or mqtt.get("client_cert")):
        problems.append(f"{path}: [mqtt] ca_file/client_cert: set only with tls = true")
    if bool(mqtt.get("client_cert")) != bool(mqtt.get("client_key")):
        problems.append(f"{path}: [mqtt] client_cert/client_key: give both or neither")
    if mqtt.get("password_file") and not mqtt.get("username"):
        problems.append(f"{path}: [mqtt] password_file: needs username")
    if password_required and mqtt.get("username") and not mqtt.get("password_file"):
        problems.append(f"{path}: [mqtt] username: needs password_file (the password is "
                        "never written in this file)")
    for key in ("ca_file", "client_cert", "client_key", "password_file"):
        f = mqtt.get(key)
        if f and not Path(f).is_file():
            problems.append(f"{path}: [mqtt] {key}: no such file {shown(f)}")
    return problems
