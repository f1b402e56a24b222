"""`hcp-platform run --config platform.toml`: the config, validated once with every
problem on its own line (common.configschema), then cross-checked."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from city_platform.followups import Policy
from city_platform.store.db import url_problem
from city_platform.upstream_profile import SECTION as UPSTREAM_PROFILE
from city_platform.upstream_profile import overrides_problems
from city_platform.workdays import WorkCalendar
from common.configschema import (
    BROKER_AUTH_KEYS,
    ConfigError,
    Key,
    Section,
    host_port,
    in_range,
    load_toml,
    one_of,
    topic_prefix,
    validate,
)

# Client connections served at once (each is a thread): the bridges' workers, the hall
# screens' event streams, reports. Beyond it a new connection is closed at once, so that
# clients that connect and never finish cannot grow the platform without bound.
DEFAULT_MAX_CONNECTIONS = 512
# A request's line and headers (and, on a new connection, its TLS handshake) arrive within
# this many seconds of its first byte (of the accept), or the connection is closed: each
# read's own timeout alone lets a client trickling a byte at a time hold a connection
# for ever. Idle time between kept-alive requests is not counted.
DEFAULT_HEAD_TIMEOUT_S = 15.0
DEFAULT_STORE = "sqlite:////var/lib/hcp-platform/ratings.db"


def _store_url(v: Any) -> str | None:
    return url_problem(v)


def _timezone(v: Any) -> str | None:
    try:
        ZoneInfo(v)
    except (ZoneInfoNotFoundError, ValueError):
        return "not a time zone name (e.g. Asia/Shanghai); is tzdata installed?"
    return None


def _url_or_empty(v: Any) -> str | None:
    if v and not str(v).startswith(("http://", "https://")):
        return "must be an http(s) URL or \"\""
    return None


def _path(v: Any) -> str | None:
    text = str(v)
    if not text.startswith("/"):
        return "must start with /"
    if any(c in "?#" or c.isspace() or not c.isprintable() for c in text):
        # The server compares the request's path alone: no POST could reach it.
        return "must be a path alone: no ?, #, space or control character"
    if text.startswith(("/api/followups/", "/_chaos")):
        return "is the follow-up API's or the chaos controls' own path"
    return None


SCHEMA: dict[str, Section] = {
    "store": Section({
        "url": Key(str, DEFAULT_STORE, _store_url),
        "timezone": Key(str, "Asia/Shanghai", _timezone,
                        "local dates: reports, the dashboard's today and deadlines"),
    }, required=False),
    "http": Section({
        "listen": Key(str, "127.0.0.1:8080", host_port),
        "token_file": Key(str, ""),
        "path": Key(str, "/api/ratings", _path),
        "max_batch": Key(int, 1000, in_range(1, 100_000)),
        "max_connections": Key(int, DEFAULT_MAX_CONNECTIONS, in_range(8, 100_000)),
        "head_timeout_s": Key(float, DEFAULT_HEAD_TIMEOUT_S, in_range(0.1, 600)),
        "chaos": Key(bool, False),
        "tls_cert": Key(str, ""),
        "tls_key": Key(str, ""),
    }, required=False),
    "upstream": Section({
        "url": Key(str, "", _url_or_empty),
        "profile": Key(str, "gov", one_of("gov", "generic")),
        "timeout_s": Key(float, 10.0, in_range(0.1, 600)),
        "batch_max": Key(int, 100, in_range(1, 1000)),
        "token_file": Key(str, ""),
        "ca_file": Key(str, ""),
        "client_error_retry_s": Key(float, 300.0, in_range(1, 86_400)),
        "retry_cap_s": Key(float, 60.0, in_range(0.2, 3600)),
    }, required=False),
    # Overrides of the gov profile's table for the upstream: the bridge's [profile] keys
    # (docs/gov-profile.md). Not [upstream.profile]: TOML cannot have both that table
    # and [upstream] profile = "gov".
    UPSTREAM_PROFILE: Section({
        "fields": Key(dict, {}),
        "values": Key(dict, {}),
        "constants": Key(dict, {}),
        "timezone": Key(str, "", doc="\"\" = [store] timezone"),
    }, required=False),
    "followups": Section({
        "contact_days": Key(int, 3, in_range(1, 60)),
        "rectify_days": Key(int, 5, in_range(1, 60)),
        "complex_days": Key(int, 15, in_range(1, 120)),
        "check_s": Key(float, 60.0, in_range(0.05, 3600)),
    }, required=False),
    "calendar": Section({
        "extra_years": Key(list, []),
        "holidays": Key(list, []),
        "workdays": Key(list, []),
    }, required=False),
    "mqtt": Section({
        "host": Key(str, "", doc="\"\" = no live dashboard and no follow-up alerts"),
        "port": Key(int, 1883, in_range(1, 65535)),
        "prefix": Key(str, "hcp/v1", topic_prefix),
        "client_id": Key(str, "hcp-platform"),
        "protocol": Key(str, "5", one_of("5", "3.1.1")),
        "keepalive_s": Key(int, 30, in_range(5, 3600)),
        **BROKER_AUTH_KEYS,
    }, required=False),
}


@dataclass
class MqttSettings:
    host: str = ""
    port: int = 1883
    prefix: str = "hcp/v1"
    client_id: str = "hcp-platform"
    protocol: str = "5"
    keepalive_s: int = 30
    tls: bool = False
    ca_file: str = ""
    client_cert: str = ""
    client_key: str = ""
    username: str = ""
    password_file: str = ""


@dataclass
class PlatformConfig:
    store_url: str = DEFAULT_STORE
    timezone: str = "Asia/Shanghai"
    listen: str = "127.0.0.1:8080"
    token_file: str = ""
    path: str = "/api/ratings"
    max_batch: int = 1000
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    head_timeout_s: float = DEFAULT_HEAD_TIMEOUT_S
    chaos: bool = False
    tls_cert: str = ""
    tls_key: str = ""
    upstream: dict[str, Any] = field(default_factory=dict)
    policy: Policy = field(default_factory=Policy)
    check_s: float = 60.0
    calendar: WorkCalendar = field(default_factory=WorkCalendar)
    mqtt: MqttSettings = field(default_factory=MqttSettings)

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _dates(path: Path, key: str, values: list[Any], problems: list[str]) -> list[date]:
    out = []
    for v in values:
        if isinstance(v, datetime):
            # A datetime is a date to isinstance but never equal to one: it would be
            # accepted and then match no day.
            problems.append(f"{path}: [calendar] {key}: {v.isoformat()} is a date and time, "
                            f"not a date (write {v.date().isoformat()})")
            continue
        try:
            out.append(v if isinstance(v, date) else date.fromisoformat(str(v)))
        except ValueError:
            problems.append(f"{path}: [calendar] {key}: {v!r} is not a date (YYYY-MM-DD)")
    return out


def _token_problems(path: Path, token_file: str) -> list[str]:
    """An empty token would be matched by every request that brings none."""
    try:
        token = Path(token_file).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        return [f"{path}: [http] token_file: cannot read {token_file}: "
                f"{getattr(e, 'strerror', None) or e}"]
    if not token:
        return [f"{path}: [http] token_file: {token_file} is empty: a token is needed "
                "(an empty one would let every request in)"]
    return []


def load(path_text: str) -> PlatformConfig:
    path = Path(path_text)
    data = load_toml(path)
    v, problems = validate(path, data, SCHEMA)
    if problems:
        raise ConfigError(problems)
    s, h, u, f, c, m = (v["store"], v["http"], v["upstream"], v["followups"], v["calendar"],
                        v["mqtt"])
    if not is_loopback(h["listen"].rpartition(":")[0].strip("[]")) and not h["token_file"]:
        problems.append(f"{path}: [http] token_file: required when listen is not a loopback "
                        f"address ({h['listen']}): the dashboard and the API need a token "
                        "beyond this machine")
    if bool(h["tls_cert"]) != bool(h["tls_key"]):
        problems.append(f"{path}: [http] tls_cert and tls_key: give both or neither")
    for key in ("token_file", "tls_cert", "tls_key"):
        if h[key] and not Path(h[key]).is_file():
            problems.append(f"{path}: [http] {key}: no such file: {h[key]}")
    if h["token_file"] and Path(h["token_file"]).is_file():
        problems += _token_problems(path, h["token_file"])
    years = []
    for y in c["extra_years"]:
        if isinstance(y, int) and not isinstance(y, bool) and 2000 <= y <= 2100:
            years.append(y)
        else:
            problems.append(f"{path}: [calendar] extra_years: {y!r} is not a year")
    holidays = _dates(path, "holidays", c["holidays"], problems)
    workdays = _dates(path, "workdays", c["workdays"], problems)
    calendar = WorkCalendar()
    if not problems:
        try:
            calendar = WorkCalendar(years, holidays, workdays)
        except ValueError as e:
            problems.append(f"{path}: {e}")
    if u["url"] and u["token_file"] and not Path(u["token_file"]).is_file():
        problems.append(f"{path}: [upstream] token_file: no such file: {u['token_file']}")
    overrides = {**v[UPSTREAM_PROFILE]}
    overrides["timezone"] = overrides["timezone"] or s["timezone"]
    if u["profile"] == "gov":
        problems += [f"{path}: {problem}" for problem in overrides_problems(overrides)]
        u = {**u, "profile_overrides": overrides}
    elif UPSTREAM_PROFILE in data:
        problems.append(f"{path}: [{UPSTREAM_PROFILE}]: only used with [upstream] profile = "
                        "\"gov\"")
    if problems:
        raise ConfigError(problems)
    return PlatformConfig(
        store_url=s["url"], timezone=s["timezone"], listen=h["listen"],
        token_file=h["token_file"], path=h["path"], max_batch=h["max_batch"],
        max_connections=h["max_connections"], head_timeout_s=h["head_timeout_s"],
        chaos=h["chaos"], tls_cert=h["tls_cert"], tls_key=h["tls_key"], upstream=u,
        policy=Policy(f["contact_days"], f["rectify_days"], f["complex_days"]),
        check_s=f["check_s"], calendar=calendar, mqtt=MqttSettings(**m))
