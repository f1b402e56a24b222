"""`hcp-sim demo` (`./hcp demo`): the whole chain on this machine, in one command.

A private mosquitto on a free port, the reference platform, the bridge, and the
interactive device simulator in the terminal. Every process it starts dies with it:
Ctrl-C (or `q`) stops them all, and the kernel stops them if the demo itself is killed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from simulator import device_sim
from simulator.children import die_with_parent
from simulator.localbroker import BrokerError, Mosquitto, free_port
from simulator.tomlfile import toml_text


class Chain:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.broker: Mosquitto | None = None
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.platform_url = ""
        self.dashboard_url = ""
        self.metrics_url = ""

    def spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("ab")
        proc = subprocess.Popen([sys.executable, "-m", *args], stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
        log.close()
        self.procs[name] = proc
        return proc

    def start(self) -> None:
        say("starting a private mosquitto …")
        self.broker = Mosquitto(self.workdir / "broker", die_with_parent=True).start()

        port = free_port()
        self.dashboard_url = f"http://127.0.0.1:{port}/"
        self.platform_url = f"{self.dashboard_url}api/ratings"
        say(f"starting the city platform (hcp-platform) on 127.0.0.1:{port} …")
        platform_toml = self.workdir / "platform.toml"
        platform_toml.write_text(toml_text({
            "store": {"url": f"sqlite:///{(self.workdir / 'platform.db').resolve()}"},
            "http": {"listen": f"127.0.0.1:{port}"},
            "mqtt": {"host": "127.0.0.1", "port": self.broker.port,
                     "client_id": "hcp-platform-demo"},
        }), encoding="utf-8")
        self.spawn("platform", "city_platform", "run", "--config", str(platform_toml))
        if not _wait_healthy(f"{self.dashboard_url}healthz", 20):
            raise RuntimeError(f"the platform did not start; see {self.workdir}/platform.log")

        http_port = free_port()
        self.metrics_url = f"http://127.0.0.1:{http_port}/metrics"
        bridge_toml = self.workdir / "bridge.toml"
        bridge_toml.write_text(toml_text({
            "mqtt": {"host": "127.0.0.1", "port": self.broker.port,
                     "client_id": "hcp-bridge-demo"},
            "platform": {"url": self.platform_url},
            "http": {"listen": f"127.0.0.1:{http_port}"},
        }), encoding="utf-8")
        say("starting the bridge …")
        self.spawn("bridge", "broker_bridge.cli", "run", "--config", str(bridge_toml))
        if not _wait_healthy(f"http://127.0.0.1:{http_port}/healthz", 15):
            raise RuntimeError(f"the bridge did not become healthy; see "
                               f"{self.workdir}/bridge.log")

    def stop(self) -> list[str]:
        """Stop everything, newest first; return the names of what had to be killed."""
        killed = []
        for name, proc in reversed(list(self.procs.items())):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(6)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                    killed.append(name)
        if self.broker is not None:
            try:
                self.broker.stop()
            except BrokerError:
                killed.append("mosquitto")
        return killed

    def platform_counts(self) -> dict[str, Any] | None:
        base = self.platform_url.split("/api/")[0]
        try:
            with urllib.request.urlopen(base + "/api/counts", timeout=2) as r:
                counts: dict[str, Any] = json.load(r)
                return counts
        except (OSError, ValueError):
            return None


def open_in_browser(url: str) -> None:
    """Open the dashboard where there is a desktop to open it on; quietly nothing on a
    server or over ssh (the URL is on screen either way)."""
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return
    opener = shutil.which("xdg-open")
    if opener:
        subprocess.Popen([opener, url], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)


def _wait_healthy(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def say(text: str) -> None:
    print(f"hcp demo: {text}", flush=True)


INTRO = """
The evaluator's screen is drawn below, pixel for pixel. Try:
  c      the window finishes a case (办结): the prompt appears
  1 … 5  rate it (5 非常满意 … 1 非常不满意; 1 or 2 then asks for a reason)
  1 … 5  on idle: rate the window without a case
  p / l  pause-resume the window, clerk login-logout      q or Ctrl-C: quit
