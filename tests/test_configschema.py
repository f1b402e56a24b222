"""The shared config schema (common/configschema.py) is total: any TOML value at any key,
any section or key name, gives values or one-line problems, never an exception."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from common.configschema import Key, Section, in_range, topic_prefix, validate

SCHEMA = {
    "mqtt": Section({"prefix": Key(str, "hcp/v1", topic_prefix),
                     "keepalive_s": Key(float, 30.0, in_range(1, 3600)),
                     "port": Key(int, 1883, in_range(1, 65535))}),
}

toml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8).filter(lambda v: v is not None)


def one_line_each(problems: list[str]) -> None:
    for problem in problems:
        assert "\n" not in problem and "\r" not in problem, problem
        assert len(problem) < 400, problem


@given(st.dictionaries(st.text(), toml_values, max_size=4),
       st.dictionaries(st.text(), toml_values, max_size=4))
def test_any_names_and_values_give_one_line_problems(mqtt: dict[str, Any],
                                                     other: dict[str, Any]) -> None:
    _, problems = validate("c.toml", {"mqtt": mqtt, **other}, SCHEMA)
    one_line_each(problems)


def test_a_huge_integer_for_a_number_is_a_problem_not_an_overflow() -> None:
    _, problems = validate("c.toml", {"mqtt": {"keepalive_s": 10 ** 400}}, SCHEMA)
    assert problems == ["c.toml: [mqtt] keepalive_s: a number of 401 digits is out of any "
                        "sensible range"]


def test_a_key_with_a_newline_cannot_forge_a_line() -> None:
    _, problems = validate("c.toml", {"mqtt": {"port\nINFO forged": 1}}, SCHEMA)
    assert len(problems) == 1 and "'port\\nINFO forged'" in problems[0]


def test_a_topic_prefix_with_a_trailing_newline_is_refused() -> None:
    assert topic_prefix("hcp/v1\n") is not None
    assert topic_prefix("hcp/v1") is None
