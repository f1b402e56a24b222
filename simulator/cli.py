"""`hcp-sim`: the technicians' tools. Each subcommand lives in its own module."""

from __future__ import annotations

import sys

from common.service import run_commands

COMMANDS = {
    "device": ("simulator.device_sim", "interactive simulator of one evaluator in the terminal"),
    "window": ("simulator.window", "send window-system frames to a serial port, print replies"),
    "fleet": ("simulator.fleet", "many virtual devices for load tests of broker + bridge"),
    "monitor": ("simulator.monitor", "live view of a hall from the broker"),
    "platform": ("simulator.platform", "reference aggregation platform (development aid)"),
    "demo": ("simulator.demo", "the one-command demo: broker, platform, bridge, device"),
    "gallery": ("simulator.gallery", "render every screen to PNG for the docs"),
    "clips": ("drivers.clips.__main__", "the voice clips: --write, --check, --list, --play"),
}


def main(argv: list[str] | None = None) -> int:
    try:
        return run_commands("hcp-sim", COMMANDS, argv)
    except KeyboardInterrupt:
        # A Ctrl-C the command does not catch itself (while Python imports it, or while
        # `hcp-sim device` waits for its daemon): its own `finally` has stopped what it
        # started; a traceback here would only hide that.
        args = sys.argv[1:] if argv is None else argv
        print(f"hcp-sim{' ' + args[0] if args else ''}: interrupted", file=sys.stderr)
        return 130

if __name__ == "__main__":
    sys.exit(main())
