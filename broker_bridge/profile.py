"""The `gov` field profile: our rating record (SPEC §6), and expired prompts, in the field
names that provincial 好差评 reporting interfaces use, through a mapping table that the
bridge config can override field by field and value by value (each province differs).

docs/gov-profile.md is the table in prose; DEFAULT_FIELDS below is the table in code.
Pure functions, no I/O.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from broker_bridge.timezones import DEFAULT_TIMEZONE, load_timezone, timezone_problem
from common.rating import (
    DEVICE_ID_RE,
    RATING_ID_RE,
    REASON_CODE_RE,
    InvalidRecord,
    aware_time,
    decode_json_object,
)

GOV_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"   # yyyy-MM-dd HH:mm:ss, local time
FIELD_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
RATED, EXPIRED = "rated", "expired"

Getter = Callable[[Mapping[str, Any]], Any]


def _path(*keys: str) -> Getter:
    def get(record: Mapping[str, Any]) -> Any:
        value: Any = record
        for key in keys:
            value = value.get(key) if isinstance(value, Mapping) else None
        return value
    return get


def _none(record: Mapping[str, Any]) -> Any:
    return None


@dataclass(frozen=True)
class GovField:
    """One row of the mapping table."""

    name: str                 # the default field name in the gov record
    meaning: str
    rating: Getter            # its value, from a rating record
    expired: Getter           # its value, from an expired-prompt event (+ device_id)
    values: Mapping[str, Any] | None = None  # default value map (our value -> theirs)


# Satisfaction runs 1 = 非常不满意 … 5 = 非常满意, the same direction as our level. GB/T
# 39046's own code table runs the other way; a province that follows it overrides this
# map ([profile.values.satisfaction] 5 = "1", … 1 = "5"). The direction is never implied.
SATISFACTION = {"5": "5", "4": "4", "3": "3", "2": "2", "1": "1"}
# 评价渠道: 4 = 政务大厅平板电脑 (a touch panel), 5 = 政务大厅其他终端 (a key pad evaluator).
PF = {"button": "5", "touch": "4", "sim": "5"}

DEFAULT_FIELDS: tuple[GovField, ...] = (
    GovField("assessId", "our rating_id (expired prompt: an id derived from device, case "
             "and time); the platform de-duplicates and answers by it",
             _path("rating_id"), _path("prompt_id")),
    GovField("assessType", "rated = a rating; expired = a prompt that timed out unrated",
             lambda r: RATED, lambda e: EXPIRED, {RATED: RATED, EXPIRED: EXPIRED}),
    GovField("projectNo", "办件编号: case.case_id; null for a spontaneous rating",
             _path("case", "case_id"), _path("case_id")),
    GovField("taskCode", "事项编码: case.service_code", _path("case", "service_code"), _none),
    GovField("taskName", "事项名称: case.service_name", _path("case", "service_name"), _none),
    GovField("deptCode", "部门编码: case.dept_code", _path("case", "dept_code"), _none),
    GovField("areaCode", "行政区划代码: region_code", _path("region_code"), _none),
    GovField("hallCode", "大厅编号: hall_id", _path("hall_id"), _none),
    GovField("windowCode", "窗口编号: window_id", _path("window_id"), _none),
    GovField("deviceCode", "评价器编号: device_id", _path("device_id"), _path("device_id")),
    GovField("satisfaction", "满意度: level, 1 = 非常不满意 … 5 = 非常满意",
             _path("level"), _none, SATISFACTION),
    GovField("evalDetail", "评价详情: reason codes, comma-separated (\"\" when none)",
             _path("reason"), _none, {}),
    GovField("pf", "评价渠道: by input (button 5, touch 4, sim 5)", _path("input"), _none, PF),
    GovField("assessTime", "评价时间 yyyy-MM-dd HH:mm:ss local: rated_at (expired: when the "
             "prompt expired)", _path("rated_at"), _path("at")),
    GovField("assessNumber", "评价次数: 1 (a case is rated at most once)", lambda r: 1, _none),
    GovField("handleUserId", "被评价人员编号: staff.staff_id", _path("staff", "staff_id"), _none),
    GovField("handleUserName", "被评价人员姓名: staff.staff_name", _path("staff", "staff_name"),
             _none),
    GovField("clockSynced", "whether assessTime comes from a synchronised clock",
             _path("clock_synced"), _none),
)
FIELDS_BY_NAME = {f.name: f for f in DEFAULT_FIELDS}
ID_FIELD = "assessId"
# The keys a value map may have, per field (None: any reason code).
VALUE_KEYS: dict[str, frozenset[str] | None] = {
    "satisfaction": frozenset(SATISFACTION), "pf": frozenset(PF),
    "assessType": frozenset({RATED, EXPIRED}), "evalDetail": None,
}


class GovProfile:
    """Maps records with the default table plus the config's overrides."""

    def __init__(self, fields: Mapping[str, str] | None = None,
                 values: Mapping[str, Mapping[str, Any]] | None = None,
                 constants: Mapping[str, Any] | None = None,
                 timezone: str = DEFAULT_TIMEZONE) -> None:
        problems = profile_problems(fields or {}, values or {}, constants or {}, timezone)
        if problems:
            raise ValueError("; ".join(problems))
        renames = dict(fields or {})
        self._columns = [(renames.get(f.name, f.name), f) for f in DEFAULT_FIELDS
                         if renames.get(f.name, f.name)]
        self._values = {f.name: {**(f.values or {}), **(values or {}).get(f.name, {})}
                        for f in DEFAULT_FIELDS if f.values is not None}
        self._constants = dict(constants or {})
        self._tz = load_timezone(timezone)
        self.id_field = renames.get(ID_FIELD, ID_FIELD)

    def rating(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """A valid SPEC §6 record as a gov record."""
        return self._map(record, lambda f: f.rating)

    def expired(self, device_id: str, event: Mapping[str, Any]) -> dict[str, Any]:
        """A `prompt_expired` event ({"event", "at", "case_id"}) of `device_id` as a gov
        record the platform can turn into its province's default rating. It is not a
        rating: the device never invents one."""
        source = {"device_id": device_id, "case_id": event.get("case_id"),
                  "at": event.get("at"), "prompt_id": expired_prompt_id(device_id, event)}
        return self._map(source, lambda f: f.expired)

    def rating_payload(self, payload: bytes) -> bytes:
        """A rating's MQTT payload (already validated) as the gov record's JSON."""
        return encode(self.rating(decode_json_object(payload)))

    def _map(self, source: Mapping[str, Any], getter: Callable[[GovField], Getter]
             ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, field in self._columns:
            value = getter(field)(source)
            if field.name == "assessTime":
                value = self.local_time(value)
            elif field.name == "evalDetail":
                codes = [] if value is None else [value] if isinstance(value, str) else value
                value = ",".join(str(self._values["evalDetail"].get(c, c)) for c in codes)
            elif field.name in self._values and value is not None:
                value = self._values[field.name].get(str(value), value)
            out[name] = value
        out.update(self._constants)
        return out

    def local_time(self, iso: Any) -> str | None:
        """ISO-8601 with an offset → yyyy-MM-dd HH:mm:ss in the profile's time zone; None
        for anything else, or a time outside common.rating's range."""
        moment = aware_time(iso)
        if moment is None:  # records and events are checked before: defence only
            return None
        return moment.astimezone(self._tz).strftime(GOV_TIME_FORMAT)


def expired_prompt_id(device_id: str, event: Mapping[str, Any]) -> str:
    """A stable id for one expiry: the same event delivered twice gets the same id (the
    platform de-duplicates it); the same case expiring again later gets another."""
    key = f"{device_id}\x1f{event.get('case_id')}\x1f{event.get('at')}"
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def encode(record: Mapping[str, Any]) -> bytes:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# Config -----------------------------------------------------------------------------

def profile_problems(fields: Mapping[str, Any], values: Mapping[str, Any],
                     constants: Mapping[str, Any], timezone: str) -> list[str]:
    """What is wrong with the overrides, one line each, prefixed with the table name."""
    problems: list[str] = []
    if not isinstance(fields, Mapping):
        return ["[profile] fields: must be a table"]
    for name, target in fields.items():
        if name not in FIELDS_BY_NAME:
            problems.append(f"[profile.fields] {name}: not a field of the gov table (known: "
                            f"{', '.join(FIELDS_BY_NAME)})")
        elif not isinstance(target, str) or (target and not FIELD_NAME_RE.match(target)):
            problems.append(f"[profile.fields] {name}: must be a field name "
                            "([A-Za-z_][A-Za-z0-9_]{0,63}) or \"\" to leave it out, "
                            f"got {target!r}")
        elif name == ID_FIELD and not target:
            problems.append(f"[profile.fields] {ID_FIELD}: cannot be left out: the platform "
                            "answers and de-duplicates by it")
    if problems:
        return problems
    names = [fields.get(f.name, f.name) for f in DEFAULT_FIELDS]
    names = [n for n in names if n]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"[profile.fields]: two fields would be called {name!r}")
    if not isinstance(values, Mapping):
        return problems + ["[profile] values: must be a table of [profile.values.<field>]"]
    for field, table in values.items():
        problems += _value_map_problems(field, table)
    if not isinstance(constants, Mapping):
        return problems + ["[profile] constants: must be a table"]
    for name, value in constants.items():
        if not FIELD_NAME_RE.match(name):
            problems.append(f"[profile.constants] {name}: not a field name")
        elif name in names:
            problems.append(f"[profile.constants] {name}: the table already has this field")
        elif not isinstance(value, str | int) or isinstance(value, float):
            problems.append(f"[profile.constants] {name}: must be a string, an integer or "
                            f"true/false, got {value!r}")
    why = timezone_problem(timezone)
    if why:
        problems.append(f"[profile] timezone: {why}")
    return problems


def _value_map_problems(field: str, table: Any) -> list[str]:
    if field not in VALUE_KEYS:
        return [f"[profile.values.{field}]: only {', '.join(VALUE_KEYS)} have value maps"]
    if not isinstance(table, Mapping):
        return [f"[profile.values] {field}: must be a table"]
    problems: list[str] = []
    allowed = VALUE_KEYS[field]
    for key, value in table.items():
        if allowed is not None and key not in allowed:
            problems.append(f"[profile.values.{field}] {key}: not one of our values "
                            f"({', '.join(sorted(allowed))})")
        elif allowed is None and not REASON_CODE_RE.fullmatch(key):
            problems.append(f"[profile.values.{field}] {key}: not a reason code")
        elif not isinstance(value, str | int) or isinstance(value, bool):
            problems.append(f"[profile.values.{field}] {key}: must be a string or an "
                            f"integer, got {value!r}")
    if field == "satisfaction" and not problems:
        merged = {**SATISFACTION, **table}
        if len({json.dumps(v) for v in merged.values()}) < len(merged):
            problems.append("[profile.values.satisfaction]: two levels would have the same "
                            "value; give all five when reversing the direction")
    return problems


# The reference platform ----------------------------------------------------------------

def check_gov_record(record: Mapping[str, Any]) -> str:
    """For the reference platform: raise InvalidRecord unless `record` is a gov record in
    the default table's names and values; return its assessType."""
    rid = record.get(ID_FIELD)
    rating_id = rid if isinstance(rid, str) and RATING_ID_RE.fullmatch(rid) else None

    def bad(detail: str) -> InvalidRecord:
        return InvalidRecord("bad_field", f"gov record: {detail}", rating_id)

    if rating_id is None:
        raise bad(f"{ID_FIELD} must be 32 lowercase hex digits")
    kind = record.get("assessType")
    if kind not in (RATED, EXPIRED):
        raise bad(f"assessType must be {RATED!r} or {EXPIRED!r}")
    device = record.get("deviceCode")
    if not isinstance(device, str) or not DEVICE_ID_RE.fullmatch(device):
        raise bad("deviceCode must be a device id")
    if parse_gov_time(record.get("assessTime")) is None:
        raise bad("assessTime must be yyyy-MM-dd HH:mm:ss")
    if kind == RATED and record.get("satisfaction") not in SATISFACTION:
        raise bad("satisfaction must be \"1\"..\"5\"")
    if kind == EXPIRED and not (isinstance(record.get("projectNo"), str)
                                and record["projectNo"]):
        raise bad("an expired prompt needs its projectNo")
    return str(kind)


def parse_gov_time(value: Any) -> datetime | None:
    """yyyy-MM-dd HH:mm:ss (naive local time) or None."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value, GOV_TIME_FORMAT)
    except ValueError:
        return None
