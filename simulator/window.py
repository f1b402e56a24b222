"""`hcp-sim window`: play the window business system on a serial port (SPEC §4).

Sends one frame and prints the evaluator's decoded replies, or (`--listen`) monitors a
port and judges every line as the evaluator would, or (`--interactive`) keeps a port
open for several frames. Exit codes: 0 ack (and rated), 1 nak/expired, 2 usage or port
error, 3 no answer in time. The frames themselves are built in simulator/window_request.py.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from simulator.window_request import (
    FRAME_TYPES,
    Parser,
    Request,
    UsageError,
    build_request,
    crc_mode,
    interactive_request,
)
from simulator.window_view import Output, Verdict, judge
from simulator.windowlink import LinkError, Sent, WindowLink

# judge and Verdict belong to --listen; Output to every mode; the requests are built in
# simulator/window_request.py.
__all__ = ["Output", "Request", "UsageError", "Verdict", "build_request",
           "interactive_request", "judge", "main"]

PROG = "hcp-sim window"
EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_NO_ANSWER = 0, 1, 2, 3
DEFAULT_RATED_WAIT_S = 120.0


def _error(message: str) -> None:
    print(f"{PROG}: {' '.join(message.split())}", file=sys.stderr, flush=True)


# --- the command line ---------------------------------------------------------------------

def _parser() -> Parser:
    p = Parser(
        prog=PROG, allow_abbrev=False,
        description="Play the window business system: send one frame to the evaluator's "
                    "serial port and print the decoded replies.",
        epilog="exit status: 0 ack (and rated when waited for), 1 nak or expired, "
               "2 usage or port error, 3 no answer in time. Types: "
               + ", ".join(FRAME_TYPES) + ". See docs/window-tool.md.")
    p.add_argument("--port", required=True,
                   help="device path, pty, socket://HOST:PORT or another pyserial URL")
    p.add_argument("--baud", type=int, default=115200, help="baud rate (default 115200)")
    p.add_argument("--seq", type=int, help="seq of the frame (default: milliseconds of the "
                   "wall clock mod 2^31, so repeated runs do not reuse one)")
    p.add_argument("--timeout", type=float, default=2.0,
                   help="seconds to wait for the ack/nak (default 2)")
    wait = p.add_mutually_exclusive_group()
    wait.add_argument("--wait-rated", action="store_true",
                      help=f"case_completed: after the ack, wait up to "
                           f"{DEFAULT_RATED_WAIT_S:g} s for its rated/expired frame")
    wait.add_argument("--wait", type=float, metavar="SECONDS",
                      help="after the ack, keep printing frames this long (case_completed: "
                           "until its rated/expired arrives)")
    crc = p.add_mutually_exclusive_group()
    crc.add_argument("--bad-crc", action="store_true",
                     help="send a deliberately wrong CRC (the evaluator must not answer)")
    crc.add_argument("--no-crc", action="store_true",
                     help="send bare JSON; with --listen, accept bare JSON "
                          "(like require_crc = false)")
    p.add_argument("--add-crc", action="store_true",
                   help="raw: append the correct *CRC to the given line")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object per frame instead of human-readable lines")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--listen", action="store_true",
                      help="monitor: decode and judge every line arriving on the port")
    mode.add_argument("--interactive", action="store_true",
                      help="a prompt to send several frames on one open port")
    p.add_argument("--duration", type=float, metavar="SECONDS",
                   help="--listen: stop after this long (default: until Ctrl-C)")
    p.add_argument("--count", type=int, metavar="N",
                   help="--listen: stop after N lines")
    p.add_argument("type", nargs="?", metavar="TYPE", help="frame type, or raw")
    p.add_argument("fields", nargs="*", metavar="field=value",
                   help="frame fields (name:=JSON for a non-string value); for raw, the line")
    return p


def main(argv: list[str]) -> int:
    try:
        args = _parser().parse_intermixed_args(argv)
        _check_args(args)
    except UsageError as e:
        _error(f"{e} (see --help)")
        return EXIT_USAGE
    except SystemExit as e:  # --help
        return e.code if isinstance(e.code, int) else EXIT_OK
    out = Output(args.json)
    if args.listen:
        return _listen(args, out)
    if args.interactive:
        return _interactive(args, out)
    return _send_one(args, out)


def _check_args(args: argparse.Namespace) -> None:
    if args.listen or args.interactive:
        if args.type is not None:
            raise UsageError("--listen/--interactive take no frame type")
    elif args.type is None:
        raise UsageError("missing frame type (one of: " + ", ".join(FRAME_TYPES) + ")")
    if not (math.isfinite(args.timeout) and args.timeout > 0):
        raise UsageError(f"--timeout must be a number of seconds more than 0, "
                         f"got {args.timeout:g}")
    if args.wait is not None and not (math.isfinite(args.wait) and args.wait >= 0):
        raise UsageError(f"--wait must be a number of seconds, 0 or more, got {args.wait:g}")
    if args.duration is not None and not (math.isfinite(args.duration)
                                          and args.duration > 0):
        raise UsageError(f"--duration must be a number of seconds more than 0, "
                         f"got {args.duration:g}")
    if (args.duration is not None or args.count is not None) and not args.listen:
        raise UsageError("--duration/--count only apply to --listen")
    if args.count is not None and args.count < 1:
        raise UsageError("--count must be at least 1")
    if args.baud <= 0:
        raise UsageError("--baud must be a positive number")



def _open(args: argparse.Namespace, keep_stale: bool = False) -> WindowLink | None:
    try:
        return WindowLink(args.port, args.baud, require_crc=not (args.listen and args.no_crc),
                          keep_stale=keep_stale)
    except LinkError as e:
        _error(str(e))
        return None


def _send_one(args: argparse.Namespace, out: Output) -> int:
    try:
        request = build_request(args.type, args.fields, args.seq,
                                crc_mode(args.bad_crc, args.no_crc), args.add_crc)
        if args.wait_rated and request.case_id is None:
            raise UsageError("--wait-rated only applies to case_completed")
    except UsageError as e:
        _error(f"{e} (see --help)")
        return EXIT_USAGE
    wait_s = args.wait if args.wait is not None else (
        DEFAULT_RATED_WAIT_S if args.wait_rated else None)
    link = _open(args)
    if link is None:
        return EXIT_USAGE
    with link:
        sent = request.encoded()
        out.sent(sent)
        try:
            link.send_raw(sent.line)
        except LinkError as e:
            _error(str(e))
            return EXIT_USAGE
        code, result = _await(link, request, args.timeout, wait_s, out, sent)
    out.result(result, code)
    return code


def _await(link: WindowLink, request: Request, timeout: float, wait_s: float | None,
           out: Output, sent: Sent) -> tuple[int, str]:
    seq, case_id = request.seq, request.case_id
    deadline = time.monotonic() + timeout
    answer: dict[str, Any] | None = None
    while True:
        item = link.next_received(max(0.0, deadline - time.monotonic()))
        if item is None:
            break
        out.received(item)
        frame = item.frame
        if not item.ok or frame is None:
            continue
        ftype = frame.get("type")
        if answer is None and ftype in ("ack", "nak") and (seq is None
                                                           or frame.get("seq") == seq):
            answer = frame
            if ftype == "nak":
                return EXIT_REFUSED, "nak"
            if wait_s is None:
                return EXIT_OK, "ack"
            deadline = time.monotonic() + wait_s
        elif (wait_s is not None and case_id is not None
              and ftype in ("rated", "expired") and frame.get("case_id") == case_id):
            return (EXIT_OK, "rated") if ftype == "rated" else (EXIT_REFUSED, "expired")
    if link.lost is not None:
        _error(link.lost)
        return EXIT_USAGE, "port_lost"
    if answer is None:
        hint = ""
        if sent.crc_sent is None and sent.frame is not None:
            hint = " (a frame without CRC gets no answer when the evaluator requires one)"
        elif sent.crc_sent != sent.crc_correct:
            hint = " (as it should: a frame with a bad CRC gets no answer)"
        what = f"seq={seq}" if seq is not None else "the line"
        _error(f"no answer to {what} within {timeout:g} s{hint}")
        return EXIT_NO_ANSWER, "no_answer"
    if case_id is not None:
        _error(f"acknowledged, but neither rated nor expired for case {case_id} within "
               f"{wait_s:g} s")
        return EXIT_NO_ANSWER, "no_outcome"
    return EXIT_OK, "ack"


# --- --listen ---------------------------------------------------------------------------

class _Stop(Exception):
    pass


def _raise_stop(_signum: int, _frame: Any) -> None:
    raise _Stop


@dataclass
class _Tally:
    lines: int = 0
    rejected: Counter[str] = field(default_factory=Counter)


def _listen(args: argparse.Namespace, out: Output) -> int:
    require_crc = not args.no_crc
    link = _open(args, keep_stale=True)
    if link is None:
        return EXIT_USAGE
    tally = _Tally()
    # Installed explicitly: a shell starts background jobs with SIGINT ignored, and
    # Python then leaves it ignored, so Ctrl-C/`kill -INT` would never end the monitor.
    previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    print(f"listening on {args.port} (Ctrl-C to stop)", file=sys.stderr, flush=True)
    end = None if args.duration is None else time.monotonic() + args.duration
    try:
        with link:
            while args.count is None or tally.lines < args.count:
                remaining = None if end is None else end - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                item = link.next_received(remaining)
                if item is None:
                    if link.lost is not None:
                        break
                    continue
                verdict = judge(item, require_crc)
                tally.lines += 1
                if not verdict.ok:
                    tally.rejected[verdict.kind or "rejected"] += 1
                out.listened(item, verdict)
    except (KeyboardInterrupt, _Stop):
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    out.summary(tally.lines, tally.rejected)
    if link.lost is not None:
        _error(link.lost)
        return EXIT_USAGE
    return EXIT_REFUSED if tally.rejected else EXIT_OK


# --- --interactive ----------------------------------------------------------------------

INTERACTIVE_HELP = """\
TYPE [field=value …] [--seq N] [--bad-crc | --no-crc]   send a frame, e.g.
    case_completed service_name=不动产登记 staff_name="王 芳"
