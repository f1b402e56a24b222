"""The watcher's TOML config: `[mqtt]`, `[watch]`, `[rules.<rule>]`, `[halls.<hall_id>]`,
`[log]`. Every problem in the file is reported at once, one line each; unknown keys,
rules and sections are errors. docs/alerts.md documents every key."""

from __future__ import annotations

import dataclasses
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from broker_bridge.config import CLIENT_ID_RE, MqttSettings
from broker_bridge.timezones import DEFAULT_TIMEZONE, load_timezone, timezone_problem
from broker_bridge.watch.channels import DINGTALK, FORMATS, JSON
from broker_bridge.watch.hours import (
    DEFAULT_OPEN,
    HallCalendar,
    OpeningHours,
    parse_dates,
    parse_open,
)
from broker_bridge.watch.rules import DEFAULT_MAX_DEVICES
from broker_bridge.watch.settings import (
    SEVERITIES,
    Backlog,
    BadBurst,
    Clock,
    Gaming,
    LowSatisfaction,
    Rules,
    Silent,
)
from common.configschema import (
    BROKER_AUTH_KEYS,
    Check,
    ConfigError,
    Key,
    Section,
    broker_auth_problems,
    host_name,
    in_range,
    load_toml,
    non_empty,
    one_of,
    topic_prefix,
    validate,
)
from common.rating import DEVICE_ID_RE

HALL_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
RULE_CLASSES: dict[str, type] = {
    "bad_burst": BadBurst, "low_satisfaction": LowSatisfaction, "silent": Silent,
    "backlog": Backlog, "gaming": Gaming, "clock": Clock,
}
# One check per key name; the same name means the same thing in every rule.
RULE_CHECKS: dict[str, Check] = {
    "count": in_range(1, 100_000),
    "max_ratings": in_range(1, 100_000),
    "max_backlog": in_range(0, 10_000_000),
    "within_min": in_range(0.001, 10_080),
    "after_min": in_range(0.001, 10_080),
    "max_oldest_min": in_range(0.001, 525_600),
    "within_s": in_range(0.1, 86_400),
    "cooldown_min": in_range(0, 10_080),
    "below_pct": in_range(0, 100),
    "spontaneous_pct": in_range(0, 100),
    "last_n": in_range(1, 1000),
    "min_ratings": in_range(1, 1000),
    "severity": one_of(*SEVERITIES),
}




def _client_id(v: Any) -> str | None:
    return None if not v or CLIENT_ID_RE.match(v) else "must match [A-Za-z0-9_.-]{1,64}"


def _webhook(v: Any) -> str | None:
    if not v:
        return None
    parts = urlsplit(v)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be empty or an http:// or https:// URL with a host"
    return None


def _timezone(v: Any) -> str | None:
    return timezone_problem(v)


WINDOW_NAME_MAX = 40
_NAME_REFUSED = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029<>*\[\]`#]")


def _window_names(v: Any) -> str | None:
    """device id -> the window's name as the hall says it ("03号窗口 不动产登记")."""
    for device_id, name in v.items():
        if not DEVICE_ID_RE.fullmatch(device_id):
            return f"{device_id[:70]!r}: not a device id ([A-Za-z0-9_-]{{1,64}})"
        if not isinstance(name, str) or not name.strip():
            return f"{device_id}: the name must be a non-empty string"
        if len(name) > WINDOW_NAME_MAX or _NAME_REFUSED.search(name):
            return (f"{device_id}: the name must be one line of at most {WINDOW_NAME_MAX} "
                    "characters without < > * [ ] ` #")
    return None


