"""`hcp-platform`: the city platform's command line. Each subcommand lives in its own
module with `main(argv: list[str]) -> int`."""

from __future__ import annotations

from common.service import CommandTable, run_commands

COMMANDS: CommandTable = {
    "run": ("city_platform.run", "HTTP ingest, store, follow-ups, dashboard, upstream"),
    "report": ("city_platform.report_cli", "ratings per hall and window (table, CSV, HTML)"),
    "followups": ("city_platform.followups_cli", "list follow-ups of bad ratings, move one"),
}


def main(argv: list[str] | None = None) -> int:
    return run_commands("hcp-platform", COMMANDS, argv)
