"""The report as a terminal table or as CSV that Excel opens correctly (UTF-8 with a
byte-order mark: without it Excel reads the Chinese names as mojibake)."""

from __future__ import annotations

import csv
import io
from typing import Any

from city_platform.report import LEVELS, Report, Tally, fmt, iter_rows, percent
from common.text import display_text

CSV_COLUMNS = ("scope", "hall_id", "window_id", "window_name", "rank", "ratings", "level_5",
               "level_4", "level_3", "level_2", "level_1", "good", "bad", "satisfaction_pct",
               "spontaneous", "spontaneous_pct", "expired_prompts", "bad_reasons",
               "followups", "contacted_in_time", "contact_rate_pct", "rectified_in_time",
               "rectify_rate_pct")
BOM = "\ufeff"
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _pct(value: Any) -> str:
    return "" if value is None else f"{value:.1f}"


def _text_cell(text: str) -> str:
    """A device's text as a cell Excel shows as text: one that starts like a formula
    (= + - @, or a tab or CR before one) gets a leading ', which Excel does not show
    (CSV injection: a hall id or window name could otherwise run as a formula)."""
    return "'" + text if text.startswith(_FORMULA_START) else text


def _csv_row(scope: str, t: Tally) -> list[Any]:
    return [scope, _text_cell(t.hall_id), _text_cell(t.window_id),
            _text_cell(t.window_name), "" if t.rank is None else t.rank,
            t.total, *(t.levels.get(level, 0) for level in LEVELS), t.good, t.total - t.good,
            _pct(t.rate), t.spontaneous, _pct(percent(t.spontaneous, t.total)), t.expired,
            _text_cell(t.reasons_text()), t.followups, t.contacted_in_time,
            _pct(t.contact_rate), t.rectified_in_time, _pct(t.rectify_rate)]


def to_csv(report: Report) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for scope, tally in iter_rows(report):
        writer.writerow(_csv_row(scope, tally))
    return BOM + buffer.getvalue()


def to_table(report: Report) -> str:
    span = f"{report.first or 'first'} … {report.last or 'last'}"
    lines = [f"好差评 ratings {span} ({report.timezone})",
             "satisfaction = levels 3-5 / all ratings; 回访率/整改率 = follow-ups contacted/"
             "rectified by their deadline / all follow-ups; % half-up to 0.1", ""]
    if not report.halls:
        lines.append("no ratings in this range")
    header = (f"{'rank':>4}  {'window':<10} {'name':<16} {'ratings':>7} "
              + " ".join(f"{level:>5}" for level in LEVELS)
              + f" {'satisf%':>7} {'expired':>7} {'回访%':>6} {'整改%':>6}  bad reasons")
    # Names and ids from devices go to a terminal: shown as text, never as escape
    # sequences or line breaks (common.text).
    for hall in report.halls:
        t = hall.total
        lines.append(f"hall {display_text(t.hall_id)}: {t.total} ratings, satisfaction "
                     f"{fmt(t.rate)} %, "
                     f"expired prompts {t.expired}, follow-ups {t.followups} (回访率 "
                     f"{fmt(t.contact_rate)} %, 整改率 {fmt(t.rectify_rate)} %)")
        lines.append(header)
        for w in hall.windows:
            lines.append(
                f"{'—' if w.rank is None else w.rank:>4}  {display_text(w.window_id):<10} "
                f"{display_text(w.window_name or '—')[:16]:<16} {w.total:>7} "
                + " ".join(f"{w.levels.get(level, 0):>5}" for level in LEVELS)
                + f" {fmt(w.rate):>7} {w.expired:>7} {fmt(w.contact_rate):>7} "
                  f"{fmt(w.rectify_rate):>7}  {display_text(w.reasons_text())}".rstrip())
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
