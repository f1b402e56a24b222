"""The baseline of benchmark 3: the forwarder anyone would write first. A paho subscriber
that POSTs each rating to the platform as it arrives — one HTTP request per message, no
batching, no receipts, no validation — and lets paho acknowledge the message when the
callback returns.

    python -m bench.naive_forwarder --broker HOST:PORT --url URL [--client-id ID]

It is given a fair chance: a kept-alive HTTP connection (not a new one per request) and
a persistent session, so the benchmark can queue ratings for it while it is stopped.
It prints `subscribed` on stdout once the broker granted its subscription.
"""

from __future__ import annotations

import http.client
import sys
import time
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.subscriber import options, serve


class Poster:
    """POST {"ratings": [payload]} over one kept-alive connection; retry until answered
    (a baseline that lost ratings would look faster than it is)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.path = parts.path or "/"
        self.conn: http.client.HTTPConnection | None = None

    def post(self, payload: bytes | bytearray) -> None:
        body = b'{"ratings":[' + bytes(payload) + b"]}"
        while True:
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
                self.conn.request("POST", self.path, body,
                                  {"Content-Type": "application/json"})
                response = self.conn.getresponse()
                response.read()
                if response.status == 200:
                    return
            except (OSError, http.client.HTTPException):
                if self.conn is not None:
                    self.conn.close()
                self.conn = None
            time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    p = options("bench.naive_forwarder", "naive-forwarder")
    p.add_argument("--url", required=True)
    args = p.parse_args(argv)
    poster = Poster(args.url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=args.client_id,
                         protocol=mqtt.MQTTv5)

    def on_message(_c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        poster.post(message.payload)

    client.on_message = on_message
    return serve(client, args)


if __name__ == "__main__":
    sys.exit(main())
