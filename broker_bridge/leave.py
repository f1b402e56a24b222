"""`hcp-bridge leave --config FILE`: end this bridge's broker session for good.

mosquitto keeps routing a shared group's share of new ratings to a member whose session
still exists, even while it is offline (measured with 2.0.11: half of them with two
members). Before taking a bridge out of a group for good, stop it and run this: the
session, its subscriptions and whatever was queued for it are dropped, so the broker
sends everything to the remaining bridges. Ratings that were queued for it come back
through the devices' resend (`resend_after_s`); nothing is lost. With MQTT 3.1.1 it does
the same with a clean-session connection.
"""

from __future__ import annotations

import argparse
import sys
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from broker_bridge.config import load_bridge_config
from broker_bridge.mqtt_link import LinkError, configure_security
from common.service import EX_CONFIG, load_config


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="hcp-bridge leave",
        description="Drop this bridge's session at the broker (stop the bridge first).")
    parser.add_argument("--config", required=True, metavar="FILE", help="bridge.toml")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait")
    args = parser.parse_args(argv)
    config = load_config(load_bridge_config, args.config)
    if isinstance(config, int):
        return config
    m = config.mqtt
    v5 = m.protocol == "5"
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=m.client_id,
                         protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
                         clean_session=None if v5 else True)
    try:
        configure_security(client, m)
    except LinkError as e:
        print(f"{config.path}: {e}", file=sys.stderr)
        return EX_CONFIG
    answered = threading.Event()
    outcome: list[str] = []

    def on_connect(c: mqtt.Client, userdata: object, flags: mqtt.ConnectFlags, reason: object,
                   properties: object) -> None:
        outcome.append(str(reason) if getattr(reason, "is_failure", False) else "")
        answered.set()

    client.on_connect = on_connect
    try:
        if v5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 0
            # clean_start: the broker discards the old session (subscriptions, queue);
            # expiry 0: nothing is kept after this connection either.
            client.connect(m.host, m.port, keepalive=m.keepalive_s, clean_start=True,
                           properties=props)
        else:
            # 3.1.1's clean_session = True does both: the old session is discarded and
            # this one ends with the connection.
            client.connect(m.host, m.port, keepalive=m.keepalive_s)
    except OSError as e:
        print(f"hcp-bridge leave: cannot reach {m.host}:{m.port}: {e.strerror or e}",
              file=sys.stderr)
        return 1
    client.loop_start()
    try:
        if not answered.wait(args.timeout):
            print(f"hcp-bridge leave: no answer from {m.host}:{m.port}", file=sys.stderr)
            return 1
        if outcome[0]:
            print(f"hcp-bridge leave: broker refused {m.client_id}: {outcome[0]}",
                  file=sys.stderr)
            return 1
    finally:
        client.disconnect()
        client.loop_stop()
    if m.shared_group:
        print(f"session {m.client_id!r} ended at {m.host}:{m.port}; the other bridges of "
              f"group {m.shared_group!r} now get every rating", file=sys.stderr)
    else:
        # No group: nobody else was sharing; what the broker held for this session is
        # gone, and comes back by the devices' resend to whichever bridge subscribes next.
        print(f"session {m.client_id!r} ended at {m.host}:{m.port}; ratings it held come "
              "back by the devices' resend", file=sys.stderr)
    return 0
