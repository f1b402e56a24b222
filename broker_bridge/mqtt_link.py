"""The bridge's MQTT side: one paho-mqtt client (MQTT 5, or 3.1.1 for brokers that speak
nothing newer) with manual acknowledgement and a persistent session, behind a small
interface that owns every paho detail. What it does when the broker says no is in
broker_bridge/refusals.py.

What it guarantees to the bridge loop:
- messages arrive, in order, as `Incoming` events tagged with the connection
  `generation` they came on; held topics wait for `ack()`, others are acknowledged
  at once;
- `ack()` refuses a message id from an earlier connection (after a reconnect the
  broker redelivers what was not acknowledged; an old id could name another message);
- `LinkUp` / `LinkDown` events mark connections, `healthy` is true while connected
  with every subscription granted.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from broker_bridge.config import MqttSettings
from broker_bridge.mqtt_setup import LinkError as LinkError
from broker_bridge.mqtt_setup import configure_security as configure_security
from broker_bridge.mqtt_setup import quiet_paho
from broker_bridge.paho_fast import FastPublishClient, make_client
from broker_bridge.refusals import (
    RECONNECT_S,
    SESSION_TAKEN_OVER,
    SHARED_NOT_SUPPORTED,
    Refusals,
)
from broker_bridge.standby import Announcer, wait_until_free

log = logging.getLogger("hcp.bridge.mqtt")

# At most this many of our own QoS 1 messages (receipts, dead letters, alerts) wait for
# the broker's PUBACK at once; fewer when the broker's Receive Maximum says so.
OUTGOING_IN_FLIGHT = 200



class Incoming(NamedTuple):
    """One message as delivered, tagged with the connection it came on. Made in paho's
    network thread for every message: a NamedTuple is immutable and cheap to build."""

    generation: int
    topic: str
    payload: bytes
    mid: int
    qos: int
    retain: bool


@dataclass(frozen=True, slots=True)
class LinkUp:
    generation: int
    session_present: bool


@dataclass(frozen=True, slots=True)
class LinkDown:
    generation: int
    reason: str


class IncomingBurst(list[Incoming]):
    """Messages read in one go, handed to the sink as one event: one wake-up of the
    bridge loop per burst instead of one per message."""


LinkEvent = Incoming | IncomingBurst | LinkUp | LinkDown


class BrokerLink(Protocol):
    """What the bridge loop needs from its broker connection (MqttLink, or a fake in
    unit tests of reconnect edge cases)."""

    @property
    def healthy(self) -> bool: ...

    def start(self) -> None: ...

    def stop(self, timeout: float = 1.5) -> None: ...

    def ack(self, generation: int, mid: int, qos: int) -> bool: ...

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False
                ) -> None: ...


LinkFactory = Callable[[MqttSettings, Sequence[tuple[str, int]], Callable[[LinkEvent], None],
                        Callable[[str], bool]], BrokerLink]


class MqttLink:
    """Connect, subscribe, deliver messages to `sink`, acknowledge on request.

    `holds(topic)` says which messages wait for an explicit `ack()` (ratings); every
    other message is acknowledged as soon as it is handed to `sink`.
    """

    def __init__(self, settings: MqttSettings, subscriptions: Sequence[tuple[str, int]],
                 sink: Callable[[LinkEvent], None], holds: Callable[[str], bool]) -> None:
        self._settings = settings
        self._subscriptions = list(subscriptions)
        self._sink = sink
        self._holds = holds
        self._lock = threading.Lock()
        self._generation = 0
        self._connected = False
        self._subscribed = False
        self._subscribe_mid: int | None = None
        self._barrier_mid: int | None = None
        self._barrier_done: threading.Event | None = None
        self._stopping = False
        self._unreachable_logged = False
        self._client = self._make_client(settings)
        self._refusals = Refusals(settings, self._client.reconnect_delay_set)
        self._announcer = Announcer(self._client, settings) if settings.announce else None
        self._standing_by = threading.Event()   # set: stop waiting (stop() was called)
        # Messages of the read in progress (paho's network thread), handed over as one
        # IncomingBurst when the read ends or before any other event.
        self._burst: list[Incoming] = []
        self._burst_lock = threading.Lock()

    # paho setup ----------------------------------------------------------------

    def _make_client(self, s: MqttSettings) -> mqtt.Client:
        # MQTT v5 by default: Receive Maximum, the session expiry and reason codes are v5
        # only. 3.1.1 for engines that speak nothing newer (NATS); its persistent session
        # is clean_session = False. paho_fast decodes the ratings' PUBLISH for both.
        v5 = s.protocol == "5"
        client = make_client(callback_api_version=CallbackAPIVersion.VERSION2,
                             client_id=s.client_id,
                             protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
                             clean_session=None if v5 else False, manual_ack=True)
        paho_log = logging.getLogger("hcp.bridge.paho")
        paho_log.setLevel(logging.INFO)  # paho logs every packet at DEBUG
        paho_log.addFilter(quiet_paho)
        client.enable_logger(paho_log)
        # A failure in one of our callbacks is logged (paho: "Caught exception in …") and
        # the network thread goes on; raised, it would end the thread and leave the
        # bridge running deaf until someone restarted it.
        client.suppress_exceptions = True
        client.reconnect_delay_set(*RECONNECT_S)
        # Receipts and dead letters going out, un-acknowledged at once: an MQTT 5 broker
        # says how many it takes (Receive Maximum in its CONNACK, see _on_connect); 3.1.1
        # has no such figure.
        client.max_inflight_messages_set(OUTGOING_IN_FLIGHT)
        client.max_queued_messages_set(0)
        configure_security(client, s)
        client.on_pre_connect = self._on_pre_connect
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        if isinstance(client, FastPublishClient):
            client.on_fast_message = self._on_fast_message
            client.on_read_done = self._hand_over
        return client

    def start(self) -> None:
        """Connect in the background (retrying until it works) and start delivering; a
        standby first waits in the background until the active bridge is gone."""
        if self._settings.standby:
            threading.Thread(target=self._take_over_when_free, name="standby",
                             daemon=True).start()
        else:
            self._connect()
        if self._announcer is not None:
            self._announcer.start()

    def _take_over_when_free(self) -> None:
        def prepare(client: mqtt.Client) -> None:
            configure_security(client, self._settings)
        if wait_until_free(self._settings, self._standing_by, prepare):
            with self._lock:
                if not self._stopping:
                    self._connect()

    def _connect(self) -> None:
        s = self._settings
        if s.protocol == "5":
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = s.session_expiry_s
            props.ReceiveMaximum = s.receive_maximum
            # clean_start=False on every connect: messages we had not acknowledged when
            # we died (or lost the connection) are delivered again.
            self._client.connect_async(s.host, s.port, keepalive=s.keepalive_s,
                                       clean_start=False, properties=props)
        else:
            # clean_session=False (set on the client): the same, the 3.1.1 way.
            self._client.connect_async(s.host, s.port, keepalive=s.keepalive_s)
        self._client.loop_start()

    def stop(self, timeout: float = 1.5) -> None:
        """Make sure the broker has processed every acknowledgement sent so far, then
        disconnect and stop the network thread; un-acknowledged messages stay in the
        broker's session for next time."""
        self._standing_by.set()
        if self._announcer is not None and self._connected:
            self._announcer.offline()   # before the barrier: its SUBACK covers it too
        self._barrier(timeout=1.0)
        with self._lock:
            self._stopping = True
            self._connected = False
        self._client.disconnect()
        stopper = threading.Thread(target=self._client.loop_stop, daemon=True)
        stopper.start()
        stopper.join(timeout)

    def _barrier(self, timeout: float) -> None:
        """Wait for the SUBACK of a harmless re-subscription. The broker handles a
        client's packets in order, so the SUBACK proves our earlier PUBACKs were
        processed. Without it, closing the socket right after a burst of PUBACKs can
        lose them: the close meets unread data and becomes a TCP reset, and the broker
        drops what it had not read yet (measured: 37 of 40 PUBACKs lost, the ratings
        redelivered after the restart)."""
        if not self._connected or not self._subscriptions:
            return
        topic, qos = self._subscriptions[-1]
        done = threading.Event()
        with self._lock:  # the SUBACK may be handled before subscribe() returns
            self._barrier_done = done
            if self._settings.protocol == "5":
                options = SubscribeOptions(qos=qos,
                                           retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND)
                result, mid = self._client.subscribe(topic, options=options)
            else:
                # 3.1.1 cannot ask for no retained messages; the last subscription is one
                # that carries none (telemetry, events).
                result, mid = self._client.subscribe(topic, qos)
            self._barrier_mid = mid
        if result != mqtt.MQTT_ERR_SUCCESS:
            return
        if not done.wait(timeout):
            log.warning("the broker did not confirm the last acknowledgements within "
                        "%.1f s; those ratings may be delivered once more", timeout)

    # Called from the bridge loop -------------------------------------------------

    @property
    def healthy(self) -> bool:
        return self._connected and self._subscribed

    @property
    def generation(self) -> int:
        return self._generation

    def ack(self, generation: int, mid: int, qos: int) -> bool:
        """Acknowledge message `mid` if it came on the current connection."""
        if qos == 0:
            return True
        with self._lock:
            if generation != self._generation or not self._connected:
                return False
            self._client.ack(mid, qos)
            return True

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """Queue a message; paho sends it now or after the next reconnect."""
        try:
            self._client.publish(topic, payload, qos=qos, retain=retain)
        except (ValueError, RuntimeError) as e:
            log.error("cannot publish to %s: %s", topic, e)

    # paho callbacks (network thread) -------------------------------------------

    def _on_pre_connect(self, client: mqtt.Client, userdata: Any) -> None:
        with self._lock:
            self._generation += 1
            self._connected = False
            self._subscribed = False

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags,
                    reason: Any, properties: Any) -> None:
        if reason.is_failure:
            # Bad credentials, a refused client id, a server busy: say so once and wait
            # a backoff step before the next attempt.
            self._refused(f"refused the connection: {reason} (CONNACK {reason.value:#04x})")
            return
        with self._lock:
            self._connected = True
            generation = self._generation
        self._unreachable_logged = False
        log.info("connected to %s:%s as %s over MQTT %s (session %s)", self._settings.host,
                 self._settings.port, self._settings.client_id, self._settings.protocol,
                 "resumed" if flags.session_present else "new")
        self._event(LinkUp(generation, flags.session_present))
        if self._announcer is not None:
            self._announcer.online()
        self._refusals.note_batch_window()
        figure = getattr(properties, "ReceiveMaximum", None)
        if isinstance(client, FastPublishClient) and isinstance(figure, int) and figure > 0:
            # MQTT 5 §3.2.2.3.3: no more un-acknowledged QoS 1 messages to the broker than
            # its Receive Maximum (mosquitto: max_inflight_messages, 20 by default). Over
            # it a strict broker disconnects; under it paho's scan for the next queued
            # message on every PUBACK stays short.
            client.limit_in_flight(min(figure, OUTGOING_IN_FLIGHT))
        if self._shared and getattr(properties, "SharedSubscriptionAvailable", 1) == 0:
            # The broker says so before we ask: subscribing anyway would only add a
            # SUBACK of refusals (or a DISCONNECT) to the same answer.
            self._refused("says shared subscriptions are not available (CONNACK property "
                          "Shared Subscription Available = 0)", shared=True)
            return
        # Subscribing again on a resumed session is harmless and keeps the config
        # authoritative (a changed shared_group takes effect).
        result, mid = client.subscribe(self._subscriptions)
        self._subscribe_mid = mid if result == mqtt.MQTT_ERR_SUCCESS else None

    @property
    def _shared(self) -> bool:
        return any(topic.startswith("$share/") for topic, _ in self._subscriptions)

    def _refused(self, why: str, shared: bool = False, takeover: bool = False) -> int:
        """Not healthy, and the policy of refusals/`Refusals.refused` for what comes next."""
        with self._lock:
            self._subscribed = False
        return self._refusals.refused(why, shared, takeover)

    def _subscribe_later(self, delay: float) -> None:
        """Ask for the subscriptions again in `delay` seconds if this connection is still
        up: a refusal may be passing (NATS answers 0x80 when creating its JetStream
        consumer timed out under load) and the connection itself is fine."""
        generation = self._generation
        timer = threading.Timer(delay, self._subscribe_again, args=(generation,))
        timer.daemon = True
        timer.start()

    def _subscribe_again(self, generation: int) -> None:
        with self._lock:  # the SUBACK may be handled before subscribe() returns
            if self._stopping or not self._connected or generation != self._generation:
                return
            result, mid = self._client.subscribe(self._subscriptions)
            self._subscribe_mid = mid if result == mqtt.MQTT_ERR_SUCCESS else None

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        if not self._unreachable_logged:
            log.warning("cannot reach broker %s:%s; retrying", self._settings.host,
                        self._settings.port)
            self._unreachable_logged = True

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        with self._lock:
            was_connected = self._connected
            self._connected = False
            self._subscribed = False
            generation = self._generation
            stopping = self._stopping
        code = getattr(reason, "value", None)
        if not stopping and code == SHARED_NOT_SUPPORTED:
            self._refused(f"disconnected us: {reason} (DISCONNECT 0x9e)", shared=True)
        elif not stopping and code == SESSION_TAKEN_OVER:
            self._refused(f"disconnected us: another client connected with client_id "
                          f"{self._settings.client_id!r} and took over the session "
                          "(DISCONNECT 0x8e). Two live bridges must not share a client_id: "
                          "set [mqtt] standby = true on both",
                          takeover=True)
        elif not stopping and was_connected:
            log.warning("lost the broker connection: %s; reconnecting", reason)
        self._event(LinkDown(generation, str(reason)))

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int,
                      reason_codes: list[Any], properties: Any) -> None:
        with self._lock:
            barrier = self._barrier_done if mid == self._barrier_mid else None
            ours = mid == self._subscribe_mid
        if barrier is not None:
            barrier.set()
            return
        if not ours:
            return
        granted = list(zip(self._subscriptions, reason_codes, strict=False))
        shared_refused = [f"{topic} ({rc}, SUBACK {rc.value:#04x})"
                          for (topic, _), rc in granted
                          if rc.is_failure and topic.startswith("$share/")]
        refused = [f"{topic} ({rc})" for (topic, _), rc in granted
                   if rc.is_failure and not topic.startswith("$share/")]
        # A SUBACK must answer every topic asked for; one it leaves out is not granted.
        refused += [f"{topic} (no reason code for it in the SUBACK)"
                    for topic, _ in self._subscriptions[len(reason_codes):]]
        # A grant below what we asked (a broker with max_qos 0) is no subscription we can
        # work with: at QoS 0 the broker holds nothing for us, so a platform outage could
        # not hold ratings back and a crash would leave them to the devices' resend.
        downgraded = [f"{topic} (asked QoS {qos}, granted {rc.value})"
                      for (topic, qos), rc in granted if not rc.is_failure and rc.value < qos]
        if shared_refused:
            self._refused("refused the shared subscriptions: " + ", ".join(shared_refused),
                          shared=True)
        if refused and not shared_refused:
            self._subscribe_later(self._refused("refused subscriptions: " + ", ".join(refused)))
        elif refused:
            log.error("broker refused subscriptions: %s", ", ".join(refused))
        if downgraded:
            log.error("broker granted a lower QoS than asked: %s; not healthy until it grants "
                      "QoS 1 (check the broker's max_qos)", ", ".join(downgraded))
        if shared_refused or refused or downgraded:
            return
        self._subscribed = True
        self._refusals.healthy_again()
        log.info("subscribed: %s", ", ".join(t for t, _ in self._subscriptions))

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        # Messages paho's own decoder handled (with properties, or paho's plain client).
        try:
            topic = message.topic
        except UnicodeDecodeError:
            topic = _undecodable(message._topic)
        self._take(topic, bytes(message.payload), message.mid, message.qos,
                   bool(message.retain))

    def _on_fast_message(self, topic: bytes, payload: bytes, mid: int, qos: int,
                         retain: bool, dup: bool) -> None:
        try:
            text = topic.decode()
        except UnicodeDecodeError:
            text = _undecodable(topic)
        self._take(text, payload, mid, qos, retain)

    def _take(self, topic: str, payload: bytes, mid: int, qos: int, retain: bool) -> None:
        # Runs for every message, in the thread that also decodes them: hand it over and
        # leave every check to the bridge loop.
        with self._burst_lock:
            self._burst.append(Incoming(self._generation, topic, payload, mid, qos, retain))
        if qos and not (topic and self._holds(topic)):
            self._client.ack(mid, qos)
        if not isinstance(self._client, FastPublishClient):
            self._hand_over()   # paho's plain client says nothing when a read ends

    def _hand_over(self) -> None:
        with self._burst_lock:   # held while handing over: bursts keep their order
            burst, self._burst = self._burst, []
            if len(burst) == 1:
                self._sink(burst[0])
            elif burst:
                self._sink(IncomingBurst(burst))

    def _event(self, event: LinkUp | LinkDown) -> None:
        """Link events come after every message read before them."""
        self._hand_over()
        self._sink(event)


def _undecodable(topic: bytes) -> str:
    """A topic that is not UTF-8 (MQTT requires it; mosquitto refuses such topics, another
    broker may not), its bad bytes kept as lone surrogates: the message still reaches
    the handler of its topic's kind (a rating is dead-lettered, SPEC §9), and its device
    part matches no device id. Only on this rare path: valid topics cost nothing more."""
    return topic.decode("utf-8", "surrogateescape")
