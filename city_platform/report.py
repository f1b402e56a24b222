"""The analysis (综合分析) of SPEC §11: per hall and window, for a date range, the count per
level, satisfaction rate, reasons of bad ratings, spontaneous share, expired prompts,
follow-up rates in time (回访率, 整改率) and a ranking — aggregated in the database
(the `daily_tally` roll-up, the follow-ups and expired prompts tables), never by loading
every record.

Satisfaction rate = levels 3–5 over all ratings, in percent, half-up to one decimal, as
the watcher and the old `hcp-bridge report` compute it. Dates are the local dates the
store recorded at ingest (`[store] timezone`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from city_platform.store import Store
from city_platform.store.db import POSTGRESQL, as_day

LEVELS = (5, 4, 3, 2, 1)
LEVEL_LABELS = {5: "非常满意", 4: "满意", 3: "基本满意", 2: "不满意", 1: "非常不满意"}
REASON_LABELS = {"R01": "服务态度", "R02": "服务效率", "R03": "服务水平", "R04": "其他",
                 "none": "未选原因"}
NO_REASON = "none"


def percent(part: int, whole: int) -> Decimal | None:
    """part / whole × 100, half-up to one decimal; None without a whole."""
    if not whole:
        return None
    return (Decimal(part) * 100 / Decimal(whole)).quantize(Decimal("0.1"), ROUND_HALF_UP)


def fmt(rate: Decimal | None) -> str:
    return "—" if rate is None else f"{rate:.1f}"


@dataclass
class Tally:
    """One window, or a hall's total (window_id "")."""

    hall_id: str
    window_id: str
    window_name: str = ""
    levels: Counter[int] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    spontaneous: int = 0
    expired: int = 0
    followups: int = 0
    contacted_in_time: int = 0
    rectified_in_time: int = 0
    rank: int | None = None

    def merge(self, other: Tally) -> None:
        self.levels.update(other.levels)
        self.reasons.update(other.reasons)
        self.spontaneous += other.spontaneous
        self.expired += other.expired
        self.followups += other.followups
        self.contacted_in_time += other.contacted_in_time
        self.rectified_in_time += other.rectified_in_time

    @property
    def total(self) -> int:
        return sum(self.levels.values())

    @property
    def good(self) -> int:
        return sum(n for level, n in self.levels.items() if level >= 3)

    @property
    def rate(self) -> Decimal | None:
        return percent(self.good, self.total)

    @property
    def contact_rate(self) -> Decimal | None:
        return percent(self.contacted_in_time, self.followups)

    @property
    def rectify_rate(self) -> Decimal | None:
        return percent(self.rectified_in_time, self.followups)

    def reasons_text(self) -> str:
        ordered = sorted(self.reasons.items(), key=lambda item: (-item[1], item[0]))
        return " ".join(f"{code}:{n}" for code, n in ordered)


@dataclass
class HallReport:
    total: Tally
    windows: list[Tally]


@dataclass
class Report:
    first: date | None
    last: date | None
    timezone: str
    halls: list[HallReport]
    daily: list[tuple[date, int, int]]  # (day, ratings, good)

    @property
    def reasons(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for hall in self.halls:
            out.update(hall.total.reasons)
        return out


def _where(column: str, first: date | None, last: date | None, hall: str | None,
           store: Store) -> tuple[str, list[Any]]:
    clauses, args = [], []
    if first is not None:
        clauses.append(f"{column} >= ?")
        args.append(store.db.day(first))
    if last is not None:
        clauses.append(f"{column} <= ?")
        args.append(store.db.day(last))
    if hall is not None:
        clauses.append("hall_id = ?")
        args.append(hall)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


def build_report(store: Store, first: date | None = None, last: date | None = None,
                 hall: str | None = None) -> Report:
    db = store.db
    windows: dict[tuple[str, str], Tally] = {}

    def tally(hall_id: str, window_id: str) -> Tally:
        return windows.setdefault((hall_id, window_id), Tally(hall_id, window_id))

    where, args = _where("local_day", first, last, hall, store)
    for hall_id, window_id, level, reason, spontaneous, n in db.execute(
            "SELECT hall_id, window_id, level, reason, spontaneous, SUM(n) FROM daily_tally"
            f"{where} GROUP BY hall_id, window_id, level, reason, spontaneous", args):
        t = tally(hall_id, window_id)
        n = int(n)
        t.levels[int(level)] += n
        if int(level) <= 2:
            t.reasons[reason or NO_REASON] += n
        if spontaneous:
            t.spontaneous += n
    for hall_id, window_id, n in db.execute(
            f"SELECT hall_id, window_id, COUNT(*) FROM expired_prompts{where} "
            "GROUP BY hall_id, window_id", args):
        tally(hall_id, window_id).expired += int(n)
    complex_case = "complex" if db.dialect == POSTGRESQL else "complex = 1"
    for hall_id, window_id, n, contacted, rectified in db.execute(
            "SELECT hall_id, window_id, COUNT(*), "
            "SUM(CASE WHEN contacted_day IS NOT NULL AND contacted_day <= contact_due "
            "THEN 1 ELSE 0 END), "
            "SUM(CASE WHEN rectified_day IS NOT NULL AND rectified_day <= "
            f"(CASE WHEN {complex_case} THEN complex_due ELSE rectify_due END) "
            f"THEN 1 ELSE 0 END) FROM followups{where} GROUP BY hall_id, window_id", args):
        t = tally(hall_id, window_id)
        t.followups += int(n)
        t.contacted_in_time += int(contacted or 0)
        t.rectified_in_time += int(rectified or 0)
    daily = [(as_day(day), int(n), int(good or 0)) for day, n, good in db.execute(
        "SELECT local_day, SUM(n), SUM(CASE WHEN level >= 3 THEN n ELSE 0 END) "
        f"FROM daily_tally{where} GROUP BY local_day ORDER BY local_day", args)]
    names = store.window_names()
    halls: dict[str, list[Tally]] = {}
    for key, t in sorted(windows.items()):
        t.window_name = names.get(key, "")
        halls.setdefault(key[0], []).append(t)
    out = []
    for hall_id, tallies in halls.items():
        total = Tally(hall_id, "")
        for t in tallies:
            total.merge(t)
        out.append(HallReport(total, rank(tallies)))
    return Report(first, last, store.timezone, out, daily)


def rank(windows: list[Tally]) -> list[Tally]:
    """Best satisfaction first; ties share a rank (1, 2, 2, 4), ordered by more ratings,
    then window id; windows without ratings come last, unranked."""
    rated = [w for w in windows if w.rate is not None]
    unrated = [w for w in windows if w.rate is None]
    rated.sort(key=lambda w: (-(w.rate or 0), -w.total, w.window_id))
    for i, window in enumerate(rated):
        previous = rated[i - 1] if i else None
        window.rank = previous.rank if previous is not None and previous.rate == window.rate \
            else i + 1
    return rated + sorted(unrated, key=lambda w: w.window_id)


def iter_rows(report: Report) -> list[tuple[str, Tally]]:
    rows: list[tuple[str, Tally]] = []
    for hall in report.halls:
        rows.append(("hall", hall.total))
        rows += [("window", w) for w in hall.windows]
    return rows
