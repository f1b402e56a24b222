"""Audit of the watcher's config (broker_bridge/watch/config.py): any TOML value in any
key of any section is either accepted or refused with ConfigError naming the file —
never another exception (hypothesis)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from broker_bridge.watch.config import SCHEMA, parse_watch_config
from common.configschema import ConfigError

TOML_SCALAR = st.one_of(
    st.booleans(), st.integers(min_value=-2**63, max_value=2**63 - 1),
    st.floats(), st.text(max_size=12),
    st.dates(), st.times(), st.datetimes(timezones=st.just(dt.UTC)))
TOML_VALUE = st.recursive(
    TOML_SCALAR,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=6)
KEYS = sorted({(section, key) for section, s in SCHEMA.items() for key in s.keys}
              | {("halls.HG01", k) for k in ("open", "holidays", "workdays", "timezone")})


def nest(flat: dict[tuple[str, str], Any], tmp: Path) -> dict[str, Any]:
    data: dict[str, Any] = {"watch": {"state_file": str(tmp / "s.json")}}
    for (section, key), value in flat.items():
        table = data
        for part in section.split("."):
            table = table.setdefault(part, {})
        table[key] = value
    return data


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(KEYS), TOML_VALUE, max_size=4),
       st.dictionaries(st.text(max_size=8), TOML_VALUE, max_size=2))
def test_any_value_is_accepted_or_refused_with_a_reason(
        flat: dict[tuple[str, str], Any], top: dict[str, Any]) -> None:
    tmp = Path("/tmp")
    data = nest(flat, tmp)
    for name, value in top.items():
        data.setdefault(name, value)
    try:
        parse_watch_config(tmp / "watch.toml", data)
    except ConfigError as e:
        assert all(str(tmp / "watch.toml") in p for p in e.problems), e.problems
