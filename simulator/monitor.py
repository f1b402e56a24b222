"""`hcp-sim monitor`: a live view of a hall from the broker — one line per device (online,
backlog, oldest pending rating, last rating, serial errors, last event), refreshed in
place. Read-only: a plain subscription to the devices' topics, nothing is published."""

from __future__ import annotations

import argparse
import shutil
import ssl
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, TextIO

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from simulator.monitor_view import KINDS, HallView

REFRESH_S = 1.0
HOME, CLEAR_LINE, CLEAR_BELOW, CLEAR_SCREEN = "\x1b[H", "\x1b[K", "\x1b[J", "\x1b[2J"


def broker_address(text: str) -> tuple[str, int]:
    """argparse type for `--broker HOST:PORT` (hcp-sim fleet uses it too)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


class MonitorError(Exception):
    """The broker could not be reached or refused us."""


class HallWatcher:
    """A paho client feeding a HallView; every paho error stays in here."""

    def __init__(self, view: HallView, host: str, port: int, prefix: str, *,
                 username: str = "", password_file: str = "", tls: bool = False,
                 ca_file: str = "", protocol: str = "5") -> None:
        self.view = view
        self.host, self.port, self.prefix = host, port, prefix
        self.lock = threading.Lock()
        self.connected = threading.Event()
        self.state = "connecting"
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"hcp-monitor-{uuid.uuid4().hex[:8]}",
                                  protocol=MQTTProtocolVersion.MQTTv5 if protocol == "5"
                                  else MQTTProtocolVersion.MQTTv311)
        self.client.reconnect_delay_set(1, 30)
        try:
            if username:
                password = None
                if password_file:
                    password = Path(password_file).read_text(encoding="utf-8").rstrip("\r\n")
                self.client.username_pw_set(username, password)
            if tls:
                self.client.tls_set_context(ssl.create_default_context(cafile=ca_file or None))
        except (OSError, ValueError, UnicodeDecodeError) as e:
            raise MonitorError(f"cannot set up the connection: {e}") from e
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    def start(self) -> None:
        try:
            self.client.connect_async(self.host, self.port, keepalive=30)
            self.client.loop_start()
        except (OSError, ValueError) as e:
            raise MonitorError(f"broker {self.host}:{self.port}: {e}") from e

    def stop(self) -> None:
        try:
            self.client.disconnect()
        except (OSError, ValueError):
            pass
        self.client.loop_stop()

    def _on_connect(self, client: mqtt.Client, _ud: Any, _flags: Any, reason: Any,
                    _props: Any) -> None:
        if reason.is_failure:
            self.state = f"refused: {reason}"
            return
        self.state = "connected"
        client.subscribe([(f"{self.prefix}/+/{kind}", 0) for kind in KINDS])
        self.connected.set()

    def _on_disconnect(self, _c: mqtt.Client, _ud: Any, _flags: Any, reason: Any,
                       _props: Any) -> None:
        self.connected.clear()
        self.state = f"disconnected ({reason}), reconnecting"

    def _on_message(self, _c: mqtt.Client, _ud: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.view.update(msg.topic, bytes(msg.payload), time.time(), self.prefix)

    def lines(self, max_rows: int | None = None) -> list[str]:
        with self.lock:
            return self.view.lines(time.time(), max_rows)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hcp-sim monitor",
        description="Live view of a hall from the broker: one line per device. Read-only.")
    p.add_argument("--broker", type=broker_address, default=("127.0.0.1", 1883),
                   metavar="HOST:PORT", help="MQTT broker (default 127.0.0.1:1883)")
    p.add_argument("--prefix", default="hcp/v1", help="topic prefix (default hcp/v1)")
    p.add_argument("--protocol", choices=["5", "3.1.1"], default="5",
                   help="MQTT 5 (default) or 3.1.1 (NATS)")
    p.add_argument("--hall", help="only devices of this hall (hall_id of their ratings, or "
                                  "the middle part of an id like 421100-HG01-W03)")
    p.add_argument("--once", action="store_true",
                   help="print one snapshot after --wait seconds and exit (for scripts)")
    p.add_argument("--wait", type=float, default=2.0, metavar="S",
                   help="with --once: collect for S seconds first (default 2)")
    p.add_argument("--username", default="", help="broker user name")
    p.add_argument("--password-file", default="", help="file holding the broker password")
    p.add_argument("--tls", action="store_true", help="TLS to the broker")
    p.add_argument("--ca-file", default="", help="CA for the broker's certificate (with "
                                                 "--tls; default: the system's)")
    return p


def live(watcher: HallWatcher, out: TextIO, prefix: str) -> None:
    """Redraw from the top of the screen once a second until Ctrl-C."""
    out.write(CLEAR_SCREEN)
    while True:
        rows = shutil.get_terminal_size((120, 40)).lines
        lines = watcher.lines(max_rows=max(1, rows - 4))
        top = f"hcp-sim monitor — {prefix} on {watcher.host}:{watcher.port} " \
              f"({watcher.state}) — {time.strftime('%H:%M:%S')} — Ctrl-C to quit"
        out.write(HOME + "".join(line + CLEAR_LINE + "\n" for line in [top, *lines])
                  + CLEAR_BELOW)
        out.flush()
        time.sleep(REFRESH_S)


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if args.password_file and not args.username:   # as [mqtt] password_file in a config
        print("hcp-sim monitor: --password-file needs --username (the broker user that "
              "password is for)", file=sys.stderr)
        return 2
    host, port = args.broker
    view = HallView(args.hall)
    try:
        watcher = HallWatcher(view, host, port, args.prefix, username=args.username,
                              password_file=args.password_file,
                              tls=args.tls or bool(args.ca_file), ca_file=args.ca_file,
                              protocol=args.protocol)
        watcher.start()
    except MonitorError as e:
        print(f"hcp-sim monitor: {e}", file=sys.stderr)
        return 1
    try:
        if args.once:
            if not watcher.connected.wait(max(args.wait, 5.0)):
                print(f"hcp-sim monitor: broker {host}:{port}: {watcher.state}",
                      file=sys.stderr)
                return 1
            time.sleep(max(0.0, args.wait))
            print("\n".join(watcher.lines()))
            return 0
        live(watcher, sys.stdout, args.prefix)
    except KeyboardInterrupt:
        print()
    finally:
        watcher.stop()
    return 0
