"""Start-up shared by every command of the product: exit codes, logging, loading a config
with every problem on its own line, and the systemd notify dance around a service loop."""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import os
import sys
from collections.abc import Callable
from typing import Protocol, TypeVar

from common import __version__, sdnotify
from common.configschema import ConfigError

# sysexits.h, as systemd units and technicians read them.
EX_OK = 0
EX_USAGE = 2          # as argparse exits on a bad command line (not sysexits' 64)
EX_UNAVAILABLE = 69   # hardware or a peer missing: systemd retries slowly
EX_SOFTWARE = 70
EX_CANTCREAT = 73     # a data directory cannot be created, opened or locked
EX_CONFIG = 78        # a bad config: units say RestartPreventExitStatus=78, so no loop

T = TypeVar("T")


def stderr_is_journal() -> bool:
    """True when stderr is connected to journald (systemd sets JOURNAL_STREAM to the
    device and inode of the stream it gave us): the journal stamps lines itself."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    if not stream:
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return stream == f"{st.st_dev}:{st.st_ino}"


def setup_logging(level: str = "INFO") -> None:
    """Log to stderr; with a timestamp unless journald already adds one."""
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not stderr_is_journal():
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(stream=sys.stderr, level=level.upper(), format=fmt, force=True)


def load_config(loader: Callable[[str], T], path: str, prog: str = "") -> T | int:
    """`loader(path)`, or EX_CONFIG after printing one line per problem (no traceback)."""
    try:
        return loader(path)
    except ConfigError as e:
        prefix = f"{prog}: " if prog else ""
        for problem in e.problems:
            print(f"{prefix}{problem}", file=sys.stderr)
        return EX_CONFIG


def config_from_command_line(prog: str, description: str, file_help: str,
                             loader: Callable[[str], T], argv: list[str]) -> T | int:
    """A service's command line (`--config FILE`), its config loaded, or EX_CONFIG after
    one line per problem (argparse itself exits 2 on a bad command line)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", required=True, metavar="FILE", help=file_help)
    args = parser.parse_args(argv)
    return load_config(loader, args.config)


# Tracked allocations between two collections of the youngest generation (CPython: 700).
YOUNG_COLLECTION_EVERY = 10_000


def settle_heap(young_every: int = YOUNG_COLLECTION_EVERY) -> None:
    """For a service about to handle a stream of short-lived records, once start-up is done.

    What start-up made (modules, classes, the config: about 100,000 objects in the bridge)
    lives as long as the process, yet CPython's collector walks all of it at every full
    collection, and the youngest generation is collected every 700 allocations. A bridge
    draining a queue spent about a tenth of its CPU there (bench/findings.md). `freeze()`
    moves what exists now out of the collector's sight (it is never freed, as it never
    would be), and the youngest generation is collected every `young_every` allocations.
    Records die by reference counting long before that; what a cycle holds is still
    collected, a little later."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(young_every, 10, 10)


class Service(Protocol):
    """A long-running loop that stops soon after `request_stop()` from a signal handler."""

    def request_stop(self) -> None: ...

    def run(self, on_tick: Callable[[], None], tick_s: float) -> None: ...


def run_service(service: Service, ready_status: str = "") -> int:
    """Run `service` under systemd's eyes: SIGTERM/SIGINT stop it, READY=1 once started,
    WATCHDOG=1 from its loop's tick (a hung loop stops the pings)."""
    sdnotify.stop_on_signals(service.request_stop)
    pinger = sdnotify.WatchdogPinger()
    sdnotify.notify("READY=1" + (f"\nSTATUS={ready_status}" if ready_status else ""))
    service.run(pinger.tick, min(1.0, pinger.interval or 1.0))
    return EX_OK


# name -> (module with `main(argv: list[str]) -> int`, one line of help)
CommandTable = dict[str, tuple[str, str]]


def run_commands(prog: str, commands: CommandTable, argv: list[str] | None = None) -> int:
    """A program made of subcommands (`hcp-bridge run …`, `hcp-sim device …`): help,
    `--version`, a clear word for an unknown command, and a quiet exit when the reader
    of our output goes away (`… | head -3`)."""
    args = sys.argv[1:] if argv is None else argv
    usage = "\n".join([f"usage: {prog} COMMAND [options]", "", "commands:"]
                      + [f"  {name:<9} {doc}" for name, (_, doc) in commands.items()])
    if not args or args[0] in ("-h", "--help"):
        print(usage, file=sys.stdout if args else sys.stderr)
        return EX_OK if args else EX_USAGE
    if args[0] == "--version":
        print(f"{prog} {__version__}")
        return EX_OK
    name, rest = args[0], args[1:]
    if name not in commands:
        print(f"{prog}: unknown command {name!r}\n\n{usage}", file=sys.stderr)
        return EX_USAGE
    module = importlib.import_module(commands[name][0])
    try:
        result: int = module.main(rest)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader left; Python would print a traceback while flushing at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EX_OK
    return result
