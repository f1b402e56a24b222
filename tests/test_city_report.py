"""`hcp-platform report`: counts, satisfaction, reasons, expired prompts, follow-up rates
in time and ranking computed in the database (SQLite and a real PostgreSQL), CSV that
Excel opens (BOM), and the HTML file's SVG charts in a real headless Chromium."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from broker_bridge.profile import GovProfile
from city_platform.report import build_report
from city_platform.report_html import to_html
from city_platform.report_text import BOM, to_csv, to_table
from city_platform.store import Store
from tests.support import browser
from tests.support import postgres as pg
from tests.support.bridge import REPO
from tests.support.ratings import make_rating
from tests.test_report import IN_RANGE, known_ratings, rating

postgres_server, postgres_url = pg.postgres_server, pg.postgres_url  # fixtures
browser_page = browser.browser_page


@pytest.fixture(params=["sqlite", "postgresql"])
def filled(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Store]]:
    """A store with the known ratings of tests/test_report.py, a gov rating and
    expired prompts, and follow-ups moved in time and late."""
    url = (f"sqlite:///{tmp_path / 'ratings.db'}" if request.param == "sqlite"
           else request.getfixturevalue("postgres_url"))
    store = Store.open(url)
    records = known_ratings()
    store.submit(records)
    store.submit(records[:10])  # re-sent: counted once
    gov = GovProfile()
    store.submit([gov.rating(rating("421100-HG03-W01", level, reason="R02"))
                  for level in (5, 2)])
    store.submit([gov.expired("421100-HG03-W01", {"event": "prompt_expired",
                                                  "at": IN_RANGE, "case_id": "C-1"})] * 2)
    store.note_window("HG01", "W01", "421100-HG01-W01", "01号窗口 社保")
    # HG01-W01's two bad ratings (5 Nov, a Thursday): one contacted and rectified in
    # time, one contacted late (contact due Tue 10 Nov).
    w01 = [f for f in store.followups() if f.device_id == "421100-HG01-W01"]
    on_time = datetime(2026, 11, 6, 2, tzinfo=UTC)
    late = datetime(2026, 11, 12, 2, tzinfo=UTC)
    store.move_followup(w01[0].rating_id, "contacted", "已回访", "李", now=on_time)
    store.move_followup(w01[0].rating_id, "rectified", "已整改", "李", now=on_time)
    store.move_followup(w01[1].rating_id, "contacted", "已回访", "李", now=late)
    yield url, store
    store.close()


def rows_of(text: str) -> dict[tuple[str, str], dict[str, str]]:
    assert text.startswith(BOM)
    return {(r["hall_id"], r["window_id"]): r
            for r in csv.DictReader(io.StringIO(text[len(BOM):]))}


def test_counts_rates_reasons_followups_and_ranking(filled: tuple[str, Store]) -> None:
    _, store = filled
    report = build_report(store, date(2026, 11, 2), date(2026, 11, 8))
    rows = rows_of(to_csv(report))
    w01 = rows[("HG01", "W01")]
    assert [w01[f"level_{n}"] for n in (5, 4, 3, 2, 1)] == ["2", "1", "1", "1", "1"]
    assert (w01["ratings"], w01["satisfaction_pct"], w01["spontaneous_pct"]) == (
        "6", "66.7", "16.7")
    assert w01["window_name"] == "01号窗口 社保"
    assert w01["bad_reasons"] == "R01:1 R02:1"
    assert (w01["followups"], w01["contacted_in_time"], w01["contact_rate_pct"],
            w01["rectified_in_time"], w01["rectify_rate_pct"]) == ("2", "1", "50.0", "1",
                                                                   "50.0")
    assert rows[("HG01", "W03")]["bad_reasons"] == "R02:2 none:1"
    ranking = [(key[1], row["rank"]) for key, row in rows.items()
               if key[0] == "HG01" and key[1]]
    assert ranking == [("W02", "1"), ("W01", "2"), ("W03", "3"), ("W04", "3")]
    assert rows[("HG02", "W02")]["satisfaction_pct"] == "6.3"          # half-up
    edge = rows[("HG02", "W03")]
    assert (edge["ratings"], edge["level_1"]) == ("2", "0")            # local dates
    hg03 = rows[("HG03", "W01")]
    assert (hg03["ratings"], hg03["satisfaction_pct"], hg03["expired_prompts"]) == (
        "2", "50.0", "1")
    hall = rows[("HG01", "")]
    assert (hall["scope"], hall["ratings"], hall["good"]) == ("hall", "18", "12")
    assert [d.isoformat() for d, _, _ in report.daily][:1] == ["2026-11-02"]
    assert "01号窗口 社保" in to_table(report)


def test_hall_filter_and_whole_range(filled: tuple[str, Store]) -> None:
    _, store = filled
    only = build_report(store, hall="HG02")
    assert [h.total.hall_id for h in only.halls] == ["HG02"]
    assert only.halls[0].total.total == 7 + 16 + 4


def test_cli_writes_csv_with_a_bom_and_refuses_a_missing_store(
        filled: tuple[str, Store], tmp_path: Path) -> None:
    url, _ = filled
    out = tmp_path / "nov.csv"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "city_platform", "report", "--store", url,
                           "--from", "2026-11-02", "--to", "2026-11-08", "--format", "csv",
                           "--output", str(out)], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    data = out.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf") and "01号窗口 社保".encode() in data
    missing = subprocess.run([sys.executable, "-m", "city_platform", "report", "--store",
                              f"sqlite:///{tmp_path / 'none.db'}"], env=env, cwd=REPO,
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "no such file" in missing.stderr


def test_html_charts_are_drawn_in_chromium(tmp_path: Path, browser_page: Any) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'ratings.db'}")
    records = known_ratings()
    # A trend needs days: the same windows over a week.
    for day in range(2, 9):
        records += [make_rating("421100-HG01-W05", level,
                                rated_at=f"2026-11-0{day}T03:00:00Z",
                                reason="R03" if level <= 2 else None)
                    for level in (5, 4, 2 if day % 2 else 5)]
    store.submit(records)
    html_file = tmp_path / "report.html"
    html_file.write_text(to_html(build_report(store, date(2026, 11, 2), date(2026, 11, 8))),
                         encoding="utf-8")
    store.close()
    page = browser_page
    page.goto(html_file.as_uri())
    for chart, bars in (("chart-levels", 20), ("chart-trend", 7), ("chart-reasons", 3)):
        element = page.locator(f"#{chart}")
        assert element.count() == 1, chart
        assert page.locator(f"#{chart} .bar").count() >= bars, chart
        box = element.bounding_box()
        assert box is not None and box["width"] > 300 and box["height"] > 60, chart
        inked, colours = browser.ink(element.screenshot())
        # Not empty: a good share of the chart is drawn, in several colours.
        assert inked > 0.05 * box["width"] * box["height"], (chart, inked)
        assert colours >= 4, (chart, colours)
    assert page.locator("#chart-trend .line").count() == 1
    assert "好差评分析报告" in page.title()


def test_an_empty_range_says_so(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'ratings.db'}")
    report = build_report(store, date(2030, 1, 1), date(2030, 1, 31))
    store.close()
    assert "no ratings in this range" in to_table(report)
    assert "此期间无评价" in to_html(report)
    assert to_csv(report).count("\n") == 1


