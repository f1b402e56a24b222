"""What the benchmarks' own subscribers (bench/naive_forwarder.py, bench/paho_floor.py)
share: the options, a persistent MQTT v5 session subscribed to every device's ratings,
`subscribed` on stdout once the broker granted it, and SIGTERM to leave."""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


def options(prog: str, client_id: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m {prog}")
    p.add_argument("--broker", default="127.0.0.1:1883", metavar="HOST:PORT")
    p.add_argument("--prefix", default="hcp/v1")
    p.add_argument("--client-id", default=client_id)
    return p


def serve(client: mqtt.Client, args: argparse.Namespace) -> int:
    """Connect with a persistent session, subscribe to `{prefix}/+/rating` at QoS 1 and
    run paho's loop on this thread until SIGTERM."""
    host, _, port = args.broker.rpartition(":")

    def on_connect(c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            print(f"connect refused: {reason}", file=sys.stderr)
            return
        c.subscribe(f"{args.prefix}/+/rating", qos=1)

    def on_subscribe(_c: mqtt.Client, _u: Any, _mid: int, _codes: Any, _p: Any) -> None:
        print("subscribed", flush=True)

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 86400
    client.connect(host, int(port), keepalive=30, clean_start=False, properties=props)
    signal.signal(signal.SIGTERM, lambda *_: client.disconnect())
    client.loop_forever()
    return 0
