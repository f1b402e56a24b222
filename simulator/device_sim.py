"""`hcp-sim device`: one evaluator in the terminal, for technicians and integrators.

It runs the real `hcp-device` daemon with the sim drivers, plays the window system over
a local `socket://` serial link, and draws the OLED with half-block characters: 128×64
pixels in 128×32 cells, or merged to 64×16 so that the whole view fits 80×24. With
`--attach DATA_DIR` it drives a sim daemon that already runs instead (its sim.sock) and
leaves it running. Plain text and ANSI cursor movement only: it works in an SSH session
with no mouse and no colours. The daemon's config is simulator/device_sim_config.py; the
view, simulator/device_sim_view.py.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from device.control import status_socket_path
from device.ports import socket_path_problem
from simulator.children import die_with_parent
from simulator.device_sim_config import build_config, write_config
from simulator.device_sim_view import view_lines
from simulator.simclient import SimClient
from simulator.terminal import Terminal
from simulator.voice_echo import VoiceEcho
from simulator.windowlink import LinkError, WindowServer

# build_config lives in simulator/device_sim_config.py; importable from here too.
__all__ = ["SIZES", "DeviceSim", "build_config", "main", "parse_args", "run_ui"]

SERVICES = [
    ("11421100MB0001", "不动产登记"),
    ("11421100MB0002", "社保卡补办"),
    ("11421100MB0003", "营业执照变更"),
    ("11421100MB0004", "居住证签注"),
    ("11421100MB0005", "公积金提取"),
    ("11421100MB0006", "出生医学证明办理"),
]
STAFF = [("S007", "李娜"), ("S012", "王芳"), ("S020", "张伟")]
LEVELS = {5: "非常满意", 4: "满意", 3: "基本满意", 2: "不满意", 1: "非常不满意"}
# As a window system does (SPEC §4: every frame is answered): a frame with no ack or
# nak after this long is sent again with its seq, at most RESEND_TRIES times in all.
RESEND_AFTER_S = 2.0
RESEND_TRIES = 3

# The panels a simulated evaluator can have: the OLED, and colour touch screens in
# landscape and portrait.
SIZES = ("128x64", "480x320", "800x480", "1024x600", "320x480", "480x800", "600x1024")


class OptionError(Exception):
    """A command line this tool cannot run with: one line, exit 2."""


class DeviceSim:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.attached = bool(args.attach)
        # A temporary directory of ours that the daemon never used is removed on a
        # failed start: nothing in it to look at.
        self.made_temp = not (args.attach or args.data_dir)
        if args.attach:
            self.data_dir = Path(args.attach)
        elif args.data_dir:
            self.data_dir = Path(args.data_dir)
        else:
            self.data_dir = Path(tempfile.mkdtemp(prefix="hcp-sim-device-"))
        if not self.attached:
            try:
                self.data_dir.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise SystemExit(f"hcp-sim device: --data-dir {self.data_dir}: cannot create "
                                 f"it: {e.strerror or e}") from None
        self.window: WindowServer | None = None if self.attached else WindowServer()
        self.proc: subprocess.Popen[bytes] | None = None
        self.sim: SimClient | None = None
        self.lock = threading.Lock()
        self.messages: list[str] = []
        self.current_case: str | None = None
        self.paused = False
        self.staff: tuple[str, str] | None = None
        self.platform_total: int | None = None
        self.dirty = threading.Event()
        self.stopping = threading.Event()
        self.voice: VoiceEcho | None = None
        # Frames wait for the evaluator's hello: one sent earlier can be lost while it
        # opens its serial port (pyserial drops what was buffered before it opened).
        self.hello = threading.Event()
        self._link_lock = threading.Lock()
        self._held: list[tuple[str, dict[str, Any]]] = []
        # seq -> (type, fields, when last sent, times sent)
        self._unanswered: dict[int, tuple[str, dict[str, Any], float, int]] = {}
        self.clock: Callable[[], float] = time.monotonic

    # --- processes -------------------------------------------------------------------

    def start(self) -> None:
        if self.attached:
            self.attach()
            return
        assert self.window is not None
        try:
            conf = build_config(self.args, self.data_dir, self.window.url)
        except (OSError, ValueError) as e:  # ValueError: TOMLDecodeError, UnicodeDecodeError
            self.remove_unused_temp()
            reason = e.strerror if isinstance(e, OSError) and e.strerror else e
            raise SystemExit(f"hcp-sim device: --config {self.args.config}: cannot read it: "
                             f"{reason}") from None
        problem = socket_problem(self.data_dir, "--data-dir (or TMPDIR)")
        if problem is not None:   # only a temporary directory gets here with one
            self.remove_unused_temp()
            raise OptionError(problem)
        config_path = self.data_dir / "device-sim.toml"
        write_config(config_path, conf)
        log = (self.data_dir / "device.log").open("ab")
        env = dict(os.environ)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "device.cli", "run", "--config", str(config_path)],
            stdout=log, stderr=log, env=env, preexec_fn=die_with_parent)
        log.close()
        sock = self.data_dir / "sim.sock"
        deadline = time.monotonic() + 15
        while not sock.exists():
            if self.proc.poll() is not None:
                raise SystemExit(f"hcp-sim device: the evaluator exited "
                                 f"({self.proc.returncode}); see {self.data_dir}/device.log:\n"
                                 + self._log_tail())
            if time.monotonic() > deadline:
                raise SystemExit("hcp-sim device: the evaluator did not start; see "
                                 f"{self.data_dir}/device.log")
            time.sleep(0.05)
        self.sim = SimClient(sock)
        self.sim.listeners.append(lambda ev: self.dirty.set())
        self._echo_voice(conf["voice"].get("clips_dir"))
        threading.Thread(target=self._watch_window, daemon=True).start()
        threading.Thread(target=self._poll_status, daemon=True).start()

    def attach(self) -> None:
        """Connect to the sim socket of a daemon that already runs."""
        sock = self.data_dir / "sim.sock"
        if not sock.is_socket():
            raise SystemExit(
                f"hcp-sim device: no running sim daemon at {sock} (it is there while "
                "`hcp-sim device --data-dir DIR` or `hcp-device run` with input.kind or "
                "display.kind = \"sim\" runs)")
        try:
            self.sim = SimClient(sock, timeout=2.0)
        except ConnectionRefusedError:
            raise SystemExit(f"hcp-sim device: no running sim daemon at {sock} (the socket "
                             "is left over from one that stopped)") from None
        except OSError as e:
            raise SystemExit(f"hcp-sim device: cannot attach to {sock}: "
                             f"{e.strerror or e} (is its daemon still running?)") from None
        self.sim.listeners.append(lambda ev: self.dirty.set())
        self._echo_voice(None)
        self.note(f"attached to {sock}")
        threading.Thread(target=self._poll_status, daemon=True).start()

    def _echo_voice(self, clips_dir: str | None) -> None:
        """Show what the evaluator says, and play it here where there is a sound card."""
        assert self.sim is not None
        self.voice = VoiceEcho(play=not self.args.mute, clips_dir=clips_dir or None)
        self.sim.listeners.append(self.voice.event)

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.data_dir / "device.log").read_text("utf-8", "replace")[-2000:]
        return ""

    def remove_unused_temp(self) -> None:
        if self.made_temp and self.proc is None:
            with contextlib.suppress(OSError):
                self.data_dir.rmdir()  # only when empty

    def stop(self) -> None:
        self.stopping.set()
        if self.voice is not None:
            self.voice.close()
        if self.sim is not None:
            self.sim.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(6)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.window is not None:
            self.window.close()

    # --- the window system side ---------------------------------------------------------

    def note(self, text: str) -> None:
        with self.lock:
            self.messages.append(f"{datetime.now():%H:%M:%S} {text}")
            del self.messages[:-4]
        self.dirty.set()

    def _watch_window(self) -> None:
        assert self.window is not None
        while not self.stopping.is_set():
            item = self.window.next_received(0.5)
            self._resend_unanswered()
            if item is not None and item.frame is not None:
                self._on_window_frame(item.frame)

    def _on_window_frame(self, f: dict[str, Any]) -> None:
        """One frame from the evaluator."""
        t = f.get("type")
        if t in ("ack", "nak"):
            with self._link_lock:
                self._unanswered.pop(f.get("seq"), None)  # type: ignore[arg-type]
        if t == "rated":
            self.note(f"← rated {f.get('case_id')} {f.get('level')} "
                      f"{LEVELS.get(f.get('level'), '')}")  # type: ignore[arg-type]
            if f.get("case_id") == self.current_case:
                self.current_case = None
        elif t == "expired":
            self.note(f"← expired {f.get('case_id')}")
            if f.get("case_id") == self.current_case:
                self.current_case = None
        elif t == "nak":
            self.note(f"← nak seq={f.get('seq')} {f.get('error')}")
        elif t == "hello":
            self.note(f"← hello {f.get('device_id')} v{f.get('version')}")
            self._say_held()

    def send(self, frame_type: str, **fields: Any) -> None:
        if self.window is None:
            self.note("attached: the window system is the daemon's own serial peer")
            return
        with self._link_lock:
            if not self.hello.is_set():
                self._held.append((frame_type, fields))
                self.note(f"{frame_type} held until the evaluator says hello")
                return
        self._transmit(frame_type, fields)

    def _say_held(self) -> None:
        with self._link_lock:
            self.hello.set()
            held, self._held = self._held, []
        for frame_type, fields in held:
            self._transmit(frame_type, fields)

    def _transmit(self, frame_type: str, fields: dict[str, Any], seq: int | None = None,
                  tries: int = 0) -> None:
        assert self.window is not None
        try:
            seq = self.window.send(frame_type, **fields, **({} if seq is None else
                                                             {"seq": seq}))
        except LinkError as e:
            self.note(f"window link: {e}")
            return
        with self._link_lock:
            self._unanswered[seq] = (frame_type, fields, self.clock(), tries + 1)
        shown = " ".join(f"{k}={v}" for k, v in fields.items() if k != "completed_at")
        again = " (again: no answer)" if tries else ""
        self.note(f"→ {frame_type} {shown}{again}".rstrip())

    def _resend_unanswered(self) -> None:
        now = self.clock()
        with self._link_lock:
            due = [(seq, entry) for seq, entry in self._unanswered.items()
                   if now - entry[2] >= RESEND_AFTER_S]
            for seq, _ in due:
                del self._unanswered[seq]
        for seq, (frame_type, fields, _, tries) in due:
            if tries < RESEND_TRIES:
                self._transmit(frame_type, fields, seq, tries)
            else:
                self.note(f"{frame_type} seq={seq}: no answer after {tries} tries")

    def new_case(self) -> None:
        code, name = random.choice(SERVICES)
        case_id = f"{datetime.now():%Y%m%d%H%M%S}{random.randint(0, 999):03d}"
        self.current_case = case_id
        fields: dict[str, Any] = {"case_id": case_id, "service_code": code,
                                  "service_name": name, "completed_at":
                                  datetime.now().astimezone().isoformat(timespec="seconds")}
        if self.staff:
            fields.update(staff_id=self.staff[0], staff_name=self.staff[1])
        self.send("case_completed", **fields)

    def key(self, k: str) -> bool:
        """Handle one key; False to quit."""
        assert self.sim is not None
        if k in "12345" and k:
            self.sim.press(int(k))
        elif self.attached and k in ("c", "C", "x", "X", "p", "P", "l", "L"):
            self.note("c x p l are off: the daemon's serial peer plays the window")
        elif k in ("c", "C"):
            self.new_case()
        elif k in ("x", "X"):
            if self.current_case:
                self.send("cancel", case_id=self.current_case)
                self.current_case = None
        elif k in ("p", "P"):
            self.paused = not self.paused
            self.send("pause", reason="暂停办理") if self.paused else self.send("resume")
        elif k in ("l", "L"):
            if self.staff:
                self.staff = None
                self.send("staff_logout")
            else:
                self.staff = random.choice(STAFF)
                self.send("staff_login", staff_id=self.staff[0], staff_name=self.staff[1])
        elif k in ("s", "S"):
            self.sim.hold(3, 11_000)
            self.note("holding key 3 for 11 s (stuck-key test)")
        elif k in ("q", "Q", "EOF", "\x03", "\x04"):
            return False
        self.dirty.set()
        return True

    # --- status -------------------------------------------------------------------------

    def _poll_status(self) -> None:
        while not self.stopping.is_set():
            with contextlib.suppress(OSError):
                if self.sim is not None:
                    self.sim.request_status()
            if self.args.platform:
                self.platform_total = _platform_total(self.args.platform)
            self.dirty.set()
            self.stopping.wait(1.0)

    def lines(self) -> list[str]:
        """The whole view, never taller or wider than the terminal
        (simulator/device_sim_view.py)."""
        return view_lines(self)


def _platform_total(url: str) -> int | None:
    base = url.split("/api/")[0].rstrip("/")
    try:
        with urllib.request.urlopen(base + "/api/counts", timeout=1) as r:
            return int(json.load(r)["total"])
    except (OSError, ValueError, KeyError):
        return None


def run_ui(sim: DeviceSim, term: Terminal, on_tick: Callable[[], None] | None = None) -> None:
    last = 0.0
    while True:
        if sim.proc is not None and sim.proc.poll() is not None:
            sim.note(f"the evaluator exited ({sim.proc.returncode}); see device.log")
            term.draw(sim.lines())
            return
        if sim.attached and sim.sim is not None and sim.sim.closed:
            refusal = sim.sim.refusal
            sim.note(f"the evaluator turned this terminal away: {refusal}" if refusal
                     else "the evaluator closed its sim socket (stopped?)")
            term.draw(sim.lines())
            return
        key = term.read_key(0.1)
        if key is not None and not sim.key(key):
            return
        now = time.monotonic()
        if sim.dirty.is_set() and now - last > 0.05:
            sim.dirty.clear()
            last = now
            term.draw(sim.lines())
        if on_tick:
            on_tick()


def _broker(text: str) -> str:
    """argparse type for `--broker [HOST]:PORT`."""
    _host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT with PORT 1–65535, got {text!r}")
    return text


def _web_port(text: str) -> int:
    """argparse type for `--web PORT` (0: any free port)."""
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"expected a port 0–65535, got {text!r}")
    return int(text)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="hcp-sim device", description=__doc__)
    p.add_argument("--config", help="a device TOML to start from (keys/screen/serial are "
                                    "replaced by the simulator's)")
    p.add_argument("--data-dir", help="where the outbox and logs live (default: a new "
                                      "temporary directory)")
    p.add_argument("--broker", type=_broker,
                   help="HOST:PORT of the MQTT broker (default from the config, "
                        "else 127.0.0.1:1883)")
    p.add_argument("--prefix", help="MQTT topic prefix")
    p.add_argument("--platform", help="platform URL, to show its rating count")
    p.add_argument("--device-id", default="421100-HG01-W03")
    p.add_argument("--window-name", default="03号窗口 不动产登记")
    p.add_argument("--attach", metavar="DATA_DIR",
                   help="drive a sim daemon that already runs (its DATA_DIR/sim.sock) "
                        "instead of starting one; q leaves it running")
    p.add_argument("--size", choices=SIZES,
                   help="the panel: 128x64 OLED (default) or a colour touch screen")
    p.add_argument("--web", type=_web_port, metavar="PORT",
                   help="also serve the live screen on http://127.0.0.1:PORT/, where a "
                        "click is a touch (0: any free port, printed)")
    p.add_argument("--mute", action="store_true",
                   help="show the voice clips without playing them on this computer")
    p.add_argument("--info", action="append", metavar="TEXT",
                   help="a line kept on screen under the status (repeatable; the demo "
                        "shows its URLs so)")
    return p.parse_args(argv)


def socket_problem(data_dir: Path, option: str, attach: bool = False) -> str | None:
    """A data directory in which a socket of the daemon's (the sim socket; the status
    socket too when we start the daemon) would be too long a path for the kernel, as
    one line naming the path and `option`, the way to choose another; else None."""
    paths = [data_dir / "sim.sock"] + ([] if attach else [status_socket_path(data_dir)])
    for path in paths:
        too_long = socket_path_problem(path)
        if too_long is not None:
            return f"{option}: the socket {path} would be {too_long}; choose a shorter {option}"
    return None


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    problem = (socket_problem(Path(args.attach), "--attach", attach=True) if args.attach
               else socket_problem(Path(args.data_dir), "--data-dir") if args.data_dir
               else None)   # a temporary directory: checked once it is made
    if problem is not None:
        print(f"hcp-sim device: {problem}", file=sys.stderr)
        return 2
    sim = DeviceSim(args)
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    web = None
    try:
        sim.start()
        if args.web is not None:
            from simulator.web_view import WebView
            try:
                web = WebView(lambda: sim.sim, port=args.web)
            except OSError as e:
                raise SystemExit(f"hcp-sim device: --web {args.web}: cannot serve on "
                                 f"127.0.0.1:{args.web}: {e.strerror or e}") from None
            assert sim.sim is not None
            sim.sim.listeners.append(web.on_event)
            if sim.sim.screen is not None:
                web.on_event(sim.sim.screen)
            args.info = [*(args.info or []), f"web view (a click is a touch): {web.start()}"]
        with Terminal() as term:
            try:
                run_ui(sim, term)
            except KeyboardInterrupt:
                pass
    except KeyboardInterrupt:  # while the daemon starts: stopped like `q`, and said where
        pass
    except OptionError as e:
        print(f"hcp-sim device: {e}", file=sys.stderr)
        return 2
    finally:
        if web is not None:
            web.close()
        sim.stop()
    if sim.attached:
        print(f"hcp-sim device: detached; the evaluator of {sim.data_dir} keeps running")
    else:
        print(f"hcp-sim device: stopped; outbox and log in {sim.data_dir}")
    return 0
