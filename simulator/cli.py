"""`hcp-sim`: the technicians' tools. Each subcommand lives in its own module."""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "device": ("simulator.device_sim", "interactive simulator of one evaluator in the terminal"),
    "window": ("simulator.window", "send window-system frames to a serial port, print replies"),
    "fleet": ("simulator.fleet", "many virtual devices for load tests of broker + bridge"),
    "monitor": ("simulator.monitor", "live view of a hall from the broker"),
    "platform": ("simulator.platform", "reference aggregation platform (development aid)"),
    "demo": ("simulator.demo", "the one-command demo: broker, platform, bridge, device"),
    "gallery": ("simulator.gallery", "render every screen to PNG for the docs"),
}


def usage() -> str:
    lines = ["usage: hcp-sim COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<9} {doc}" for name, (_, doc) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"hcp-sim: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module_name = COMMANDS[name][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name:
            raise
        print(f"hcp-sim {name}: not yet implemented", file=sys.stderr)
        return 2
    result: int = module.main(rest)
    return result


if __name__ == "__main__":
    sys.exit(main())
