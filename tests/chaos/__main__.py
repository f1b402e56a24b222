"""`python -m tests.chaos --minutes 10 [--seed N] [--json FILE]`: one chaos run with its
report on stdout; exit status 1 on any loss, duplicate, phantom or crash."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from tests.chaos.faults import KINDS
from tests.chaos.netns import sweep
from tests.chaos.runner import ChaosOptions, ChaosRun


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    p.add_argument("--minutes", type=float, default=10.0, help="how long faults run")
    p.add_argument("--devices", type=int, default=3)
    p.add_argument("--seed", type=int, default=None, help="repeat a run's random choices")
    p.add_argument("--fault-gap", type=float, default=3.0, metavar="S",
                   help="mean seconds between faults (default 3)")
    p.add_argument("--resend-after", type=float, default=5.0, metavar="S",
                   help="the devices' mqtt.resend_after_s (default 5)")
    p.add_argument("--drain-timeout", type=float, default=90.0, metavar="S")
    p.add_argument("--only", default="", help=f"comma-separated fault kinds ({', '.join(KINDS)})")
    p.add_argument("--no-disk", action="store_true", help="no tmpfs data dirs, no disk_full")
    p.add_argument("--no-netns", action="store_true",
                   help="devices on loopback, not in network namespaces: no net_* faults")
    p.add_argument("--workdir", type=Path, default=None,
                   help="where the parts keep their files and logs (default: a new temp dir)")
    p.add_argument("--json", type=Path, default=None, help="also write the report as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--sweep", action="store_true",
                   help="only remove the namespaces and veth pairs dead runs left, and exit")
    args = p.parse_args(argv)
    if args.sweep:
        for what in sweep():
            print(f"removed {what}")
        return 0
    # SIGTERM (a timeout, systemd) unwinds like Ctrl-C: the runner's finally stops the
    # daemons and removes the namespaces, veth pairs, nft tables and qdiscs it made.
    signal.signal(signal.SIGTERM, _terminate)
    kinds = tuple(k for k in args.only.split(",") if k) or KINDS
    unknown = set(kinds) - set(KINDS)
    if unknown:
        p.error(f"unknown fault kind(s): {', '.join(sorted(unknown))}")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    report = ChaosRun(ChaosOptions(
        minutes=args.minutes, devices=args.devices, seed=args.seed,
        mean_fault_gap_s=args.fault_gap, resend_after_s=args.resend_after,
        drain_timeout_s=args.drain_timeout, workdir=args.workdir, disks=not args.no_disk,
        netns=not args.no_netns,
        kinds=kinds, progress=not args.quiet)).run()
    print(report.text())
    if args.json is not None:
        args.json.write_text(report.json() + "\n", encoding="utf-8")
    return 0 if report.ok else 1


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    sys.exit(main())
