"""`hcp-sim fleet`: many virtual evaluators in one process, for load and soak tests of the
broker and the bridge. Each is the real daemon with its own outbox (docs/fleet.md)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from simulator.fleet_run import Fleet, FleetOptions, FleetResult
from simulator.fleet_stats import Progress
from simulator.fleet_workers import run_worker, run_workers
from simulator.monitor import broker_address


def _positive(kind: type[int] | type[float]) -> Callable[[str], int | float]:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
        return value
    return parse


def _thanks(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.1 <= value <= 60:
        raise argparse.ArgumentTypeError(f"must be 0.1..60 like [ui] thanks_s, got {text}")
    return value


def _worker(text: str) -> tuple[int, int]:
    """Internal: `K/W`, this process is worker K of W (started by the fleet's parent)."""
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
        raise argparse.ArgumentTypeError(f"expected K/W, got {text!r}")
    return int(index), int(count)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hcp-sim fleet",
        description="Run N virtual evaluators (the real daemon, each with its own outbox) "
                    "against a broker and bridge; press keys at a total rate, wait until "
                    "every rating is receipted, print a summary. Exit 0 only if every "
                    "rating was receipted (none rejected).")
    p.add_argument("--devices", type=_positive(int), default=10, metavar="N",
                   help="virtual devices (default 10)")
    p.add_argument("--rate", type=_positive(float), default=10.0, metavar="R",
                   help="ratings per second across the whole fleet (default 10)")
    p.add_argument("--count", type=_positive(int), metavar="N",
                   help="stop after N ratings in total")
    p.add_argument("--duration", type=_positive(float), metavar="S",
                   help="stop sending after S seconds (default 10 when --count is not given)")
    p.add_argument("--poisson", action="store_true",
                   help="Poisson arrivals instead of even spacing")
    p.add_argument("--broker", type=broker_address, default=("127.0.0.1", 1883),
                   metavar="HOST:PORT", help="MQTT broker (default 127.0.0.1:1883)")
    p.add_argument("--prefix", default="hcp/v1", help="topic prefix (default hcp/v1)")
    p.add_argument("--protocol", choices=["5", "3.1.1"], default="5",
                   help="the devices' [mqtt] protocol: MQTT 5 (default) or 3.1.1 (NATS)")
    p.add_argument("--username", default="", help="broker user name (all devices)")
    p.add_argument("--password-file", default="", help="file holding the broker password")
    p.add_argument("--device-prefix", default="FLEET", metavar="TEXT",
                   help="device ids are TEXT-0001, TEXT-0002, … (default FLEET)")
    p.add_argument("--region", default="000000", help="region_code of the ratings")
    p.add_argument("--hall", default="FLEET", help="hall_id of the ratings")
    p.add_argument("--data-dir", type=Path, metavar="DIR",
                   help="outboxes go to DIR/<device id> and are kept (default: a temporary "
                        "directory, removed at the end)")
    p.add_argument("--drain-timeout", type=float, default=60.0, metavar="S",
                   help="after sending, wait up to S seconds for every receipt (default 60)")
    p.add_argument("--connect-timeout", type=_positive(float), default=30.0, metavar="S",
                   help="wait up to S seconds for every device to connect (default 30)")
    p.add_argument("--resend-after", type=_positive(float), default=300.0, metavar="S",
                   help="the devices' [mqtt] resend_after_s (default 300)")
    p.add_argument("--max-inflight", type=_positive(int), default=20, metavar="N",
                   help="the devices' [mqtt] max_inflight (default 20)")
    p.add_argument("--telemetry", type=_positive(float), default=60.0, metavar="S",
                   help="the devices' [mqtt] telemetry_s (default 60)")
    p.add_argument("--thanks", type=_thanks, default=0.1, metavar="S",
                   help="the devices' [ui] thanks_s: how long a device is busy after a "
                        "rating (default 0.1)")
    p.add_argument("--workers", type=_positive(int), default=1, metavar="W",
                   help="split the fleet over W processes (one Python process keeps about "
                        "250 ratings/s; see docs/fleet.md; default 1)")
    p.add_argument("--worker", type=_worker, help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, help="seed for levels, reasons and arrivals")
    p.add_argument("--cleanup", action="store_true",
                   help="after the run, clear the devices' retained status and config at "
                        "the broker (no device_silent alerts or monitor rows left behind)")
    p.add_argument("--cleanup-only", action="store_true",
                   help="run nothing: clear the retained topics of devices 1…N of an earlier "
                        "run (same --devices, --device-prefix, --prefix, --broker)")
    p.add_argument("--json", action="store_true",
                   help="print the summary as one JSON object on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.add_argument("--log-level", default="WARNING",
                   choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                   help="log level of the devices (stderr; default WARNING)")
    return p


