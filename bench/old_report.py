"""The report as `hcp-bridge report` computed it before `hcp-platform report`: every
record of the range read into Python and counted there. Kept only as the baseline of the
report benchmark (bench/cityplatform.py), which measures it beside the SQL roll-up in the
same run; the product's report is city_platform/report.py."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sqlite3
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta, tzinfo
from decimal import Decimal
from pathlib import Path
from typing import Any

from broker_bridge.profile import ID_FIELD, SATISFACTION, parse_gov_time
from broker_bridge.satisfaction import GOOD_LEVELS, format_rate, percent, satisfaction_rate
from broker_bridge.timezones import DEFAULT_TIMEZONE, UnknownTimezone, load_timezone
from common.rating import aware_time

LEVELS = (5, 4, 3, 2, 1)
NO_REASON = "none"
CSV_COLUMNS = ("scope", "hall_id", "window_id", "rank", "ratings", "level_5", "level_4",
               "level_3", "level_2", "level_1", "good", "bad", "satisfaction_pct",
               "spontaneous", "spontaneous_pct", "expired_prompts", "bad_reasons")


class ReportError(Exception):
    """The store cannot be read (missing, not a platform store)."""


@dataclass(frozen=True, slots=True)
class StoredRating:
    """What the report needs from one stored record, generic or gov-shaped."""

    device_id: str
    hall_id: str
    window_id: str
    level: int
    reason: str | None
    spontaneous: bool
    day: date  # local date of rated_at


@dataclass
class Tally:
    """Counts for one window, or for a whole hall."""

    hall_id: str
    window_id: str  # "" for a hall's total
    levels: Counter[int] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)  # of the bad ratings
    spontaneous: int = 0
    expired: int = 0
    rank: int | None = None

    def add(self, rating: StoredRating) -> None:
        self.levels[rating.level] += 1
        if rating.level not in GOOD_LEVELS:
            self.reasons[rating.reason or NO_REASON] += 1
        self.spontaneous += rating.spontaneous

    def merge(self, other: Tally) -> None:
        self.levels.update(other.levels)
        self.reasons.update(other.reasons)
        self.spontaneous += other.spontaneous
        self.expired += other.expired

    @property
    def total(self) -> int:
        return sum(self.levels.values())

    @property
    def good(self) -> int:
        return sum(n for level, n in self.levels.items() if level in GOOD_LEVELS)

    @property
    def rate(self) -> Decimal | None:
        return satisfaction_rate(self.good, self.total)

    @property
    def spontaneous_pct(self) -> Decimal | None:
        return percent(self.spontaneous, self.total)

    def reasons_text(self) -> str:
        """"R02:3 R01:1 none:1": most frequent first, then by code."""
        ordered = sorted(self.reasons.items(), key=lambda item: (-item[1], item[0]))
        return " ".join(f"{code}:{n}" for code, n in ordered)


@dataclass
class HallReport:
    total: Tally
    windows: list[Tally]  # ranked: best satisfaction first


@dataclass
class Report:
    first: date | None
    last: date | None
    timezone: str
    halls: list[HallReport]


# Reading the store -------------------------------------------------------------------

@dataclass
class StoreContents:
    ratings: list[StoredRating]
    expired: Counter[str]                     # expired prompts per device id
    windows: dict[str, tuple[str, str]]       # device id -> (hall, window), latest rating


def read_store(db: Path, tz: tzinfo, first: date | None, last: date | None) -> StoreContents:
    """Ratings whose local date is in [first, last], expired prompts per device in that
    range, and the window of each device that has them."""
    if not db.is_file():
        raise ReportError(f"{db}: no such file")
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    except sqlite3.Error as e:
        raise ReportError(f"{db}: {e}") from None
    try:
        tables = {row[0] for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "ratings" not in tables:
            raise ReportError(f"{db}: not a platform store (no ratings table)")
        # The stored rated_at carries its own offset (or is local, gov-shaped): select a
        # day more on each side, then decide by the local date.
        where, args = _date_filter("rated_at", first, last)
        ratings = [r for r in (_stored(text, tz) for (text,) in conn.execute(
            f"SELECT record FROM ratings{where}", args)) if r is not None
            and _in_range(r.day, first, last)]
        expired: Counter[str] = Counter()
        windows: dict[str, tuple[str, str]] = {}
        if "expired_prompts" in tables:
            where, args = _date_filter("expired_at", first, last)
            for device_id, expired_at in conn.execute(
                    f"SELECT device_id, expired_at FROM expired_prompts{where}", args):
                moment = parse_gov_time(expired_at)
                if moment is not None and _in_range(moment.date(), first, last):
                    expired[device_id] += 1
            # A device's window, from its latest rating of any date.
            for (text,) in conn.execute(
                    "SELECT record FROM ratings WHERE rowid IN (SELECT MAX(rowid) FROM "
                    "ratings GROUP BY device_id)"):
                latest = _stored(text, tz)
                if latest is not None and latest.device_id in expired:
                    windows[latest.device_id] = (latest.hall_id, latest.window_id)
        return StoreContents(ratings, expired, windows)
    except sqlite3.Error as e:
        raise ReportError(f"{db}: {e}") from None
    finally:
        conn.close()


def _date_filter(column: str, first: date | None, last: date | None
                 ) -> tuple[str, list[str]]:
    clauses, args = [], []
    if first is not None:
        clauses.append(f"substr({column}, 1, 10) >= ?")
        args.append(str(first - timedelta(days=1)))
    if last is not None:
        clauses.append(f"substr({column}, 1, 10) <= ?")
        args.append(str(last + timedelta(days=1)))
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args


def _in_range(day: date, first: date | None, last: date | None) -> bool:
    return (first is None or day >= first) and (last is None or day <= last)


def _stored(text: str, tz: tzinfo) -> StoredRating | None:
    try:
        record = json.loads(text)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    if ID_FIELD in record and "schema" not in record:
        return _from_gov(record)
    try:
        # A store written before rated_at was bounded may hold year 1 or 9999, which
        # overflows in astimezone(): such a rating is left out, not a crash.
        moment = aware_time(record["rated_at"])
        if moment is None:
            return None
        rated = moment.astimezone(tz)
        return StoredRating(record["device_id"], record["hall_id"], record["window_id"],
                            int(record["level"]), record.get("reason"),
                            record["trigger"] == "spontaneous", rated.date())
    except (KeyError, TypeError, ValueError, OverflowError):
        return None


def _from_gov(record: dict[str, Any]) -> StoredRating | None:
    """A record the reference platform stored in the gov profile's default names: its
    assessTime is already local time, its satisfaction in the default direction."""
    moment = parse_gov_time(record.get("assessTime"))
    satisfaction = record.get("satisfaction")
    if moment is None or satisfaction not in SATISFACTION:
        return None
    detail = record.get("evalDetail") or ""
    device = str(record.get("deviceCode") or "")
    return StoredRating(device, str(record.get("hallCode") or "?"),
                        str(record.get("windowCode") or device), int(satisfaction),
                        detail.split(",")[0] or None, not record.get("projectNo"),
                        moment.date())


# Tallying ------------------------------------------------------------------------------

UNKNOWN_HALL = "?"


def build_report(store: StoreContents, first: date | None, last: date | None,
                 timezone: str, hall: str | None = None) -> Report:
    windows: dict[tuple[str, str], Tally] = {}
    window_of_device = dict(store.windows)
    for rating in store.ratings:
        window_of_device[rating.device_id] = (rating.hall_id, rating.window_id)
        if hall is not None and rating.hall_id != hall:
            continue
        key = (rating.hall_id, rating.window_id)
        windows.setdefault(key, Tally(*key)).add(rating)
    for device_id, n in store.expired.items():
        # A device that never had a rating stored: its hall is unknown ("?").
        key = window_of_device.get(device_id, (UNKNOWN_HALL, device_id))
        if hall is None or key[0] == hall:
            windows.setdefault(key, Tally(*key)).expired += n
    halls: dict[str, list[Tally]] = {}
    for (hall_id, _), tally in sorted(windows.items()):
        halls.setdefault(hall_id, []).append(tally)
    out = []
    for hall_id, tallies in halls.items():
        total = Tally(hall_id, "")
        for tally in tallies:
            total.merge(tally)
        out.append(HallReport(total, rank(tallies)))
    return Report(first, last, timezone, out)


def rank(windows: list[Tally]) -> list[Tally]:
    """Best satisfaction first; ties share a rank (1, 2, 2, 4) and are ordered by more
    ratings, then window id; windows without ratings come last, unranked."""
    rated = [w for w in windows if w.rate is not None]
    unrated = [w for w in windows if w.rate is None]
    rated.sort(key=lambda w: (-(w.rate or 0), -w.total, w.window_id))
    for i, window in enumerate(rated):
        previous = rated[i - 1] if i else None
        window.rank = previous.rank if previous is not None and previous.rate == window.rate \
            else i + 1
    return rated + sorted(unrated, key=lambda w: w.window_id)


# Output ------------------------------------------------------------------------------

def to_csv(report: Report) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for scope, tally in iter_rows(report):
        writer.writerow(_csv_row(scope, tally))
    return buffer.getvalue()


def iter_rows(report: Report) -> Iterator[tuple[str, Tally]]:
    """Every (scope, tally) in output order: each hall's total, then its windows."""
    for hall in report.halls:
        yield "hall", hall.total
        for window in hall.windows:
            yield "window", window


