"""`hcp-bridge forget --config FILE DEVICE_ID…`: forget decommissioned devices. Their
retained `status` and `config` are cleared at the broker (an empty retained message, QoS
1, each acknowledged), and with the watcher's config also the watcher's state for them.

A running watcher needs nothing more: it subscribes to every status, takes the cleared
one as "the device left the fleet", resolves the device's open alerts and forgets it
(docs/alerts.md, *Devices leaving*). A stopped watcher gets the cleared status queued in
its session if it returns within `session_expiry_s`; beyond that, or if the broker lost
its sessions, only its state file remembers the device, so this command edits that file
too and publishes the resolve messages the watcher would have sent.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from broker_bridge.config import MqttSettings, parse_bridge_config
from broker_bridge.mqtt_setup import LinkError, configure_security
from broker_bridge.watch.alerts import alert_payload
from broker_bridge.watch.config import WatchConfig, parse_watch_config
from broker_bridge.watch.model import Alert
from broker_bridge.watch.state import StateError, save_state
from common.configschema import ConfigError, load_toml
from common.rating import DEVICE_ID_RE, InvalidRecord, decode_json_object
from common.service import EX_CONFIG, EX_USAGE

RETAINED_KINDS = ("status", "config")
REMOVED_REASON = "device removed from the fleet (retained status cleared)"
MESSAGES_PER_SESSION = 30_000


class BrokerError(Exception):
    """The broker could not be reached, refused the login, or did not answer in time."""


class RetainedEraser:
    """One short, clean MQTT session that clears retained topics: an empty retained
    message at QoS 1 per topic, and the broker's PUBACK for each before it counts.

    Its client id is its own (`hcp-forget-…`): borrowing the bridge's or the watcher's
    would take over their live session. Where the broker makes the user name the client
    id (the sample), the user must be its own too: main() refuses the services' users."""

    def __init__(self, settings: MqttSettings, client_id: str = "") -> None:
        self.settings = settings
        self.client_id = client_id or f"hcp-forget-{uuid.uuid4().hex[:12]}"

    def publish(self, messages: Sequence[tuple[str, bytes, bool]], timeout_s: float
                ) -> list[str | None]:
        """Publish (topic, payload, retain) at QoS 1; per message, in order, None when
        acknowledged, else why not. Raise BrokerError when nothing could be sent."""
        s = self.settings
        v5 = s.protocol == "5"
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
                             clean_session=None if v5 else True)
        try:
            configure_security(client, s)
        except LinkError as e:
            raise BrokerError(str(e)) from None
        client.max_inflight_messages_set(100)
        lock = threading.Lock()
        connected = threading.Event()
        refused: list[str] = []
        # PUBACKs by mid; on_publish may come before publish() returns the mid (NOTES).
        acks: dict[int, str | None] = {}
        all_acked = threading.Event()
        waiting: list[int] = []
        all_sent = False  # until then, "every mid so far is acked" is not "all acked"

        def on_connect(c: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
            if getattr(reason, "is_failure", False):
                refused.append(str(reason))
            connected.set()

        def on_publish(c: mqtt.Client, userdata: Any, mid: int, reason: Any,
                       properties: Any) -> None:
            with lock:
                acks[mid] = (f"refused by the broker: {reason}"
                             if getattr(reason, "is_failure", False) else None)
                if all_sent and set(waiting) <= set(acks):
                    all_acked.set()

        client.on_connect = on_connect
        client.on_publish = on_publish
        try:
            if v5:
                props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
                props.SessionExpiryInterval = 0
                client.connect(s.host, s.port, keepalive=s.keepalive_s, clean_start=True,
                               properties=props)
            else:
                client.connect(s.host, s.port, keepalive=s.keepalive_s)
        except (OSError, ValueError) as e:
            raise BrokerError(f"cannot reach {s.host}:{s.port}: "
                              f"{getattr(e, 'strerror', None) or e}") from None
        client.loop_start()
        try:
            if not connected.wait(timeout_s):
                raise BrokerError(f"no answer from {s.host}:{s.port} within {timeout_s:g} s")
            if refused:
                raise BrokerError(f"{s.host}:{s.port} refused the login"
                                  f"{' as ' + s.username if s.username else ''}: {refused[0]}")
            for topic, payload, retain in messages:
                info = client.publish(topic, payload, qos=1, retain=retain)
                with lock:
                    waiting.append(info.mid)
            with lock:
                all_sent = True
                if set(waiting) <= set(acks):
                    all_acked.set()
            all_acked.wait(timeout_s)
            with lock:
                return [acks[mid] if mid in acks else
                        f"not acknowledged within {timeout_s:g} s" for mid in waiting]
        finally:
            client.disconnect()
            client.loop_stop()


def retained_topics(prefix: str, device_id: str) -> list[str]:
    return [f"{prefix}/{device_id}/{kind}" for kind in RETAINED_KINDS]


def clear_retained(settings: MqttSettings, device_ids: Iterable[str], timeout_s: float
                   ) -> dict[str, list[str]]:
    """Clear every device's retained topics; device -> problems (empty when cleared)."""
    topics = [(d, t) for d in dict.fromkeys(device_ids)
              for t in retained_topics(settings.prefix, d)]
    eraser = RetainedEraser(settings)
    answers: list[str | None] = []
    # One session per chunk: message ids are 16 bits, and an id used twice in one
    # session could count one PUBACK for two messages.
    for start in range(0, len(topics), MESSAGES_PER_SESSION):
        chunk = topics[start:start + MESSAGES_PER_SESSION]
        answers += eraser.publish([(t, b"", True) for _, t in chunk], timeout_s)
    problems: dict[str, list[str]] = {d: [] for d, _ in topics}
    for (d, t), why in zip(topics, answers, strict=True):
        if why is not None:
            problems[d].append(f"{t}: {why}")
    return problems


# The watcher's state ------------------------------------------------------------------


@dataclass(frozen=True)
class Forgotten:
    """What the watcher's state held for one device."""

    device_id: str
    known: bool
    open_alerts: list[Alert]


def forget_in_state(path: Path, device_ids: Sequence[str], now: float
                    ) -> list[Forgotten]:
    """Remove the devices from the watcher's state file (atomically, keeping its owner);
    return what each one had, its open alerts resolved at `now`. Raise StateError when
    the file cannot be read or written; a missing file holds nothing."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [Forgotten(d, False, []) for d in device_ids]
    except OSError as e:
        raise StateError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        state = decode_json_object(data)
    except (InvalidRecord, ValueError, RecursionError) as e:
        # The watcher sets such a file aside at its next start; not ours to move.
        raise StateError(f"{path} is not the watcher's JSON state ({str(e)[:100]}); "
                         "left alone") from None
    out = []
    changed = False
    for device_id in device_ids:
        devices = state.get("devices")
        known = isinstance(devices, dict) and device_id in devices
        if isinstance(devices, dict) and known:
            del devices[device_id]
        open_alerts = []
        for table in ("open", "last_raised", "pending_since"):
            entries = state.get(table)
            if not isinstance(entries, dict):
                continue
            for key in [k for k in entries
                        if isinstance(k, str) and k.split("|")[1:2] == [device_id]]:
                value = entries.pop(key)
                changed = True
                if table == "open" and isinstance(value, dict):
                    open_alerts.append(_resolved(value, now))
        changed = changed or known
        out.append(Forgotten(device_id, known, [a for a in open_alerts if a is not None]))
    if changed:
        _replace_keeping_owner(path, state)
    return out


def _resolved(saved: dict[str, Any], now: float) -> Alert | None:
    alert = Alert.from_json(saved)
    if alert is None:
        return None
    return dataclasses.replace(alert, evidence={"reason": REMOVED_REASON}, resolved_at=now)


def _replace_keeping_owner(path: Path, state: dict[str, Any]) -> None:
    """Write beside the file under a name of our own (the watcher's temporary name is
    `.state.json.tmp`: never share it), give it the old file's owner (run as root, the
    new file would be root's and the watcher could no longer read it), then rename."""
    before = path.stat()
    beside = path.with_name(f".{path.name}.forget")
    save_state(beside, state)
    try:
        if os.geteuid() == 0:
            os.chown(beside, before.st_uid, before.st_gid)
        os.chmod(beside, before.st_mode & 0o777)
        os.replace(beside, path)
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as e:
        raise StateError(f"cannot replace {path}: {e.strerror or e}") from None


# The command --------------------------------------------------------------------------


def _load(path: str) -> tuple[MqttSettings, WatchConfig | None]:
    """watch.toml (it has a [watch] section) or bridge.toml; raise ConfigError."""
    p = Path(path)
    data = load_toml(p)
    if "watch" in data:
        watch = parse_watch_config(p, data)
        return watch.mqtt, watch
    return parse_bridge_config(p, data).mqtt, None


def service_ids(client_id: str) -> set[str]:
    """The client ids the service with this config connects as: the bridge or watcher,
    `hcp-bridge expired`, their standbys' watchers."""
    expired = f"{client_id[:55]}-expired"
    return {client_id, expired, f"{client_id}-standby", f"{expired}-standby"}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hcp-bridge forget",
        description="Forget decommissioned devices: clear their retained status and config "
                    "at the broker and, with the watcher's config, the watcher's state for "
                    "them (its open alerts are resolved).")
    p.add_argument("--config", required=True, metavar="FILE",
                   help="watch.toml (also edits the watcher's state) or bridge.toml")
    p.add_argument("--username", help="broker user allowed to write the devices' status "
                                      "and config (default: the config's)")
    p.add_argument("--password-file", help="file holding that user's password")
    p.add_argument("--timeout", type=float, default=10.0, metavar="S",
                   help="seconds to wait for the broker (default 10)")
    p.add_argument("device_ids", nargs="+", metavar="DEVICE_ID")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    bad = [d for d in args.device_ids if not DEVICE_ID_RE.fullmatch(d)]
    if bad:
        for d in bad:
            print(f"hcp-bridge forget: {d!r} is not a device id ([A-Za-z0-9_-]{{1,64}}); "
                  "nothing was changed", file=sys.stderr)
        return EX_USAGE
    ids = list(dict.fromkeys(args.device_ids))
    try:
        settings, watch = _load(args.config)
    except ConfigError as e:
        print("\n".join(e.problems), file=sys.stderr)
        return EX_CONFIG
    if args.username is not None:
        settings = dataclasses.replace(settings, username=args.username,
                                       password_file=args.password_file or "")
    if settings.username in service_ids(settings.client_id):
        print(f"hcp-bridge forget: not logging in as {settings.username}, a running "
              "service's own user and client id: on a broker that ties client ids to users "
              "(the sample's use_username_as_clientid) this login would take the service's "
              "session over. Give --username and --password-file of a user of its own, e.g. "
              "hcp-forget (docs/alerts.md); nothing was changed", file=sys.stderr)
        return EX_USAGE
    try:
        problems = clear_retained(settings, ids, args.timeout)
    except BrokerError as e:
        print(f"hcp-bridge forget: {e}; nothing was changed", file=sys.stderr)
        return 1
    cleared = [d for d in ids if not problems[d]]
    for d in ids:
        if problems[d]:
            print(f"{d}: NOT forgotten: " + "; ".join(problems[d]), file=sys.stderr)
    status = 0 if len(cleared) == len(ids) else 1
    if watch is None:
        for d in cleared:
            print(f"{d}: retained status and config cleared")
        return status
    return max(status, _forget_in_watcher(watch, settings, cleared, args.timeout))