raw LINE [--add-crc]    send LINE exactly as typed (with --add-crc at the very end: plus its CRC)
help                    this text
quit                    leave (also Ctrl-D)
Replies are printed as they arrive."""


def _interactive(args: argparse.Namespace, out: Output) -> int:
    link = _open(args)
    if link is None:
        return EXIT_USAGE
    stop = threading.Event()
    awaiting: set[int] = set()        # seqs sent and not yet answered
    answered = threading.Condition()

    def print_replies() -> None:
        while not stop.is_set():
            item = link.next_received(0.2)
            if item is not None:
                out.received(item)
                frame = item.frame or {}
                if item.ok and frame.get("type") in ("ack", "nak"):
                    with answered:
                        awaiting.discard(frame.get("seq"))
                        answered.notify_all()
            elif link.lost is not None:
                _error(f"{link.lost} (press Enter to leave)")
                return

    printer = threading.Thread(target=print_replies, name="replies", daemon=True)
    printer.start()
    # No prompt when commands are piped in: stdout then carries only the frames.
    prompt = "window> " if sys.stdin.isatty() else ""
    print(f"connected to {args.port}; type help for the commands", file=sys.stderr)
    try:
        with link:
            while link.lost is None:
                try:
                    text = input(prompt)
                except (EOFError, KeyboardInterrupt):
                    break
                if text.strip() in ("quit", "exit"):
                    break
                if text.strip() in ("help", "?"):
                    print(INTERACTIVE_HELP, file=sys.stderr)
                    continue
                try:
                    request = interactive_request(text)
                except UsageError as e:
                    _error(str(e))
                    continue
                if request is None:
                    continue
                sent = request.encoded()
                out.sent(sent)
                if request.seq is not None and sent.crc_sent == sent.crc_correct:
                    with answered:
                        awaiting.add(request.seq)
                try:
                    link.send_raw(sent.line)
                except LinkError as e:
                    _error(str(e))
                    break
            # Leave only once the frames sent have their answers printed (or time is up).
            with answered:
                answered.wait_for(lambda: not awaiting or link.lost is not None,
                                  args.timeout)
            time.sleep(0.05)  # a rated/expired right behind the last ack
    finally:
        stop.set()
        printer.join(1.0)
    return EXIT_USAGE if link.lost is not None else EXIT_OK
