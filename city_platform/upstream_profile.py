"""The upstream's gov profile (SPEC §11 `[upstream] profile = "gov"`): the bridge's mapping
table (broker_bridge/profile.py, docs/gov-profile.md) with the overrides of the platform
config's `[upstream_profile]` — the same keys as the bridge's `[profile]`, checked by the
same `profile_problems`.

Our own records go up through `GovProfile` with those overrides. Records that reached the
city already in the gov profile's default names and values (a bridge posting with
`profile = "gov"`) are put into the same overridden names, values and time zone here
(`GovRecords`), so the province sees one table whichever way a rating came in. With no
overrides and the same time zone, that is the record as it came.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from broker_bridge.profile import (
    DEFAULT_FIELDS,
    GOV_TIME_FORMAT,
    GovProfile,
    parse_gov_time,
    profile_problems,
)

SECTION = "upstream_profile"
KEYS = ("fields", "values", "constants", "timezone")


def overrides_problems(overrides: Mapping[str, Any]) -> list[str]:
    """What is wrong with `[upstream_profile]` (fields, values, constants, timezone), one
    line each, naming the key as this config spells it."""
    found = profile_problems(overrides["fields"], overrides["values"],
                             overrides["constants"], overrides["timezone"])
    # profile_problems names the bridge's table, [profile…]; here it is [upstream_profile…].
    return [f"[{SECTION}{p[len('[profile'):]}" if p.startswith("[profile") else p
            for p in found]


def gov_profile(overrides: Mapping[str, Any]) -> GovProfile:
    """Our records' profile: the default table with `overrides` (already checked)."""
    return GovProfile(overrides.get("fields"), overrides.get("values"),
                      overrides.get("constants"), overrides["timezone"])


class GovRecords:
    """Re-maps a record in the gov profile's default names and values (as the city's
    ingest takes them, docs/platform.md) to the overridden ones: each default field
    renamed (or left out), its value turned back into ours and then into the override's,
    `assessTime` from `source_tz` (the city's [store] timezone, as ingest read it) to the
    profile's zone, the constants added. A field the record lacks goes up as null, like
    a column our own records have no value for; keys outside the table stay as they came.
    """

    def __init__(self, overrides: Mapping[str, Any], source_tz: tzinfo) -> None:
        renames: Mapping[str, str] = overrides.get("fields") or {}
        values: Mapping[str, Mapping[str, Any]] = overrides.get("values") or {}
        self._columns = [(f.name, renames.get(f.name, f.name)) for f in DEFAULT_FIELDS]
        self._known = {f.name for f in DEFAULT_FIELDS}
        # field -> {the default table's value (as text): the override's value}
        self._values: dict[str, dict[str, Any]] = {}
        for f in DEFAULT_FIELDS:
            if f.values is None:
                continue
            merged = {**f.values, **values.get(f.name, {})}
            back: dict[str, Any] = {}
            for ours, theirs in f.values.items():
                back.setdefault(str(theirs), merged[ours])   # first wins: pf "5" = button
            self._values[f.name] = {**back, **{k: v for k, v in merged.items()
                                               if k not in f.values}}
        self._constants = dict(overrides.get("constants") or {})
        self._source_tz = source_tz
        self._tz = ZoneInfo(overrides["timezone"])

    def record(self, gov: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, target in self._columns:
            value = gov.get(name)
            if name == "assessTime":
                value = self._local_time(value)
            elif name == "evalDetail" and isinstance(value, str):
                table = self._values[name]
                value = ",".join(str(table.get(code, code))
                                 for code in value.split(",") if code)
            elif name in self._values and value is not None:
                value = self._values[name].get(str(value), value)
            if target:
                out[target] = value
        for key, value in gov.items():
            if key not in self._known and key not in out:
                out[key] = value
        out.update(self._constants)
        return out

    def _local_time(self, value: Any) -> Any:
        local = parse_gov_time(value)
        if local is None:
            return value   # ingest checked it: defence only, the province judges
        moment = local.replace(tzinfo=self._source_tz)
        return moment.astimezone(self._tz).strftime(GOV_TIME_FORMAT)