def _csv_row(scope: str, t: Tally) -> list[Any]:
    return [scope, t.hall_id, t.window_id, "" if t.rank is None else t.rank, t.total,
            *(t.levels.get(level, 0) for level in LEVELS), t.good, t.total - t.good,
            "" if t.rate is None else f"{t.rate:.1f}", t.spontaneous,
            "" if t.spontaneous_pct is None else f"{t.spontaneous_pct:.1f}", t.expired,
            t.reasons_text()]


def to_table(report: Report) -> str:
    span = (f"{report.first or 'first'} … {report.last or 'last'}")
    lines = [f"好差评 ratings {span} ({report.timezone})",
             "satisfaction = levels 3-5 / all ratings, % half-up to 0.1; expired prompts "
             "are not ratings", ""]
    if not report.halls:
        lines.append("no ratings in this range")
    header = (f"{'rank':>4}  {'window':<12} {'ratings':>7} {'5':>5} {'4':>5} {'3':>5} "
              f"{'2':>5} {'1':>5} {'satisf%':>7} {'spont%':>6} {'expired':>7}  bad reasons")
    for hall in report.halls:
        t = hall.total
        lines.append(f"hall {t.hall_id}: {t.total} ratings, satisfaction "
                     f"{format_rate(t.rate)} %, spontaneous {format_rate(t.spontaneous_pct)} %"
                     f", expired prompts {t.expired}")
        lines.append(header)
        for w in hall.windows:
            lines.append(
                f"{'—' if w.rank is None else w.rank:>4}  {w.window_id:<12} {w.total:>7} "
                + " ".join(f"{w.levels.get(level, 0):>5}" for level in LEVELS)
                + f" {format_rate(w.rate):>7} {format_rate(w.spontaneous_pct):>6} "
                  f"{w.expired:>7}  {w.reasons_text()}".rstrip())
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


