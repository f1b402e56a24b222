"""The report benchmark's baseline (bench/old_report.py, the report as `hcp-bridge report`
computed it before `hcp-platform report`) against a platform store filled over HTTP with
ratings whose counts this test knows: levels, satisfaction rate and its rounding,
reasons, spontaneous share, expired prompts, ranking, date boundaries in local time,
duplicates, gov-shaped records, table and CSV. A baseline that counted wrong would make
the benchmark's comparison meaningless. The known ratings serve the city platform's
report tests too (tests/test_city_report.py)."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bench.old_report import Report, build_report, read_store, to_csv, to_table
from broker_bridge.platform_client import PlatformClient
from broker_bridge.profile import GovProfile, encode
from broker_bridge.satisfaction import format_rate, percent, rate_of_levels, satisfaction_rate
from broker_bridge.timezones import load_timezone
from tests.support.bridge import REPO
from tests.support.platform import running_platform
from tests.support.ratings import make_rating

IN_RANGE = "2026-11-05T02:00:00Z"  # 10:00 on 5 Nov in Shanghai


def rating(device: str, level: int, at: str = IN_RANGE, reason: str | None = None,
           spontaneous: bool = False) -> dict[str, Any]:
    extra: dict[str, Any] = {"trigger": "spontaneous", "case": None} if spontaneous else {}
    return make_rating(device, level, rated_at=at, reason=reason if level <= 2 else None,
                       **extra)


def known_ratings() -> list[dict[str, Any]]:
    r: list[dict[str, Any]] = []
    # HG01-W01: 6 ratings, 4 good = 66.7 %; one spontaneous; reasons R02, R01.
    r += [rating("421100-HG01-W01", 5, spontaneous=True), rating("421100-HG01-W01", 5),
          rating("421100-HG01-W01", 4), rating("421100-HG01-W01", 3),
          rating("421100-HG01-W01", 2, reason="R02"), rating("421100-HG01-W01", 1, reason="R01")]
    # HG01-W02: 100.0 %.
    r += [rating("421100-HG01-W02", level) for level in (5, 5, 5, 4)]
    # HG01-W03: 3 of 6 = 50.0 %; reasons R02 twice and one without a reason.
    r += [rating("421100-HG01-W03", 5), rating("421100-HG01-W03", 4),
          rating("421100-HG01-W03", 3), rating("421100-HG01-W03", 2, reason="R02"),
          rating("421100-HG01-W03", 2, reason="R02"), rating("421100-HG01-W03", 1)]
    # HG01-W04: 1 of 2 = 50.0 %: the same rank as W03, listed after it (fewer ratings).
    r += [rating("421100-HG01-W04", 5), rating("421100-HG01-W04", 1, reason="R04")]
    # HG02-W01: 6 of 7 = 85.714… → 85.7; HG02-W02: 1 of 16 = 6.25 → 6.3 (half-up).
    r += [rating("421100-HG02-W01", 5) for _ in range(6)]
    r += [rating("421100-HG02-W01", 2, reason="R03")]
    r += [rating("421100-HG02-W02", 3)] + [rating("421100-HG02-W02", 1) for _ in range(15)]
    # Local-date boundaries (range 2 … 8 Nov, Shanghai): in at 00:00 on the 2nd and
    # 23:59:59 on the 8th, out at 23:59:59 on the 1st and 00:00 on the 9th.
    r += [rating("421100-HG02-W03", 5, at="2026-11-01T16:00:00Z"),
          rating("421100-HG02-W03", 4, at="2026-11-08T15:59:59+00:00"),
          rating("421100-HG02-W03", 1, at="2026-11-01T15:59:59Z"),
          rating("421100-HG02-W03", 1, at="2026-11-09T00:00:00+08:00")]
    return r


@pytest.fixture
def filled(tmp_path: Path) -> Iterator[Path]:
    """The platform's SQLite file, after the known ratings were posted to it."""
    with running_platform(tmp_path / "platform") as platform:
        client = PlatformClient(platform.url, timeout_s=5)
        records = known_ratings()
        client.post_ratings([encode(r) for r in records])
        client.post_ratings([encode(r) for r in records[:10]])  # re-sent: counted once
        gov = GovProfile()
        client.post_ratings([encode(gov.rating(rating("421100-HG03-W01", level, reason="R02")))
                             for level in (5, 2)])
        client.post_ratings([encode(gov.expired("421100-HG03-W01", {
            "event": "prompt_expired", "at": IN_RANGE, "case_id": "C-EXP-1"}))] * 2)
        client.close()
        assert platform.control.counts()["total"] == 18 + 27 + 2
        yield tmp_path / "platform" / "platform.db"


