"""The bridge's TOML config (SPEC §3): schema, cross-checks and the typed result."""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from broker_bridge.profile import GovProfile, profile_problems
from broker_bridge.timezones import DEFAULT_TIMEZONE
from common.configschema import (
    BROKER_AUTH_KEYS,
    ConfigError,
    Key,
    Section,
    broker_auth_problems,
    host_name,
    host_port,
    in_range,
    load_toml,
    one_of,
    topic_prefix,
    validate,
)

CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
GROUP_RE = re.compile(r"^[A-Za-z0-9_-]{0,64}$")


def _default_client_id() -> str:
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:40] or "host"
    return f"hcp-bridge-{host}"


def _client_id(v: Any) -> str | None:
    return None if CLIENT_ID_RE.match(v) else "must match [A-Za-z0-9_.-]{1,64}"


def _group(v: Any) -> str | None:
    return None if GROUP_RE.match(v) else "must be empty or match [A-Za-z0-9_-]{1,64}"




def _url(v: Any) -> str | None:
    try:
        parts = urlsplit(v)
    except ValueError:  # an unbalanced "[" or "]" (an IPv6 literal)
        return "is not a URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL with a host"
    # What a request line and a DNS query can carry: anything else made every request
    # raise (non-ASCII: every rating set aside as unprocessable) or fail for ever as
    # "cannot reach" (a space).
    if not (v.isascii() and v.isprintable()) or " " in v:
        return ("must be printable ASCII without spaces (percent-encode the path, "
                "punycode the host)")
    if not all(0 < len(label) <= 63 for label in parts.hostname.rstrip(".").split(".")):
        return "has a host name with an empty label or one over 63 characters"
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return "has an invalid port"
    return None


SCHEMA: dict[str, Section] = {
    "mqtt": Section({
        "host": Key(str, "127.0.0.1", host_name),
        "port": Key(int, 1883, in_range(1, 65535)),
        "prefix": Key(str, "hcp/v1", topic_prefix),
        "client_id": Key(str, "", _client_id),
        # "3.1.1" for an engine that speaks nothing newer (NATS): no shared group, no
        # Receive Maximum, no session expiry (docs/bridge.md, "MQTT 5 or 3.1.1").
        "protocol": Key(str, "5", one_of("5", "3.1.1")),
        "shared_group": Key(str, "bridge", _group),
        # Wait until the bridge with this client_id is offline, then take over its session
        # (broker_bridge/standby.py): set it on both machines of an active/standby pair.
        "standby": Key(bool, False),
        "keepalive_s": Key(int, 30, in_range(5, 3600)),
        "session_expiry_s": Key(int, 86400, in_range(60, 2**32 - 1)),
        # How many un-acknowledged ratings the broker may hand us (MQTT v5 Receive
        # Maximum). Without it mosquitto sends only 20, which caps every batch at 20.
        "receive_maximum": Key(int, 1000, in_range(1, 65535)),
        **BROKER_AUTH_KEYS,
        # Each connection logs in as its own client id (the bridge as client_id, `hcp-bridge
        # expired` as <client_id>-expired, a standby's watcher as <client_id>-standby), all
        # with password_file: for a broker that ties client ids to users (the sample's
        # use_username_as_clientid), where one user per process is the only way to run them.
        "username_is_client_id": Key(bool, False),
    }),
    "platform": Section({
        "url": Key(str, check=_url),
        "timeout_s": Key(float, 10.0, in_range(0.1, 300)),
        "batch_max": Key(int, 100, in_range(1, 1000)),
        "batch_wait_ms": Key(int, 50, in_range(0, 60_000)),
        "concurrency": Key(int, 2, in_range(1, 32)),
        "token_file": Key(str, ""),
        "ca_file": Key(str, ""),
        "client_error_retry_s": Key(float, 60.0, in_range(0.1, 3600)),
        "retry_cap_s": Key(float, 60.0, in_range(1, 600)),
        "cache_ttl_s": Key(float, 600.0, in_range(0, 86400)),
        "cache_max": Key(int, 100_000, in_range(0, 10_000_000)),
        # The field names of what is posted: SPEC §6 records, or docs/gov-profile.md.
        "profile": Key(str, "generic", one_of("generic", "gov")),
    }),
    # Overrides of the gov profile's mapping table (docs/gov-profile.md).
    "profile": Section({
        "fields": Key(dict, {}),
        "values": Key(dict, {}),
        "constants": Key(dict, {}),
        "timezone": Key(str, DEFAULT_TIMEZONE),
    }, required=False),
    "http": Section({
        "listen": Key(str, "127.0.0.1:9108", host_port),
    }, required=False),
    "log": Section({
        "level": Key(str, "info", one_of("debug", "info", "warning", "error")),
    }, required=False),
}


