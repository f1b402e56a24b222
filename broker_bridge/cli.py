"""`hcp-bridge`: the bridge's command line. Each subcommand lives in its own module
with `main(argv: list[str]) -> int`; add one by adding a line to COMMANDS."""

from __future__ import annotations

import sys

from common.service import run_commands

COMMANDS = {
    "run": ("broker_bridge.run", "forward ratings from the broker to the platform"),
    "leave": ("broker_bridge.leave", "end this bridge's broker session (leaving a group)"),
    "watch": ("broker_bridge.watch.main", "raise early-warning alerts on {prefix}/alerts"),
    "forget": ("broker_bridge.forget", "forget decommissioned devices (retained topics, watcher)"),
    "report": ("broker_bridge.report_moved", "moved: use hcp-platform report"),
    "expired": ("broker_bridge.expired", "report expired prompts to the platform (gov profile)"),
}


def main(argv: list[str] | None = None) -> int:
    return run_commands("hcp-bridge", COMMANDS, argv)

if __name__ == "__main__":
    sys.exit(main())