# Command line ------------------------------------------------------------------------

def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="hcp-bridge report",
        description="DEPRECATED: use hcp-platform report. Ratings per hall and window "
                    "for a date range, from the platform's SQLite store.")
    parser.add_argument("--db", required=True, metavar="FILE",
                        help="the platform's SQLite file (hcp-sim platform --db)")
    parser.add_argument("--from", dest="first", type=_day, metavar="YYYY-MM-DD",
                        help="first day (local date; default: the earliest)")
    parser.add_argument("--to", dest="last", type=_day, metavar="YYYY-MM-DD",
                        help="last day, inclusive (default: the latest)")
    parser.add_argument("--hall", help="only this hall")
    parser.add_argument("--timezone", default=DEFAULT_TIMEZONE,
                        help=f"for local dates (default {DEFAULT_TIMEZONE})")
    parser.add_argument("--format", choices=("table", "csv"), default="table")
    parser.add_argument("--output", metavar="FILE", help="write here instead of stdout")
    args = parser.parse_args(argv)
    if args.first and args.last and args.first > args.last:
        parser.error("--from is after --to")
    print("hcp-bridge report is deprecated: use hcp-platform report --store "
          f"sqlite:///{Path(args.db).resolve()} (docs/report.md)", file=sys.stderr)
    try:
        tz = load_timezone(args.timezone)
        store = read_store(Path(args.db), tz, args.first, args.last)
    except (UnknownTimezone, ReportError) as e:
        print(f"hcp-bridge report: {e}", file=sys.stderr)
        return 1
    report = build_report(store, args.first, args.last, args.timezone, args.hall)
    text = to_csv(report) if args.format == "csv" else to_table(report)
    if args.output:
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as e:
            print(f"hcp-bridge report: cannot write {args.output}: {e.strerror}",
                  file=sys.stderr)
            return 1
    else:
        sys.stdout.write(text)
    return 0