@dataclass(frozen=True)
class MqttSettings:
    host: str
    port: int
    prefix: str
    client_id: str
    shared_group: str
    keepalive_s: int
    session_expiry_s: int
    receive_maximum: int
    tls: bool
    ca_file: str
    client_cert: str
    client_key: str
    username: str
    password_file: str
    protocol: str = "5"
    standby: bool = False
    # username is client_id, and another connection of this config logs in as its own id
    # (login_as).
    username_is_client_id: bool = False
    # Announce this client's status on {prefix}/_bridges/{client_id}/status (the bridge
    # does, so that a standby knows when to take over; the watcher does not).
    announce: bool = False
    # The most ratings one batch holds (the bridge's [platform] batch_max): a broker that
    # lets fewer un-acknowledged messages through than this gets an ERROR with its figure.
    # 0 for a client that does not batch (the watcher).
    batch_max: int = 0


@dataclass(frozen=True)
class PlatformSettings:
    url: str
    timeout_s: float
    batch_max: int
    batch_wait_ms: int
    concurrency: int
    token_file: str
    ca_file: str
    client_error_retry_s: float
    retry_cap_s: float
    cache_ttl_s: float
    cache_max: int
    profile: str


@dataclass(frozen=True)
class BridgeConfig:
    path: Path
    mqtt: MqttSettings
    platform: PlatformSettings
    listen_host: str
    listen_port: int
    log_level: str
    gov_profile: GovProfile | None = None  # set when [platform] profile = "gov"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


V5_ONLY_KEYS = ("receive_maximum", "session_expiry_s")


def login_as(s: MqttSettings, client_id: str) -> MqttSettings:
    """The settings of another connection made from the same config (`hcp-bridge
    expired`, a standby's watcher) under `client_id`: with username_is_client_id it logs
    in as that id, so that a broker binding ids to users lets it beside the bridge."""
    return replace(s, client_id=client_id,
                   username=client_id if s.username_is_client_id else s.username)


def user_problems(path: Path, given: Any, values: dict[str, Any]) -> list[str]:
    """username_is_client_id names the user after an explicit client_id, with a password."""
    if not values.get("username_is_client_id") or not isinstance(given, dict):
        return []
    problems = []
    if given.get("username"):
        problems.append(f"{path}: [mqtt] username: leave it out with username_is_client_id "
                        "= true (each connection logs in as its own client id)")
    if not given.get("client_id"):
        problems.append(f"{path}: [mqtt] username_is_client_id: needs client_id (the broker "
                        "user's name, e.g. \"hcp-bridge-1\")")
    if not given.get("password_file"):
        problems.append(f"{path}: [mqtt] username_is_client_id: needs password_file (the "
                        "password is never written in this file)")
    return problems


def shared_group(given: Any, values: dict[str, Any]) -> str:
    """The group to use: with 3.1.1 and no `shared_group` in the file, none (the default
    "bridge" is an MQTT 5 feature)."""
    explicit = isinstance(given, dict) and "shared_group" in given
    if values.get("protocol") == "3.1.1" and not explicit:
        return ""
    group: str = values["shared_group"]
    return group


