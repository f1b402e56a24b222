"""`hcp-device`: the evaluator daemon's command line."""

from __future__ import annotations

import argparse
import os
import sys

from common.service import EX_CANTCREAT, EX_UNAVAILABLE, load_config, setup_logging
from device import __version__


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
    status = sub.add_parser("status", help="ask the running daemon how it is (exit 3: "
                                           "no daemon answered)")
    status.add_argument("--config", required=True, help="the running daemon's config")
    status.add_argument("--json", action="store_true", help="one JSON object")
    doctor = sub.add_parser("doctor", help="check the hardware and network the config "
                                           "names (exit 1 when a check fails)")
    doctor.add_argument("--config", required=True)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging(getattr(args, "log_level", "INFO"))
    from device.config import load_device_config
    config = load_config(load_device_config, args.config, "hcp-device")
    if isinstance(config, int):
        return config
    if args.command == "check-config":
        from device.config import data_dir_problems
        problems = data_dir_problems(config)   # what `run` would exit 73 for
        for problem in problems:
            print(f"hcp-device: {problem}", file=sys.stderr)
        if problems:
            return EX_CANTCREAT
        print(f"{args.config}: OK")
        return 0
    if args.command == "status":
        from device.status_view import status_command
        return status_command(config.device.data_dir, args.json)
    if args.command == "doctor":
        from device.doctor import doctor_command
        return doctor_command(config)

    from device.compose import build_drivers
    from device.daemon import Daemon
    from device.ports import DriverError
    try:
        drivers = build_drivers(config)
    except DriverError as e:
        print(f"hcp-device: {e}", file=sys.stderr)
        return EX_UNAVAILABLE
    from device.outbox import StorageError
    try:
        daemon = Daemon(config, drivers)
        daemon.install_signal_handlers()
        from device.control import attach_status_server
        status_server = attach_status_server(daemon)
        try:
            return daemon.run()
        finally:
            status_server.close()
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