SCHEMA: dict[str, Section] = {
    "mqtt": Section({
        "host": Key(str, "127.0.0.1", host_name),
        "port": Key(int, 1883, in_range(1, 65535)),
        "prefix": Key(str, "hcp/v1", topic_prefix),
        "client_id": Key(str, "", _client_id),
        "keepalive_s": Key(int, 30, in_range(5, 3600)),
        "session_expiry_s": Key(int, 3600, in_range(0, 2**32 - 1)),
        "protocol": Key(str, "5", one_of("5", "3.1.1")),
        **BROKER_AUTH_KEYS,
    }, required=False),
    "watch": Section({
        "state_file": Key(str, check=non_empty),
        "timezone": Key(str, DEFAULT_TIMEZONE, _timezone),
        "open": Key(list, list(DEFAULT_OPEN)),
        "holidays": Key(list, []),
        "workdays": Key(list, []),
        "webhook_url": Key(str, "", _webhook),
        "webhook_token_file": Key(str, ""),
        "webhook_timeout_s": Key(float, 5.0, in_range(0.1, 120)),
        "webhook_format": Key(str, JSON, one_of(*FORMATS)),
        "webhook_secret_file": Key(str, ""),
        "window_names": Key(dict, {}, _window_names),
        "save_every_s": Key(float, 10.0, in_range(0.1, 3600)),
        "dedupe_per_device": Key(int, 500, in_range(10, 100_000)),
        "max_devices": Key(int, DEFAULT_MAX_DEVICES, in_range(1, 1_000_000)),
    }),
    "log": Section({
        "level": Key(str, "info", one_of("debug", "info", "warning", "error")),
    }, required=False),
}
for _name, _cls in RULE_CLASSES.items():
    SCHEMA[f"rules.{_name}"] = Section({
        f.name: Key(type(f.default), f.default, RULE_CHECKS.get(f.name))
        for f in dataclasses.fields(_cls)
    }, required=False)

HALL_KEYS = {
    "open": Key(list),
    "holidays": Key(list, []),
    "workdays": Key(list, []),
    "timezone": Key(str, ""),
}


@dataclass(frozen=True)
class WatchSettings:
    state_file: Path
    timezone: str
    webhook_url: str
    webhook_token_file: str
    webhook_timeout_s: float
    save_every_s: float
    dedupe_per_device: int
    webhook_format: str = JSON
    webhook_secret_file: str = ""
    window_names: Mapping[str, str] = dataclasses.field(default_factory=dict)
    max_devices: int = DEFAULT_MAX_DEVICES


@dataclass(frozen=True)
class WatchConfig:
    path: Path
    mqtt: MqttSettings
    watch: WatchSettings
    rules: Rules
    calendar: HallCalendar
    log_level: str


def _default_client_id() -> str:
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:40] or "host"
    return f"hcp-watch-{host}"


def parse_watch_config(path: Path, data: Mapping[str, Any]) -> WatchConfig:
    """Validate parsed TOML; raise ConfigError listing every problem."""
    problems: list[str] = []
    flat: dict[str, Any] = {k: v for k, v in data.items() if k not in ("rules", "halls")}
    for group in ("rules", "halls"):
        if group in data and not isinstance(data[group], Mapping):
            problems.append(f"{path}: [{group}]: must be a table of [{group}.<name>] tables")
    rules_raw = data.get("rules", {})
    for name, table in (rules_raw.items() if isinstance(rules_raw, Mapping) else ()):
        if name not in RULE_CLASSES:
            problems.append(f"{path}: [rules.{name}]: unknown rule (known: "
                            f"{', '.join(RULE_CLASSES)})")
        elif not isinstance(table, Mapping):
            problems.append(f"{path}: [rules] {name}: must be a table [rules.{name}]")
        else:
            flat[f"rules.{name}"] = table
    values, found = validate(path, flat, SCHEMA)
    problems += found
    m, w = values["mqtt"], values["watch"]

    rules = Rules(**{name: cls(**values[f"rules.{name}"])
                     for name, cls in RULE_CLASSES.items()
                     if set(values[f"rules.{name}"]) == {f.name for f in dataclasses.fields(cls)}})
    for name in ("low_satisfaction", "gaming"):
        rule = values[f"rules.{name}"]
        if rule.get("min_ratings", 0) > rule.get("last_n", 1000):
            problems.append(f"{path}: [rules.{name}] min_ratings: must be at most last_n "
                            f"({rule['last_n']}), got {rule['min_ratings']}")

    default_tz_name = w.get("timezone", DEFAULT_TIMEZONE)
    default = _hours(path, "watch", w, default_tz_name, problems)
    halls: dict[str, OpeningHours] = {}
    halls_raw = data.get("halls", {})
    for hall_id, table in (halls_raw.items() if isinstance(halls_raw, Mapping) else ()):
        section = f"halls.{hall_id}"
        if not HALL_ID_RE.match(hall_id):
            problems.append(f"{path}: [{section}]: a hall id must match [A-Za-z0-9_-]{{1,64}}")
            continue
        if not isinstance(table, Mapping):
            problems.append(f"{path}: [halls] {hall_id}: must be a table [{section}]")
            continue
        hv, hp = validate(path, {section: table}, {section: Section(HALL_KEYS)})
        problems += hp
        hall = hv[section]
        if "timezone" in hall and hall["timezone"]:
            why = timezone_problem(hall["timezone"])
            if why:
                problems.append(f"{path}: [{section}] timezone: {why}")
                continue
        hours = _hours(path, section, hall, hall.get("timezone") or default_tz_name, problems)
        if hours is not None and default is not None:
            # A hall inherits the [watch] holidays and make-up days as well as its own.
            halls[hall_id] = dataclasses.replace(
                hours, holidays=hours.holidays | default.holidays,
                workdays=hours.workdays | default.workdays)

    _cross_checks(path, m, w, problems)
    mqtt_given = data.get("mqtt")
    if (m.get("protocol") == "3.1.1" and isinstance(mqtt_given, Mapping)
            and "session_expiry_s" in mqtt_given):
        problems.append(f"{path}: [mqtt] session_expiry_s: has no effect with protocol = "
                        "\"3.1.1\" (an MQTT 5 property; the broker's own setting applies): "
                        "remove it")
    if problems:
        raise ConfigError(problems)
    assert default is not None
    return WatchConfig(
        path=path,
        mqtt=MqttSettings(
            host=m["host"], port=m["port"], prefix=m["prefix"],
            client_id=m["client_id"] or _default_client_id(), shared_group="",
            keepalive_s=m["keepalive_s"], session_expiry_s=m["session_expiry_s"],
            receive_maximum=100, tls=m["tls"], ca_file=m["ca_file"],
            client_cert=m["client_cert"], client_key=m["client_key"],
            username=m["username"], password_file=m["password_file"],
            protocol=m["protocol"]),
        watch=WatchSettings(
            state_file=Path(w["state_file"]), timezone=w["timezone"],
            webhook_url=w["webhook_url"], webhook_token_file=w["webhook_token_file"],
            webhook_timeout_s=w["webhook_timeout_s"], save_every_s=w["save_every_s"],
            dedupe_per_device=w["dedupe_per_device"], webhook_format=w["webhook_format"],
            webhook_secret_file=w["webhook_secret_file"],
            window_names={k: v.strip() for k, v in w["window_names"].items()},
            max_devices=w["max_devices"]),
        rules=rules,
        calendar=HallCalendar(halls, default),
        log_level=values["log"]["level"],
    )