def protocol_problems(path: Path, given: Any, values: dict[str, Any]) -> list[str]:
    """SPEC §12: with MQTT 3.1.1 there is no shared group, and keys that only MQTT 5 can
    carry are refused rather than silently ignored."""
    if values.get("protocol") != "3.1.1" or not isinstance(given, dict):
        return []
    problems = []
    if given.get("shared_group"):
        problems.append(f"{path}: [mqtt] shared_group: must be \"\" with protocol = "
                        "\"3.1.1\" (shared subscriptions are MQTT 5; run one bridge, and a "
                        "standby with the same client_id)")
    problems += [f"{path}: [mqtt] {key}: has no effect with protocol = \"3.1.1\" (an MQTT 5 "
                 "property; the broker's own setting applies): remove it"
                 for key in V5_ONLY_KEYS if key in given]
    return problems


def parse_bridge_config(path: Path, data: dict[str, Any]) -> BridgeConfig:
    """Validate parsed TOML; raise ConfigError listing every problem."""
    v, problems = validate(path, data, SCHEMA)
    if any("section missing" in p or "must be a table" in p for p in problems):
        raise ConfigError(problems)
    m, p, h, lg, pr = v["mqtt"], v["platform"], v["http"], v["log"], v["profile"]

    # Cross-checks ------------------------------------------------------------
    problems += user_problems(path, data.get("mqtt"), m)
    if m.get("username_is_client_id") and m.get("password_file"):
        m = {**m, "username": m.get("client_id") or _default_client_id()}
    problems += broker_auth_problems(path, m)
    for key in ("token_file", "ca_file"):
        f = p.get(key)
        if f and not Path(f).is_file():
            problems.append(f"{path}: [platform] {key}: no such file {f!r}")
    url = p.get("url")
    if url and not _url(url):
        parts = urlsplit(url)
        if p.get("token_file") and parts.scheme == "http" and not _is_loopback(
                parts.hostname or ""):
            problems.append(f"{path}: [platform] token_file: the token would travel in clear "
                            "text; use an https:// url (http is allowed only to loopback)")
        if p.get("ca_file") and parts.scheme != "https":
            problems.append(f"{path}: [platform] ca_file: set only with an https:// url")
    problems += protocol_problems(path, data.get("mqtt"), m)
    rm, bm = m.get("receive_maximum"), p.get("batch_max")
    # (No Receive Maximum in 3.1.1: the broker's own in-flight limit applies.)
    if m.get("protocol") == "5" and rm is not None and bm is not None and rm < bm:
        problems.append(f"{path}: [mqtt] receive_maximum: must be at least [platform] "
                        f"batch_max ({bm}), or no batch can fill up (got {rm})")

    gov_profile = None
    if p.get("profile") == "gov" and set(pr) == {"fields", "values", "constants", "timezone"}:
        found = profile_problems(pr["fields"], pr["values"], pr["constants"], pr["timezone"])
        problems += [f"{path}: {problem}" for problem in found]
        if not found:
            gov_profile = GovProfile(pr["fields"], pr["values"], pr["constants"],
                                     pr["timezone"])
    elif p.get("profile") == "generic" and "profile" in data:
        problems.append(f"{path}: [profile]: only used with [platform] profile = \"gov\"")

    if problems:
        raise ConfigError(problems)

    listen_host, _, listen_port = h["listen"].rpartition(":")
    return BridgeConfig(
        path=path,
        mqtt=MqttSettings(**{**m, "client_id": m["client_id"] or _default_client_id(),
                             "shared_group": shared_group(data.get("mqtt"), m),
                             "batch_max": p["batch_max"], "announce": True}),
        platform=PlatformSettings(**p),
        listen_host=listen_host.strip("[]"),
        listen_port=int(listen_port),
        log_level=lg["level"],
        gov_profile=gov_profile,
    )


def load_bridge_config(path: str | Path) -> BridgeConfig:
    """Read and validate a bridge config file; raise ConfigError listing every problem."""
    p = Path(path)
    return parse_bridge_config(p, load_toml(p))