class ProgressLine:
    """One line on stderr, rewritten in place on a terminal, once a second otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.dirty = False

    def __call__(self, phase: str, p: Progress, rate: float, connected: int) -> None:
        line = (f"{phase:<10} connected {connected:>5}  sent {p.sent:>7}  "
                f"receipted {p.receipted:>7}  pending {p.pending:>6}  {rate:7.1f}/s")
        if self.tty:
            self.stream.write("\r\x1b[2K" + line)
            self.dirty = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def end(self) -> None:
        if self.dirty:
            self.stream.write("\n")
            self.stream.flush()
            self.dirty = False


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:g} ms"


def human_summary(result: FleetResult) -> str:
    s = result.summary()
    lat = result.latency_ms
    st = result.statuses
    lines = [
        f"devices    {s['devices']} ({s['connected']} connected in {s['connect_s']:g} s)",
        f"sent       {s['sent']} ratings in {s['send_s']:g} s: {s['rate_achieved']:g}/s "
        f"(asked {s['rate_asked']:g}/s)",
        f"receipted  {s['receipted']} (accepted {st.get('accepted', 0)}, duplicate "
        f"{st.get('duplicate', 0)}, rejected {st.get('rejected', 0)}) "
        f"after draining {s['drain_s']:g} s",
        f"pending    {s['pending']}",
        f"latency    press → receipt: p50 {_ms(lat.get('p50'))}, p90 {_ms(lat.get('p90'))}, "
        f"p99 {_ms(lat.get('p99'))}, max {_ms(lat.get('max'))}",
    ]
    if result.ignored_presses:
        lines.append(f"ignored    {result.ignored_presses} press(es) never became a rating")
    if result.carried_over:
        lines.append(f"earlier    {result.carried_over} rating(s) left by an earlier run "
                     f"were receipted")
    if result.backlog_left:
        lines.append(f"left       {result.backlog_left} rating(s) still in the outboxes")
    for error in result.device_errors[:10]:
        lines.append(f"error      {error}")
    if result.problem:
        lines.append(f"problem    {result.problem}")
    if result.interrupted:
        lines.append("interrupted")
    lines.append("result     " + ("OK: every rating receipted" if result.ok else "FAILED"))
    return "\n".join(lines)


def options_from(args: argparse.Namespace) -> FleetOptions:
    duration = args.duration
    if duration is None and args.count is None:
        duration = 10.0
    host, port = args.broker
    return FleetOptions(
        devices=args.devices, rate=args.rate, count=args.count, duration_s=duration,
        host=host, port=port, prefix=args.prefix, device_prefix=args.device_prefix,
        region_code=args.region, hall_id=args.hall, data_dir=args.data_dir,
        drain_timeout_s=max(0.0, args.drain_timeout), connect_timeout_s=args.connect_timeout,
        resend_after_s=args.resend_after, max_inflight=args.max_inflight,
        telemetry_s=args.telemetry, thanks_s=args.thanks, poisson=args.poisson,
        seed=args.seed, username=args.username, password_file=args.password_file,
        protocol=args.protocol)


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.workers > args.devices:
        p.error(f"--workers {args.workers} is more than --devices {args.devices}")
    if args.data_dir is not None:
        try:
            args.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            p.error(f"--data-dir {args.data_dir}: cannot create it: {e.strerror or e}")
    if args.password_file and not args.username:   # as [mqtt] password_file in a config
        p.error("--password-file needs --username (the broker user that password is for)")
    if args.password_file:
        try:
            Path(args.password_file).read_bytes()
        except OSError as e:
            p.error(f"--password-file {args.password_file}: cannot read it: {e.strerror or e}")
    logging.basicConfig(stream=sys.stderr, level=args.log_level,
                        format="%(levelname)s %(name)s: %(message)s")
    # SIGTERM (a benchmark's timeout, a dying parent) stops the fleet like Ctrl-C: the
    # devices stop cleanly and the summary still comes.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return _run(args, argv)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(args: argparse.Namespace, argv: list[str]) -> int:
    options = options_from(args)
    if args.worker is not None:
        return run_worker(options, *args.worker)
    # Here, not at the top: a worker process never cleans up, and the broker tools add
    # about 0.4 s to every worker's start.
    from simulator.fleet_cleanup import cleanup
    if args.cleanup_only:
        only = cleanup(options)
        print(json.dumps({"cleanup": only.summary(), "ok": only.ok}, ensure_ascii=False)
              if args.json else only.line())
        return 0 if only.ok else 1
    progress = None if args.quiet else ProgressLine(sys.stderr)
    try:
        if args.workers > 1:
            result = run_workers(options, argv, args.workers, progress)
        else:
            result = Fleet(options, on_progress=progress).run()
    finally:
        if progress is not None:
            progress.end()
    # After an interrupted run too: the devices have stopped either way.
    cleaned = cleanup(options) if args.cleanup else None
    if args.json:
        summary = result.summary()
        if cleaned is not None:
            summary["cleanup"] = cleaned.summary()
        print(json.dumps(summary, ensure_ascii=False))
    else:
        print(human_summary(result) + ("" if cleaned is None else "\n" + cleaned.line()))
    if result.interrupted:
        return 130
    return 0 if result.ok and (cleaned is None or cleaned.ok) else 1