def _hours(path: Path, section: str, values: Mapping[str, Any], tz_name: str,
           problems: list[str]) -> OpeningHours | None:
    """Opening hours from `open`, `holidays`, `workdays`; problems appended."""
    if "open" not in values:
        return None
    before = len(problems)
    weekly, found = parse_open(values["open"])
    problems += [f"{path}: [{section}] open: {p}" for p in found]
    holidays, found = parse_dates(values.get("holidays", []))
    problems += [f"{path}: [{section}] holidays: {p}" for p in found]
    workdays, found = parse_dates(values.get("workdays", []))
    problems += [f"{path}: [{section}] workdays: {p}" for p in found]
    if len(problems) > before or timezone_problem(tz_name):
        return None
    return OpeningHours(weekly, load_timezone(tz_name), holidays, workdays)


def _cross_checks(path: Path, m: Mapping[str, Any], w: Mapping[str, Any],
                  problems: list[str]) -> None:
    problems += broker_auth_problems(path, m)
    f = w.get("webhook_token_file")
    if f and not Path(f).is_file():
        problems.append(f"{path}: [watch] webhook_token_file: no such file {f!r}")
    if w.get("webhook_token_file") and not w.get("webhook_url"):
        problems.append(f"{path}: [watch] webhook_token_file: needs webhook_url")
    fmt = w.get("webhook_format", JSON)
    if w.get("webhook_token_file") and fmt != JSON:
        problems.append(f"{path}: [watch] webhook_token_file: only for webhook_format = "
                        f"\"json\" (a {fmt} robot's key is in its webhook_url)")
    secret = w.get("webhook_secret_file")
    if secret and fmt != DINGTALK:
        problems.append(f"{path}: [watch] webhook_secret_file: only for webhook_format = "
                        "\"dingtalk\" (钉钉's 加签)")
    elif secret and not Path(secret).is_file():
        problems.append(f"{path}: [watch] webhook_secret_file: no such file {secret!r}")
    state = w.get("state_file")
    if state and not Path(state).parent.is_dir():
        problems.append(f"{path}: [watch] state_file: directory {str(Path(state).parent)!r} "
                        "does not exist")


def load_watch_config(path: str | Path) -> WatchConfig:
    """Read and validate a watcher config file; raise ConfigError listing every problem."""
    p = Path(path)
    return parse_watch_config(p, load_toml(p))
