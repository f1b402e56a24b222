"""The device's MQTT connection on paho-mqtt 2.x: connect, reconnect, publish, receive.

One network thread owns the paho client: it connects, reconnects in one visible loop
with exponential backoff and full jitter, writes what the daemon asked to publish and
turns what it sees into events on the daemon's queue. The daemon never calls paho
(two threads writing one TLS socket corrupt it); paho errors stay in this module.
"""

from __future__ import annotations

import json
import logging
import select
import signal
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from device.clock import iso_utc
from device.config import MqttSection
from device.mqtt_client import Backoff, Credentials, new_client, refusal_hint
from device.mqtt_events import MqttDown, MqttMessage, MqttPubAck, MqttUp

__all__ = ["Backoff", "MqttDown", "MqttLink", "MqttMessage", "MqttPubAck", "MqttUp"]

log = logging.getLogger("hcp.mqtt")

MAX_INCOMING = 256 * 1024
# A refused receipt/config subscription is asked for again on the same connection after
# this long, doubling: a broker may refuse for a while (NATS times out creating the
# consumer behind a subscription under a burst of connections), and without it the
# device would get no receipt until it reconnects, re-sending every resend_after_s.
RESUBSCRIBE_FIRST_S = 2.0
RESUBSCRIBE_MAX_S = 60.0
# A connection that lasted this long was a real one: the next outage starts its backoff
# from the beginning. Shorter ones (a broker that accepts and drops us at once, two
# devices configured with the same id kicking each other out) keep backing off.
STABLE_AFTER_S = 10.0
# While the broker stays unreachable, say so again this often (the first failure and
# every change of reason are logged at once).
REMIND_EVERY_S = 600.0
# On a clean stop, wait this long for the broker to take the offline status.
OFFLINE_STATUS_WAIT_S = 1.0
TOPICS = ("rating", "event", "status", "telemetry", "receipt", "config")


@dataclass(frozen=True)
class _Request:
    topic: str
    data: bytes
    qos: int
    retain: bool
    ticket: int | None


