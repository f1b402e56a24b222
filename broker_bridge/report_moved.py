"""`hcp-bridge report` moved to `hcp-platform report`: this only says so, so that a
script calling the old command fails with the way forward rather than "unknown command"."""

from __future__ import annotations

import sys

from common.service import EX_USAGE


def main(argv: list[str]) -> int:
    print("hcp-bridge report: moved to the city platform: hcp-platform report --store URL "
          "[--from D --to D --hall H --format table|csv|html] (docs/report.md)",
          file=sys.stderr)
    return EX_USAGE
