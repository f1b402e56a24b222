"""A standby bridge (SPEC §12: one active bridge, a standby with the same client id takes
over its session), without two live bridges taking the session from each other.

Every bridge announces itself on `{prefix}/_bridges/{client_id}/status` (retained):
`{"online": true}` on connecting and again every `HEARTBEAT_S`, `{"online": false}` when
it stops and — as its will — when it dies. A bridge started with `[mqtt] standby = true`
first watches that topic under a client id of its own (`<client_id>-standby`, and with
`[mqtt] username_is_client_id` that user) and connects with the shared one
only once the active says offline, has been silent for `STALE_S` (a will is lost when
the broker itself went down with the active), or was never heard for `ABSENT_S`. The
topic has one level more than the device topics, so no `+/status` subscription sees it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from broker_bridge.config import MqttSettings

log = logging.getLogger("hcp.bridge.standby")

HEARTBEAT_S = 10.0
STALE_S = 3 * HEARTBEAT_S
# No status at all this long after subscribing: nobody is active. Not shorter than a
# heartbeat: NATS delivered a retained status only after a lag right after it was set,
# but a live active says it again within HEARTBEAT_S whatever the broker's retained store.
ABSENT_S = HEARTBEAT_S + 2.0
ONLINE = b'{"online":true}'
OFFLINE = b'{"online":false}'


def status_topic(s: MqttSettings) -> str:
    return f"{s.prefix}/_bridges/{s.client_id}/status"


class Announcer:
    """The active side: the will, the retained online status and its heartbeat."""

    def __init__(self, client: mqtt.Client, settings: MqttSettings) -> None:
        self._client = client
        self._topic = status_topic(settings)
        self._stop = threading.Event()
        # QoS 0 throughout: a broker whose maximum QoS is 0 refuses a CONNECT with a QoS 1
        # will (MQTT 5: 0x9B), and would keep the bridge from saying what is wrong. The
        # status is retained anyway, and the heartbeat repeats it.
        client.will_set(self._topic, OFFLINE, qos=0, retain=True)

    def start(self) -> None:
        threading.Thread(target=self._beat, name="bridge-heartbeat", daemon=True).start()

    def online(self) -> None:
        self._client.publish(self._topic, ONLINE, qos=0, retain=True)

    def offline(self) -> None:
        """Say so before a clean stop (the broker publishes no will for a clean one)."""
        self._stop.set()
        self._client.publish(self._topic, OFFLINE, qos=0, retain=True)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            if self._client.is_connected():
                self.online()


def wait_until_free(settings: MqttSettings, stopping: threading.Event,
                    prepare: Callable[[mqtt.Client], None]) -> bool:
    """Watch the active bridge's status until it is offline or silent for STALE_S; True
    then, False if `stopping` was set first. `prepare` sets credentials and TLS."""
    topic = status_topic(settings)
    v5 = settings.protocol == "5"
    watcher_id = f"{settings.client_id}-standby"
    watcher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=watcher_id,
                          protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
                          clean_session=None if v5 else True)
    prepare(watcher)
    if settings.username_is_client_id:
        # A user of its own: logged in as the active's user, on a broker that ties client
        # ids to users, it would take over the very session it waits for.
        watcher.username = watcher_id
    state: dict[str, Any] = {"heard": time.monotonic(), "online": None, "subscribed": False}
    lock = threading.Lock()

    def on_connect(client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not reason.is_failure:
            client.subscribe(topic, 1)

    def on_subscribe(_c: mqtt.Client, _u: Any, _mid: int, _rc: Any, _p: Any) -> None:
        log.debug("watching %s", topic)
        with lock:   # a retained status, if any, comes with or right after the SUBACK
            state["heard"], state["subscribed"] = time.monotonic(), True

    def on_message(_c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        try:
            online = json.loads(message.payload).get("online") is True
        except (ValueError, AttributeError):
            online = False
        log.debug("status of %s: %r", settings.client_id, message.payload[:100])
        with lock:
            state["heard"], state["online"] = time.monotonic(), online

    watcher.on_connect, watcher.on_subscribe = on_connect, on_subscribe
    watcher.on_message = on_message
    watcher.connect_async(settings.host, settings.port, keepalive=settings.keepalive_s)
    watcher.loop_start()
    log.info("standing by: %s takes over once the bridge with this client_id is offline "
             "(%s)", settings.client_id, topic)
    try:
        while not stopping.wait(0.2):
            with lock:
                online, silent = state["online"], time.monotonic() - state["heard"]
                subscribed = state["subscribed"]
            if not (subscribed and watcher.is_connected()):
                continue   # nothing known while we cannot hear the broker
            if online is False:
                log.info("bridge %s is offline: taking over its session", settings.client_id)
                return True
            if online is None and silent > ABSENT_S:
                log.info("no bridge %s announced itself in %.0f s: taking over its session",
                         settings.client_id, silent)
                return True
            if online and silent > STALE_S:
                log.warning("bridge %s has said nothing for %.0f s: taking over its session",
                            settings.client_id, silent)
                return True
        return False
    finally:
        watcher.disconnect()
        watcher.loop_stop()
