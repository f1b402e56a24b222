"""A floor for benchmark 3's CPU bar: the least an MQTT client in Python can do with a
rating. It takes each rating from its persistent session and acknowledges it — nothing
else: no decoding, no checks, no platform, no receipt — with the same paho client and
fast paths as the bridge (broker_bridge/paho_fast.py), on one thread.

    python -m bench.paho_floor --broker HOST:PORT --client-id ID [--expect N]

It prints `subscribed` on stdout once the broker granted its subscription, and `done`
once it has taken and acknowledged `--expect` ratings; it then idles until SIGTERM, so
its CPU time can still be read from /proc.
"""

from __future__ import annotations

import sys

import paho.mqtt
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.subscriber import options, serve
from broker_bridge.paho_fast import FastPublishClient, make_client


def main(argv: list[str] | None = None) -> int:
    p = options("bench.paho_floor", "paho-floor")
    p.add_argument("--expect", type=int, default=0, metavar="N")
    args = p.parse_args(argv)
    client = make_client(callback_api_version=CallbackAPIVersion.VERSION2,
                         client_id=args.client_id, protocol=mqtt.MQTTv5, manual_ack=True)
    if not isinstance(client, FastPublishClient):
        print(f"paho {paho.mqtt.__version__} has no fast paths here: the floor would not "
              "be the bridge's", file=sys.stderr)
        return 2
    taken = 0
    said_done = False

    def on_fast_message(_topic: bytes, _payload: bytes, mid: int, qos: int, _retain: bool,
                        _dup: bool) -> None:
        nonlocal taken
        taken += 1
        client.ack(mid, qos)

    def on_read_done() -> None:
        nonlocal said_done
        if not said_done and args.expect and taken >= args.expect:
            said_done = True
            print("done", flush=True)

    client.on_fast_message = on_fast_message
    client.on_read_done = on_read_done
    return serve(client, args)


if __name__ == "__main__":
    sys.exit(main())