def make_report(db: Path, first: str = "2026-11-02", last: str = "2026-11-08",
                hall: str | None = None) -> Report:
    store = read_store(db, load_timezone("Asia/Shanghai"), date.fromisoformat(first),
                       date.fromisoformat(last))
    return build_report(store, date.fromisoformat(first), date.fromisoformat(last),
                        "Asia/Shanghai", hall)


def csv_rows(report: Report) -> dict[tuple[str, str], dict[str, str]]:
    return {(row["hall_id"], row["window_id"]): row
            for row in csv.DictReader(io.StringIO(to_csv(report)))}


def test_counts_rates_reasons_and_ranking(filled: Path) -> None:
    rows = csv_rows(make_report(filled))
    w01 = rows[("HG01", "W01")]
    assert [w01[f"level_{n}"] for n in (5, 4, 3, 2, 1)] == ["2", "1", "1", "1", "1"]
    assert (w01["ratings"], w01["good"], w01["bad"]) == ("6", "4", "2")
    assert (w01["satisfaction_pct"], w01["spontaneous"], w01["spontaneous_pct"]) == (
        "66.7", "1", "16.7")
    assert w01["bad_reasons"] == "R01:1 R02:1"
    assert rows[("HG01", "W03")]["bad_reasons"] == "R02:2 none:1"
    ranking = [(key[1], row["rank"], row["satisfaction_pct"])
               for key, row in rows.items() if key[0] == "HG01" and key[1]]
    assert ranking == [("W02", "1", "100.0"), ("W01", "2", "66.7"), ("W03", "3", "50.0"),
                       ("W04", "3", "50.0")]
    hall = rows[("HG01", "")]
    assert (hall["scope"], hall["ratings"], hall["good"], hall["satisfaction_pct"]) == (
        "hall", "18", "12", "66.7")
    assert hall["bad_reasons"] == "R02:3 R01:1 R04:1 none:1"


def test_rounding_half_up_and_local_date_boundaries(filled: Path) -> None:
    rows = csv_rows(make_report(filled))
    assert rows[("HG02", "W01")]["satisfaction_pct"] == "85.7"
    assert rows[("HG02", "W02")]["satisfaction_pct"] == "6.3"
    edge = rows[("HG02", "W03")]
    assert (edge["ratings"], edge["level_5"], edge["level_4"], edge["level_1"]) == (
        "2", "1", "1", "0")
    # One day further on each side brings the two outside ratings in.
    wider = csv_rows(make_report(filled, "2026-11-01", "2026-11-09"))
    assert wider[("HG02", "W03")]["level_1"] == "2"


def test_gov_records_and_expired_prompts(filled: Path) -> None:
    rows = csv_rows(make_report(filled, hall="HG03"))
    assert set(rows) == {("HG03", ""), ("HG03", "W01")}
    w = rows[("HG03", "W01")]
    # The expired prompt (sent twice) counts once, and not as a rating.
    assert (w["ratings"], w["satisfaction_pct"], w["expired_prompts"]) == ("2", "50.0", "1")
    assert w["bad_reasons"] == "R02:1"


def test_empty_range_and_table_layout(filled: Path) -> None:
    assert "no ratings in this range" in to_table(make_report(filled, "2025-01-01",
                                                              "2025-01-31"))
    table = to_table(make_report(filled))
    assert "hall HG01: 18 ratings, satisfaction 66.7 %, spontaneous 5.6 %" in table
    lines = table.splitlines()
    w02 = next(line for line in lines if " W02 " in line and "100.0" in line)
    assert w02.split()[:8] == ["1", "W02", "4", "3", "1", "0", "0", "0"]


def test_hcp_bridge_report_says_where_the_report_went() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "broker_bridge", "report", "--db", "x.db"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "hcp-platform report --store URL" in done.stderr and done.stdout == ""


def test_satisfaction_rate_is_defined_once() -> None:
    assert satisfaction_rate(2, 3) == Decimal("66.7")
    assert satisfaction_rate(1, 8) == Decimal("12.5")
    assert satisfaction_rate(1, 16) == Decimal("6.3")      # half-up, not half-even
    assert satisfaction_rate(1, 40) == Decimal("2.5")
    assert satisfaction_rate(3, 3) == Decimal("100.0")
    assert satisfaction_rate(0, 0) is None and format_rate(None) == "—"
    assert rate_of_levels([5, 4, 3, 2, 1]) == Decimal("60.0")
    assert format_rate(percent(1, 3)) == "33.3"