The status line shows the broker link, the device's backlog and the platform's count.
"""


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="hcp-sim demo", description=__doc__)
    p.add_argument("--dir", help="working directory for logs and data (default: a new "
                                 "temporary one)")
    p.add_argument("--no-ui", action="store_true",
                   help="start the chain and wait (for scripts); Ctrl-C stops it")
    p.add_argument("--size", choices=device_sim.SIZES,
                   help="the evaluator's panel: 128x64 OLED (default) or a colour touch "
                        "screen, e.g. 800x480 (the 7-inch panel)")
    p.add_argument("--web", type=int, metavar="PORT",
                   help="also show the screen in a browser on http://127.0.0.1:PORT/ "
                        "(0: any free port), where a click is a touch")
    p.add_argument("--mute", action="store_true", help="do not play the voice clips here")
    args = p.parse_args(argv)
    # --no-ui runs no evaluator: a screen asked for with it would silently not be there.
    for option, given in (("--web", args.web is not None), ("--size", args.size)):
        if args.no_ui and given:
            print(f"hcp-sim demo: {option} shows the evaluator's screen, which --no-ui does "
                  f"not run; leave out one of them", file=sys.stderr)
            return 2
    if not args.no_ui:   # the evaluator's sockets are in DIR/device
        problem = device_sim.socket_problem(
            (Path(args.dir) if args.dir
             else Path(tempfile.gettempdir()) / "hcp-demo-xxxxxxxx") / "device",
            "--dir" if args.dir else "--dir (or TMPDIR)")
        if problem is not None:
            print(f"hcp-sim demo: {problem}", file=sys.stderr)
            return 2
    workdir = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="hcp-demo-"))
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"hcp-sim demo: --dir {workdir}: cannot create it: {e.strerror or e}",
              file=sys.stderr)
        return 2
    chain = Chain(workdir)

    def on_term(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    code = 0
    try:
        chain.start()
        assert chain.broker is not None
        say(f"broker 127.0.0.1:{chain.broker.port}, platform {chain.platform_url}, "
            f"bridge metrics {chain.metrics_url}")
        say(f"the hall dashboard: {chain.dashboard_url} (open it in a browser)")
        open_in_browser(chain.dashboard_url)
        say(f"logs and data in {workdir}")
        print(INTRO, flush=True)
        if args.no_ui:
            say("running; Ctrl-C stops everything")
            while all(proc.poll() is None for proc in chain.procs.values()):
                time.sleep(0.5)
            say("a process of the chain exited; stopping")
        else:
            time.sleep(1.5)  # let the instructions be read before the screen takes over
            # The URLs stay on screen under the device's view (they used to scroll away).
            sim_args = ["--broker", f"127.0.0.1:{chain.broker.port}", "--platform",
                        chain.platform_url, "--data-dir", str(workdir / "device"),
                        "--info", f"hall dashboard {chain.dashboard_url}",
                        "--info", f"bridge metrics {chain.metrics_url}"]
            if args.size:
                sim_args += ["--size", args.size]
            if args.web is not None:
                sim_args += ["--web", str(args.web)]
            if args.mute:
                sim_args.append("--mute")
            device_sim.main(sim_args)
    except KeyboardInterrupt:
        pass
    except (RuntimeError, BrokerError) as e:
        say(str(e))
        code = 1
    finally:
        counts = chain.platform_counts()
        killed = chain.stop()
        if counts is not None:
            say(f"the platform counted {counts.get('total', 0)} rating(s): "
                f"好评 {counts.get('good', 0)}, 差评 {counts.get('bad', 0)}")
        if killed:
            say("had to SIGKILL: " + ", ".join(killed))
        say(f"everything stopped; logs and data in {workdir}")
    return code
