"""`hcp-device`: the evaluator daemon's command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from device import __version__
from device.configschema import ConfigError

EX_CONFIG = 78        # systemd: RestartPreventExitStatus=78, a bad config must not loop
EX_UNAVAILABLE = 69   # hardware missing: systemd retries slowly
EX_CANTCREAT = 73     # the data directory cannot be created, opened or locked


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hcp-device", description="好差评 window evaluator daemon")
    p.add_argument("--version", action="version", version=f"hcp-device {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the evaluator in the foreground")
    run.add_argument("--config", required=True, help="device TOML config file")
    run.add_argument("--log-level", default=os.environ.get("HCP_LOG_LEVEL", "INFO"),
                     choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("--config", required=True)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=getattr(args, "log_level", "INFO"),
                        format="%(levelname)s %(name)s: %(message)s")
    from device.config import load_device_config
    try:
        config = load_device_config(args.config)
    except ConfigError as e:
        for problem in e.problems:
            print(f"hcp-device: {problem}", file=sys.stderr)
        return EX_CONFIG
    if args.command == "check-config":
        print(f"{args.config}: OK")
        return 0

    from device.daemon import Daemon
    from drivers.errors import DriverError
    from drivers.factory import build_drivers
    try:
        drivers = build_drivers(config)
    except DriverError as e:
        print(f"hcp-device: {e}", file=sys.stderr)
        return EX_UNAVAILABLE
    from device.outbox import StorageError
    try:
        daemon = Daemon(config, drivers)
        daemon.install_signal_handlers()
        return daemon.run()
    except DriverError as e:
        print(f"hcp-device: {e}", file=sys.stderr)
        return EX_UNAVAILABLE
    except StorageError as e:
        # Only the outbox's opening gets here (later failures are shown on the screen and
        # retried by the daemon): a directory we may not write, or one in use.
        print(f"hcp-device: {args.config}: [device] data_dir: {e}", file=sys.stderr)
        return EX_CANTCREAT


if __name__ == "__main__":
    sys.exit(main())