def _forget_in_watcher(watch: WatchConfig, settings: MqttSettings, ids: list[str],
                       timeout_s: float) -> int:
    """Only devices whose retained status is gone: otherwise the watcher would hear of
    them again at its next start."""
    now = time.time()
    try:
        forgotten = forget_in_state(watch.watch.state_file, ids, now)
    except StateError as e:
        print(f"hcp-bridge forget: {e}", file=sys.stderr)
        for d in ids:
            print(f"{d}: retained status and config cleared; the watcher's state not edited")
        return 1
    resolves, undescribed = resolve_messages(watch, settings.prefix, forgotten, now)
    failed: list[str] = []
    if undescribed:
        failed.append(f"{undescribed} open alert(s) in the state could not be described")
    if resolves:
        try:
            answers = RetainedEraser(settings).publish(resolves, timeout_s)
            failed = [why for why in answers if why]
        except BrokerError as e:
            failed = [str(e)]
    for f in forgotten:
        what = ("not in the watcher's state" if not f.known and not f.open_alerts else
                "removed from the watcher's state" + (
                    f", {len(f.open_alerts)} open alert(s) resolved: "
                    + ", ".join(a.kind for a in f.open_alerts) if f.open_alerts else ""))
        print(f"{f.device_id}: retained status and config cleared; {what}")
    if failed:
        print(f"hcp-bridge forget: the resolve messages on {settings.prefix}/alerts were not "
              f"all published ({failed[0]}); the alerts are closed in the watcher's state",
              file=sys.stderr)
        return 1
    return 0


def resolve_messages(watch: WatchConfig, prefix: str, forgotten: Iterable[Forgotten],
                     now: float) -> tuple[list[tuple[str, bytes, bool]], int]:
    """The resolve message of each open alert, as the watcher would have sent it, and
    how many could not be made (a state file from another version, hand-edited)."""
    messages: list[tuple[str, bytes, bool]] = []
    undescribed = 0
    for f in forgotten:
        for a in f.open_alerts:
            try:
                tz = watch.calendar.for_device(a.device_id, a.hall_id).tz
                payload = alert_payload(a, watch.mqtt.client_id, now, tz,
                                        watch.watch.window_names.get(a.device_id))
            except (TypeError, ValueError, KeyError, OverflowError, OSError):
                undescribed += 1
                continue
            messages.append((f"{prefix}/alerts", payload, False))
    return messages, undescribed
