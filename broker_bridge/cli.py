"""`hcp-bridge`: the bridge's command line. Each subcommand lives in its own module
with `main(argv: list[str]) -> int`; add one by adding a line to COMMANDS."""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "run": ("broker_bridge.run", "forward ratings from the broker to the platform"),
    "leave": ("broker_bridge.leave", "end this bridge's broker session (leaving a group)"),
    "watch": ("broker_bridge.watch.main", "raise early-warning alerts on {prefix}/alerts"),
    "report": ("broker_bridge.report", "ratings per hall and window from the platform's store"),
    "expired": ("broker_bridge.expired", "report expired prompts to the platform (gov profile)"),
}


def usage() -> str:
    lines = ["usage: hcp-bridge COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<8} {doc}" for name, (_, doc) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"hcp-bridge: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    result: int = module.main(rest)
    return result


if __name__ == "__main__":
    sys.exit(main())
