"""`hcp-platform report --store URL [--from D --to D --hall H --format table|csv|html
--output F]`: the analysis of docs/report.md, computed in the database."""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path

from city_platform.report import build_report
from city_platform.report_html import to_html
from city_platform.report_text import to_csv, to_table
from city_platform.store import Store, StoreError


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="hcp-platform report",
        description="Ratings per hall and window for a date range (local dates of the "
                    "store's [store] timezone), from the platform's store.")
    parser.add_argument("--store", required=True, metavar="URL",
                        help="sqlite:////path/ratings.db or postgresql://user@host/db")
    parser.add_argument("--from", dest="first", type=_day, metavar="YYYY-MM-DD")
    parser.add_argument("--to", dest="last", type=_day, metavar="YYYY-MM-DD")
    parser.add_argument("--hall", help="only this hall")
    parser.add_argument("--format", choices=("table", "csv", "html"), default="table")
    parser.add_argument("--output", metavar="FILE", help="write here instead of stdout")
    args = parser.parse_args(argv)
    if args.first and args.last and args.first > args.last:
        parser.error("--from is after --to")
    try:
        store = Store.open(args.store, read_only=True)
    except StoreError as e:
        print(f"hcp-platform report: {e}", file=sys.stderr)
        return 1
    try:
        report = build_report(store, args.first, args.last, args.hall)
    except StoreError as e:
        print(f"hcp-platform report: {e}", file=sys.stderr)
        return 1
    finally:
        store.close()
    text = {"csv": to_csv, "html": to_html, "table": to_table}[args.format](report)
    if args.output:
        try:
            # newline="" keeps the CSV's CRLF as written (Excel's own line ends).
            Path(args.output).write_text(text, encoding="utf-8", newline="")
        except OSError as e:
            print(f"hcp-platform report: cannot write {args.output}: {e.strerror}",
                  file=sys.stderr)
            return 1
    else:
        sys.stdout.write(text)
    return 0
