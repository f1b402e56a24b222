"""Property tests of the device's two config boundaries (issue 17): the TOML file and the
retained `config` topic. Whatever they hold, the result is a config the daemon can run or
one line per problem, never an exception; a text the screen shows is always showable."""

from __future__ import annotations

import json
import math
import unicodedata
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.configschema import ConfigError
from device.config import MAX_REASON_LABEL, MAX_WINDOW_NAME, SCHEMA, parse_device_config
from device.core.settings import UiSettings
from device.remote_config import MAX_PROBLEMS, apply, parse_remote_config

PATH = Path("/etc/hcp/device.toml")
PROPERTY = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
UNSHOWABLE = {"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"}


def showable(text: str) -> bool:
    return not any(unicodedata.category(ch) in UNSHOWABLE for ch in text)


hostile_text = st.text(st.characters(codec="utf-8") | st.sampled_from(
    ["\r", "\n", "\u2028", "\u2029", "\u202e", "\u200b", "\x00", "\x1b", "\x85", "\t",
     "\ufeff", "\u3000", " ", "#", "/", ":", "²"]), max_size=60)
hostile_ints = (st.integers() | st.integers(2**62, 2**64) | st.integers(-(2**64), -(2**62))
                | st.integers(10**300, 10**400))


def toml_scalars() -> st.SearchStrategy[Any]:
    """The values tomllib can return: text, integers of any size, floats with nan and inf,
    booleans, dates and times."""
    return st.one_of(
        hostile_text, hostile_ints, st.floats(), st.booleans(),
        st.datetimes(timezones=st.none() | st.just(UTC)), st.dates(), st.times())


toml_values = st.recursive(
    toml_scalars(),
    lambda inner: st.lists(inner, max_size=5)
    | st.dictionaries(hostile_text | st.sampled_from(["1", "2", "3", "4", "5", "code",
                                                      "label"]), inner, max_size=5),
    max_leaves=10)


def valid_config() -> dict[str, Any]:
    return {
        "device": {"id": "421100-HG01-W03", "region_code": "421100", "hall_id": "HG01",
                   "window_id": "W03", "window_name": "03号窗口", "data_dir": "/var/lib/x"},
        "serial": {"port": ""}, "input": {"kind": "sim"}, "display": {"kind": "sim"},
    }


KEYS = [(section, key) for section, spec in SCHEMA.items() for key in spec.keys]
# A few values each key is likely to trip on, besides arbitrary ones.
TRICKY: list[Any] = ["", " ", "\n", "a\r\nb", "/dev/tty\n", "socket://h:²", "\x00", 10**400,
                     -(2**63) - 1, 2**63, math.nan, math.inf, [], {}, [{"code": "R1"}],
                     [{"code": "R1", "label": "服务\n态度"}], {"5": 10**30},
                     {"5": [0, 0, 10**30, 1]}, date(1, 1, 1), time(0, 0)]


def assert_problem_lines(problems: list[str]) -> None:
    assert problems
    for p in problems:
        assert isinstance(p, str) and "\n" not in p and showable(p), p
        assert p.startswith(f"{PATH}: ["), p


def assert_runnable_texts(ui: UiSettings) -> None:
    assert ui.window_name.strip() and len(ui.window_name) <= MAX_WINDOW_NAME
    assert showable(ui.window_name)
    for code, label in ui.reasons:
        assert code and label.strip() and len(label) <= MAX_REASON_LABEL and showable(label)
    for name in ("prompt_timeout_s", "reasons_timeout_s", "thanks_s", "lockout_s",
                 "spontaneous_min_interval_s"):
        value = getattr(ui, name)
        assert isinstance(value, float) and math.isfinite(value) and 0 <= value <= 86400


@PROPERTY
@given(st.sampled_from(KEYS), toml_values | st.sampled_from(TRICKY))
def test_any_value_of_any_key_is_a_config_or_one_line_per_problem(
        where: tuple[str, str], value: Any) -> None:
    section, key = where
    data = valid_config()
    data.setdefault(section, {})[key] = value
    try:
        config = parse_device_config(PATH, data)
    except ConfigError as e:
        assert_problem_lines(e.problems)
        assert any(f"[{section}]" in p and key in p for p in e.problems), e.problems
        return
    assert_runnable_texts(config.ui)
    assert config.device.data_dir.is_absolute()


@PROPERTY
@given(st.dictionaries(hostile_text, toml_values, max_size=4),
       st.dictionaries(hostile_text, toml_values, max_size=3))
def test_unknown_sections_and_keys_with_any_name_give_one_line_each(
        sections: dict[str, Any], device_keys: dict[str, Any]) -> None:
    data = {**sections, **valid_config()}
    data["device"] = {**device_keys, **data["device"]}
    try:
        parse_device_config(PATH, data)
    except ConfigError as e:
        assert_problem_lines(e.problems)


# -- the retained config topic -------------------------------------------------------------

REMOTE_KEYS = ["window_name", *SCHEMA["ui"].keys]
json_scalars = st.one_of(st.none(), st.booleans(), hostile_ints,
                         st.floats(allow_nan=False, allow_infinity=False), hostile_text)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(
        hostile_text | st.sampled_from(["code", "label"]), inner, max_size=4),
    max_leaves=12)
reason_lists = st.lists(st.fixed_dictionaries(
    {"code": st.sampled_from(["R1", "X2", "a b", "R\n"]) | hostile_text,
     "label": hostile_text}), max_size=5)


@PROPERTY
@given(st.dictionaries(st.sampled_from(REMOTE_KEYS) | hostile_text,
                       json_values | reason_lists, max_size=6)
       | json_values)
def test_any_json_is_changes_the_core_can_use_or_bounded_problems(message: Any) -> None:
    result = parse_remote_config(json.dumps(message, ensure_ascii=False).encode(
        "utf-8", "surrogatepass"))
    if isinstance(result, list):
        assert 1 <= len(result) <= MAX_PROBLEMS
        assert all(isinstance(p, str) and showable(p) and len(p) <= 300 for p in result)
        return
    assert isinstance(message, dict) and set(result) == set(message)
    assert_runnable_texts(apply(UiSettings(window_name="03号窗口"), result))


@PROPERTY
@given(st.binary(max_size=2000))
def test_any_bytes_never_raise(payload: bytes) -> None:
    result = parse_remote_config(payload)
    assert isinstance(result, dict | list)


@pytest.mark.parametrize("size", [16 * 1024 + 1, 256 * 1024 + 1, 4 * 1024 * 1024])
def test_a_large_payload_is_refused_naming_its_size(size: int) -> None:
    payload = b'{"window_name": "' + b"x" * (size - 19) + b'"}'
    assert len(payload) == size
    assert parse_remote_config(payload) == [f"payload of {size} bytes is over 16384"]


def test_stored_datetime_like_values_are_not_numbers() -> None:
    assert isinstance(parse_remote_config(json.dumps(
        {"thanks_s": datetime(2026, 1, 1).isoformat()}).encode()), list)