class MqttLink:
    """The device's side of SPEC §7's connection.

    Thread-safe for the daemon: `start`, `publish`, `stop`, and reading `connected`,
    `connects`, `last_error`. Everything else runs on the link's own thread.
    """

    def __init__(self, cfg: MqttSection, device_id: str, version: str,
                 emit: Callable[[Any], None], monotonic: Callable[[], float],
                 wall: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.wall = wall   # the daemon's clock seam: the status's `since`
        self.device_id = device_id
        self.version = version
        self.emit = emit
        self.monotonic = monotonic
        base = f"{cfg.prefix}/{device_id}"
        self.topics = {k: f"{base}/{k}" for k in TOPICS}
        self.connected = False
        self.connects = 0                   # successful connections since start
        self.last_error: str | None = None  # why the last attempt failed, for humans
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._outgoing: deque[_Request] = deque()   # guarded by _outgoing_lock
        self._outgoing_lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._tickets: dict[int, int] = {}  # paho mid -> the daemon's ticket
        self._offline_mid: int | None = None
        self._offline_acked = False
        self._credentials = Credentials(cfg)
        self._resubscribe_at: float | None = None   # link thread only
        self._resubscribe_delay = RESUBSCRIBE_FIRST_S
        # What the retained status says besides online/version/since (the clerk logged
        # in): set by the daemon (status_fields), guarded by _outgoing_lock.
        self._status_fields: dict[str, Any] = {}
        self._status_due = False
        self._since = ""                            # link thread only: this connection's
        self.client = self._make_client()

    # --- setup (link thread, except _make_client) ------------------------------------

    def _make_client(self) -> mqtt.Client:
        client = new_client(self.cfg, self.device_id, self.topics["status"])
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        return client

    def _prepare(self) -> str | None:
        return self._credentials.apply(self.client)

    # --- called from the daemon's thread -------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mqtt", daemon=True)
        self._thread.start()

    def publish(self, kind: str, payload: dict[str, Any], qos: int = 1, retain: bool = False,
                ticket: int | None = None) -> None:
        """Queue a publish for the link's thread. With a `ticket`, an `MqttPubAck` carrying
        it follows once the broker answered; while disconnected, ticketed publishes are
        dropped (the daemon re-sends them after the next `MqttUp`)."""
        data = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        with self._outgoing_lock:
            self._outgoing.append(_Request(self.topics[kind], data, qos, retain, ticket))
        self._wake()

    def status_fields(self, fields: dict[str, Any]) -> None:
        """What the retained status carries besides online, version and since (the clerk
        logged in: `{"staff": …}`): published with every connect, and again at once when
        connected. The daemon calls it only when they change."""
        with self._outgoing_lock:
            self._status_fields = dict(fields)
            self._status_due = True
        self._wake()

    def stop(self, timeout: float = 2.0) -> None:
        """Publish the retained offline status, disconnect cleanly, stop the thread."""
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("MQTT link did not stop within %.1f s", timeout)
        for s in (self._wake_r, self._wake_w):
            s.close()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # already awake (buffer full) or stopped

    # --- the reconnect loop (link thread) --------------------------------------------------

    def _run(self) -> None:
        # Process signals belong to the main thread: let the kernel deliver them there,
        # where they wake the daemon's loop at once.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        backoff = Backoff()
        reported: str | None = None
        reported_at = 0.0
        failures = 0
        while not self._stop.is_set():
            started, connects = self.monotonic(), self.connects
            try:
                why = self._prepare() or self._session()
            except Exception as e:  # the link thread must never die: log, back off, retry
                log.exception("MQTT link failed unexpectedly")
                why = f"unexpected error: {e!r}"
            if self._stop.is_set():
                break
            self.last_error = why
            now = self.monotonic()
            if now - started >= STABLE_AFTER_S:
                backoff.reset()
            if self.connects != connects:
                # It was up, and the daemon logged the loss: report the next failure afresh.
                failures, reported = 0, None
            else:
                failures += 1
                if why != reported or now - reported_at >= REMIND_EVERY_S:
                    serious = why.startswith(("broker refused", "TLS", "cannot read"))
                    log.log(logging.ERROR if serious else logging.WARNING,
                            "broker %s:%d: %s (attempt %d; retrying with backoff)",
                            self.cfg.host, self.cfg.port, why, failures)
                    reported, reported_at = why, now
            self._stop.wait(backoff.next())
        self._shutdown_client()

    def _session(self) -> str:
        """One connection from CONNECT to its end; returns why it ended."""
        cfg = self.cfg
        self._tickets.clear()
        self._drop_stale_requests()
        self.last_error = None
        try:
            if cfg.protocol == "5":
                props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
                props.SessionExpiryInterval = cfg.session_expiry_s
                rc = self.client.connect(cfg.host, cfg.port, cfg.keepalive_s,
                                         clean_start=False, properties=props)
            else:
                rc = self.client.connect(cfg.host, cfg.port, cfg.keepalive_s)
        except ssl.SSLCertVerificationError as e:
            return f"TLS: server certificate not trusted: {e.verify_message}"
        except ssl.SSLError as e:
            return f"TLS handshake failed: {e.reason or e}"
        except (OSError, ValueError) as e:
            return str(e) or type(e).__name__
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return mqtt.error_string(rc)
        why = self._serve()
        if self.connected:
            self.connected = False
            self.emit(MqttDown(why, self.monotonic()))
        if self._stop.is_set():
            return "stopped"
        return self.last_error or why

    def _serve(self) -> str:
        """Pump the socket until the connection ends (or a clean stop finishes)."""
        client = self.client
        stop_deadline: float | None = None
        while True:
            sock = client.socket()
            if sock is None:
                # Before CONNACK: the broker hung up, or never answered within keepalive_s.
                return "connection lost" if self.connected else \
                    "no answer to CONNECT (connection closed before the broker accepted it)"
            if self._stop.is_set():
                if stop_deadline is None:
                    if self.connected:
                        self._send_outgoing()   # the last events go before the goodbye
                    stop_deadline = self._begin_stop()
                if self._offline_acked or not self.connected or \
                        time.monotonic() >= stop_deadline:
                    client.disconnect()   # writes DISCONNECT: the broker drops the will
                    return "stopped"
            if self.connected:
                self._maybe_resubscribe()
                self._send_outgoing()
                if self._status_due:
                    self._publish_status(online=True)
            timeout = 1.0
            if isinstance(sock, ssl.SSLSocket) and sock.pending():
                timeout = 0.0  # bytes already decrypted: poll() would not see them
            # poll, not select: select() cannot watch a descriptor numbered 1024 or more,
            # which a process running hundreds of links (hcp-sim fleet) soon has.
            poller = select.poll()
            try:
                poller.register(self._wake_r, select.POLLIN)
                poller.register(sock, select.POLLIN
                                | (select.POLLOUT if client.want_write() else 0))
                ready = dict(poller.poll(timeout * 1000))
                sock_events = ready.get(sock.fileno(), 0)
            except (OSError, ValueError):
                return "connection lost"
            if ready.get(self._wake_r.fileno(), 0) & select.POLLIN:
                self._drain_wake()
            if sock_events & select.POLLNVAL:
                return "connection lost"
            rc = MQTTErrorCode.MQTT_ERR_SUCCESS
            if sock_events & (select.POLLIN | select.POLLHUP | select.POLLERR) or \
                    timeout == 0.0:
                rc = client.loop_read()
            if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and client.socket() is not None and \
                    (sock_events & select.POLLOUT or client.want_write()):
                rc = client.loop_write()
            if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and client.socket() is not None:
                rc = client.loop_misc()   # keepalive: pings, and a dead broker is noticed
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return self.last_error or mqtt.error_string(rc)

    def _begin_stop(self) -> float:
        if self.connected:
            self._since = iso_utc(self.wall())
            self._offline_mid = self._publish_status(online=False)
        return time.monotonic() + OFFLINE_STATUS_WAIT_S

    def _publish_status(self, online: bool) -> int:
        """The retained status (SPEC §7, with docs/spec-proposals.md P4's fields); offline,
        those fields are null: a device that is gone vouches for nobody at its window."""
        with self._outgoing_lock:
            fields, self._status_due = self._status_fields, False
        if not online:
            fields = dict.fromkeys(fields)
        payload = {"online": online, "version": self.version, "since": self._since, **fields}
        info = self.client.publish(
            self.topics["status"],
            json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8"),
            qos=1, retain=True)
        return info.mid

    def _send_outgoing(self) -> None:
        while True:
            with self._outgoing_lock:
                if not self._outgoing:
                    return
                req = self._outgoing.popleft()
            try:
                info = self.client.publish(req.topic, req.data, qos=req.qos, retain=req.retain)
            except (ValueError, RuntimeError) as e:
                log.error("cannot publish to %s: %s", req.topic, e)
                if req.ticket is not None:
                    self.emit(MqttPubAck(req.ticket, False, str(e), self.monotonic()))
                continue
            if req.ticket is not None and req.qos > 0:
                self._tickets[info.mid] = req.ticket

    def _drop_stale_requests(self) -> None:
        """On connection loss: ratings are re-sent by the daemon after MqttUp and telemetry
        is stale by then; events and other QoS ≥ 1 messages wait for the next connection."""
        with self._outgoing_lock:
            kept = [r for r in self._outgoing if r.ticket is None and r.qos > 0]
            self._outgoing.clear()
            self._outgoing.extend(kept)

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _shutdown_client(self) -> None:
        try:
            if self.client.socket() is not None:
                self.client.disconnect()
        except (OSError, ValueError, RuntimeError):
            pass

    # --- paho callbacks (link thread: bookkeeping and emit only) ---------------------------

    def _on_connect(self, client: mqtt.Client, _ud: Any, flags: Any, reason: Any,
                    _props: Any) -> None:
        if reason.is_failure:
            self.last_error = f"broker refused the connection: {reason}{refusal_hint(str(reason))}"
            return
        self.connected = True
        self.connects += 1
        self._resubscribe_at, self._resubscribe_delay = None, RESUBSCRIBE_FIRST_S
        self._subscribe(client)
        self._since = iso_utc(self.wall())
        self._publish_status(online=True)
        log.info("connected to broker %s:%d%s (session present: %s)", self.cfg.host,
                 self.cfg.port, " over TLS" if self.cfg.tls else "",
                 bool(flags.session_present))
        self.emit(MqttUp(bool(flags.session_present), self.monotonic()))

    def _subscribe(self, client: mqtt.Client) -> None:
        client.subscribe([(self.topics["receipt"], 1), (self.topics["config"], 1)])

    def _maybe_resubscribe(self) -> None:
        if self._resubscribe_at is not None and time.monotonic() >= self._resubscribe_at:
            self._resubscribe_at = None
            self._subscribe(self.client)

    def _on_subscribe(self, _c: mqtt.Client, _ud: Any, _mid: int, reason_codes: Any,
                      _props: Any) -> None:
        refused = [str(rc) for rc in reason_codes if getattr(rc, "is_failure", False)]
        if not refused:
            if self._resubscribe_delay > RESUBSCRIBE_FIRST_S:
                log.info("broker granted the receipt and config subscriptions")
            self._resubscribe_delay = RESUBSCRIBE_FIRST_S
            return
        log.warning("broker refused the receipt/config subscription (%s): receipts cannot "
                    "arrive; asking again in %g s", ", ".join(refused), self._resubscribe_delay)
        self._resubscribe_at = time.monotonic() + self._resubscribe_delay
        self._resubscribe_delay = min(self._resubscribe_delay * 2, RESUBSCRIBE_MAX_S)

    def _on_disconnect(self, _c: mqtt.Client, _ud: Any, _flags: Any, reason: Any,
                       _props: Any) -> None:
        self._drop_stale_requests()
        if self.connected:
            self.connected = False
            why = str(reason)
            if why in ("Success", "Normal disconnection", "Unspecified error"):
                why = "connection lost"
            self.last_error = why
            self.emit(MqttDown(why, self.monotonic()))

    def _on_publish(self, _c: mqtt.Client, _ud: Any, mid: int, reason: Any,
                    _props: Any) -> None:
        failed = bool(getattr(reason, "is_failure", False))
        if mid == self._offline_mid:
            self._offline_acked = True
        ticket = self._tickets.pop(mid, None)
        if ticket is not None:
            self.emit(MqttPubAck(ticket, not failed, str(reason), self.monotonic()))

    def _on_message(self, _c: mqtt.Client, _ud: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == self.topics["receipt"]:
            kind = "receipt"
        elif msg.topic == self.topics["config"]:
            kind = "config"
        else:
            return
        if len(msg.payload) > MAX_INCOMING:
            log.warning("ignoring %d-byte message on %s (limit %d)", len(msg.payload),
                        msg.topic, MAX_INCOMING)
            if kind == "config":  # the platform team must learn it was refused
                self.emit(MqttMessage(kind, b"", bool(msg.retain), self.monotonic(),
                                      oversize=len(msg.payload)))
            return
        self.emit(MqttMessage(kind, bytes(msg.payload), bool(msg.retain), self.monotonic()))
