"""The watcher against a real mosquitto with scripted device traffic.

In this process, with a virtual wall clock (so minutes pass in milliseconds): every
alert kind is raised once on {prefix}/alerts, is not raised again by re-sent ratings or
within its cooldown, resolves with the same alert_id, and the silent rule stays quiet
for a hall that is closed. As a subprocess (`python -m broker_bridge watch`): a bad
config exits 78, SIGTERM stops it within 5 s, a restart does not raise what is still
open, the webhook gets the alerts, and systemd hears READY=1.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from broker_bridge.watch.config import load_watch_config
from broker_bridge.watch.service import WatchService
from tests.support.bridge import REPO, toml_text
from tests.support.mosquitto import Mosquitto
from tests.support.ratings import encode, make_rating

PREFIX = "hcp/v1"
SHANGHAI = ZoneInfo("Asia/Shanghai")
MONDAY_10 = datetime(2026, 11, 23, 10, 0, tzinfo=SHANGHAI).timestamp()


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def wait_for(condition: Callable[[], Any], timeout: float = 5.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what or condition}")


class Devices:
    """One MQTT connection that speaks for many devices and listens to the alerts."""

    def __init__(self, broker: Mosquitto) -> None:
        self.alerts: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                   client_id=f"devices-{uuid.uuid4().hex[:8]}",
                                   protocol=mqtt.MQTTv5)
        self._client.on_message = self._on_message
        subscribed = threading.Event()
        self._client.on_subscribe = lambda *a: subscribed.set()
        self._client.connect(broker.host, broker.port)
        self._client.loop_start()
        self._client.subscribe(f"{PREFIX}/alerts", qos=1)
        assert subscribed.wait(5)

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.alerts.append(json.loads(message.payload))

    def publish(self, device: str, kind: str, body: dict[str, Any] | bytes,
                retain: bool = False) -> None:
        payload = body if isinstance(body, bytes) else encode(body)
        info = self._client.publish(f"{PREFIX}/{device}/{kind}", payload,
                                    qos=0 if kind == "telemetry" else 1, retain=retain)
        info.wait_for_publish(5)

    def rating(self, device: str, level: int, at: float, **fields: Any) -> dict[str, Any]:
        record = make_rating(device, level, rated_at=iso(at), **fields)
        self.publish(device, "rating", record)
        return record

    def telemetry(self, device: str, **fields: Any) -> None:
        self.publish(device, "telemetry", {"backlog": 0, "oldest_pending_s": None,
                                           "clock_synced": True, **fields})

    def of(self, kind: str, device: str | None = None, resolved: bool | None = None
           ) -> list[dict[str, Any]]:
        with self._lock:
            return [a for a in self.alerts if a["kind"] == kind
                    and (device is None or a["device_id"] == device)
                    and (resolved is None or a["resolved"] is resolved)]

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


class VirtualClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def devices(mosquitto: Mosquitto) -> Iterator[Devices]:
    d = Devices(mosquitto)
    yield d
    d.close()


def watch_config(tmp_path: Path, broker: Mosquitto, **sections: dict[str, Any]) -> Path:
    config: dict[str, dict[str, Any]] = {
        "mqtt": {"host": broker.host, "port": broker.port, "client_id": "watch-test"},
        "watch": {"state_file": str(tmp_path / "watch-state.json"), "save_every_s": 0.2},
        "rules.bad_burst": {"count": 3, "within_min": 10, "cooldown_min": 60},
        "rules.low_satisfaction": {"last_n": 5, "min_ratings": 5, "below_pct": 80},
        "rules.gaming": {"max_ratings": 5, "within_s": 60, "last_n": 5, "min_ratings": 5,
                         "spontaneous_pct": 60},
        "rules.silent": {"after_min": 15},
        "rules.backlog": {"max_backlog": 50},
        "rules.clock": {"after_min": 30},
        "halls.HG01": {"open": ["mon-fri 08:30-17:30"]},
        "halls.HG09": {"open": ["sun 09:00-10:00"]},
        "log": {"level": "debug"},
    }
    for name, keys in sections.items():
        config.setdefault(name.replace("__", "."), {}).update(keys)
    path = tmp_path / "watch.toml"
    path.write_text(toml_text(config))
    return path


class RunningWatcher:
    def __init__(self, config_file: Path, clock: VirtualClock) -> None:
        self.clock = clock
        self.service = WatchService(load_watch_config(config_file), clock=clock, tick_s=0.01)
        self.thread = threading.Thread(target=self.service.run, daemon=True)
        self.thread.start()
        wait_for(lambda: self.service.healthy, what="watcher subscribed")

    def advance(self, seconds: float, step: float = 60.0) -> None:
        """Move the virtual clock, letting the watcher tick at least once per step."""
        end = self.clock.now + seconds
        while self.clock.now < end:
            self.clock.now = min(end, self.clock.now + step)
            self.settle()

    def settle(self) -> None:
        """Wait for two ticks: everything queued before has been handled."""
        ticks = self.service.ticks
        wait_for(lambda: self.service.ticks >= ticks + 2, what="watcher ticks")

    def wait_telemetry(self, devices: Iterable[str]) -> None:
        """Wait until the watcher has handled telemetry sent by each device at the current
        virtual time: time must not move on while a message is still at the broker."""
        for device in devices:
            def heard(device: str = device) -> bool:
                track = self.service.watcher.devices.get(device)
                return track is not None and track.last_telemetry == self.clock.now
            wait_for(heard, what=f"telemetry of {device}")

    def seen(self, device: str, rating_id: str) -> bool:
        track = self.service.watcher.devices.get(device)
        return track is not None and track.counted(rating_id)

    def stop(self) -> None:
        self.service.request_stop()
        self.thread.join(5)
        assert not self.thread.is_alive()


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(MONDAY_10)


def test_every_alert_kind_once_with_cooldown_and_resolution(
        tmp_path: Path, mosquitto: Mosquitto, devices: Devices, clock: VirtualClock) -> None:
    watcher = RunningWatcher(watch_config(tmp_path, mosquitto), clock)
    try:
        # Bad-rating burst at W03, then every one of those ratings re-sent twice.
        burst = [devices.rating("421100-HG01-W03", level, clock.now, reason=None)
                 for level in (1, 2, 1)]
        wait_for(lambda: devices.of("bad_rating_burst"), what="burst alert")
        for _ in range(2):
            for record in burst:
                devices.publish("421100-HG01-W03", "rating", record)
        wait_for(lambda: watcher.service.watcher.duplicates == 6, what="duplicates seen")
        # Low satisfaction at W08: 3 of 5 good = 60 %.
        for i, level in enumerate((5, 1, 4, 2, 5)):
            devices.rating("421100-HG01-W08", level, clock.now - 600 + i * 120,
                           reason=None)
        # Possible gaming at W07: six ratings within a minute.
        for i in range(6):
            devices.rating("421100-HG01-W07", 5, clock.now + i)
        # Backlog at W05, unsynced clock at W06, silence at W09 (open hall) and W10
        # (hall HG09, open only on Sunday mornings).
        devices.telemetry("421100-HG01-W05", backlog=99, oldest_pending_s=4000)
        devices.telemetry("421100-HG01-W06", clock_synced=False)
        devices.telemetry("421100-HG01-W09")
        devices.telemetry("421100-HG09-W10")
        devices.publish("421100-HG09-W10", "status", {"online": False}, retain=True)
        wait_for(lambda: devices.of("backlog") and devices.of("possible_gaming")
                 and devices.of("low_satisfaction"), what="backlog, gaming, satisfaction")

        # 35 minutes pass (W03's burst slides out of its window after ten); W09 and
        # W10 keep quiet, W03 … W08 keep sending telemetry.
        for _ in range(7):
            watcher.advance(300)
            for n in (3, 5, 6, 7, 8):
                devices.telemetry(f"421100-HG01-W0{n}", backlog=99 if n == 5 else 0,
                                  oldest_pending_s=4000 if n == 5 else None,
                                  clock_synced=n != 6)
            watcher.wait_telemetry(f"421100-HG01-W0{n}" for n in (3, 5, 6, 7, 8))
        watcher.settle()
        assert len(devices.of("device_silent", "421100-HG01-W09", resolved=False)) == 1
        assert devices.of("device_silent", "421100-HG09-W10") == []  # hall closed
        wait_for(lambda: devices.of("clock_unsynced"), what="clock alert")
        wait_for(lambda: devices.of("bad_rating_burst", resolved=True), what="burst resolved")

        # The problems clear: each alert resolves once, with its own alert_id.
        devices.telemetry("421100-HG01-W05", backlog=0)
        devices.publish("421100-HG01-W06", "event", {"event": "clock_synced",
                                                     "at": iso(clock.now)})
        devices.telemetry("421100-HG01-W09")
        for i in range(5):
            devices.rating("421100-HG01-W08", 5, clock.now + i)
        watcher.advance(120)
        for kind in ("backlog", "clock_unsynced", "device_silent", "low_satisfaction",
                     "possible_gaming"):
            wait_for(functools.partial(devices.of, kind, resolved=True), what=f"{kind} resolved")

        for kind in ("bad_rating_burst", "low_satisfaction", "possible_gaming", "backlog",
                     "clock_unsynced", "device_silent"):
            raised = devices.of(kind, resolved=False)
            resolved = devices.of(kind, resolved=True)
            assert len(raised) == 1, (kind, raised)
            assert [a["alert_id"] for a in resolved] == [raised[0]["alert_id"]]
        gaming = devices.of("possible_gaming", resolved=False)[0]
        assert gaming["evidence"]["condition"] == "rating_rate"
        burst_alert = devices.of("bad_rating_burst", resolved=False)[0]
        assert burst_alert["device_id"] == "421100-HG01-W03"
        assert (burst_alert["hall_id"], burst_alert["window_id"]) == ("HG01", "W03")
        assert burst_alert["severity"] == "warning" and burst_alert["evidence"]["bad_ratings"] == 3
        assert burst_alert["first_seen"] == iso(MONDAY_10)
        assert devices.of("device_silent")[0]["severity"] == "critical"

        # Every problem comes back (10:37) within its cooldown: nothing is raised.
        for level in (1, 1, 2):
            devices.rating("421100-HG01-W03", level, clock.now, reason=None)
        for i in range(6):
            devices.rating("421100-HG01-W07", 5, clock.now + i)
        for level in (1, 2):
            devices.rating("421100-HG01-W08", level, clock.now, reason=None)

        def run_until(hh: int, mm: int) -> None:
            """Time passes; W03 … W08 keep sending telemetry (W05 a backlog, W06 an
            unsynchronised clock), W09 and W10 stay silent."""
            until = datetime(2026, 11, 23, hh, mm, tzinfo=SHANGHAI).timestamp()
            while clock.now < until:
                for n in (3, 5, 6, 7, 8):
                    devices.telemetry(f"421100-HG01-W0{n}", backlog=99 if n == 5 else 0,
                                      clock_synced=n != 6)
                watcher.wait_telemetry(f"421100-HG01-W0{n}" for n in (3, 5, 6, 7, 8))
                watcher.advance(min(300, until - clock.now), step=300)

        def raised_per_kind() -> dict[str, int]:
            """Alerts raised per kind at the window that has that problem (W03's six bad
            ratings also make a first low_satisfaction alert there: another problem)."""
            return {kind: len(devices.of(kind, f"421100-HG01-W0{n}", resolved=False))
                    for kind, n in (("bad_rating_burst", 3), ("low_satisfaction", 8),
                                    ("possible_gaming", 7), ("backlog", 5),
                                    ("clock_unsynced", 6), ("device_silent", 9))}

        run_until(10, 59)
        assert raised_per_kind() == dict.fromkeys(raised_per_kind(), 1)
        # Cooldowns end: what still holds is raised again (backlog at 11:00, W09's
        # silence at its first alert + 60 min, satisfaction at 14:00, the clock at its
        # first alert + 240 min); the burst and the gaming burst are over by then.
        run_until(11, 20)
        assert raised_per_kind() == {"bad_rating_burst": 1, "low_satisfaction": 1,
                                     "possible_gaming": 1, "backlog": 2, "clock_unsynced": 1,
                                     "device_silent": 2}
        run_until(14, 35)
        assert raised_per_kind() == {"bad_rating_burst": 1, "low_satisfaction": 2,
                                     "possible_gaming": 1, "backlog": 2, "clock_unsynced": 2,
                                     "device_silent": 2}
        assert {a["device_id"] for a in devices.of("device_silent")} == {"421100-HG01-W09"}
        second = devices.of("low_satisfaction", "421100-HG01-W08", resolved=False)[1]
        assert second["first_seen"] < iso(datetime(2026, 11, 23, 11, tzinfo=SHANGHAI).timestamp())
        assert iso(datetime(2026, 11, 23, 14, tzinfo=SHANGHAI).timestamp()) <= \
            second["raised_at"] <= iso(datetime(2026, 11, 23, 14, 5, tzinfo=SHANGHAI).timestamp())
    finally:
        watcher.stop()


def test_hostile_messages_are_skipped(tmp_path: Path, mosquitto: Mosquitto,
                                      devices: Devices, clock: VirtualClock) -> None:
    watcher = RunningWatcher(watch_config(tmp_path, mosquitto), clock)
    try:
        for kind, payload in (("rating", b"\xff\xfe"), ("rating", b"[" * 100_000),
                              ("rating", encode(make_rating("X", 9))),
                              ("rating", encode(make_rating("Y"))),  # another device's id
                              ("status", b'{"online": "yes"}'), ("telemetry", b"null"),
                              ("telemetry", b'{"backlog": "lots", "oldest_pending_s": 1e400}'),
                              ("event", b'{"event": ["x"]}'), ("event", b"x" * 100_000),
                              ("telemetry", b'{"backlog": 1' + b"0" * 400 + b"}"),
                              ("telemetry", b'{"backlog": 1, "backlog": 900}'),
                              ("status", b'{"online": false, "online": true}'),
                              ("rating", encode(make_rating(
                                  "X", rated_at="0001-01-01T00:00:00+14:00"))),
                              ("rating", encode(make_rating(
                                  "X", rated_at="9999-12-31T23:59:59-14:00")))):
            devices.publish("X", kind, payload)
        last = devices.rating("421100-HG01-W03", 5, clock.now)
        wait_for(lambda: watcher.seen("421100-HG01-W03", last["rating_id"]))
        assert watcher.thread.is_alive() and devices.alerts == []
        assert watcher.service.watcher.devices["X"].ratings == []
        assert watcher.service.watcher.devices["X"].backlog is None
        assert watcher.service.failures == 0   # each refused by a check, none contained
    finally:
        watcher.stop()


def test_a_message_that_makes_the_core_raise_is_contained(
        tmp_path: Path, mosquitto: Mosquitto, devices: Devices, clock: VirtualClock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from broker_bridge.watch.model import RatingSeen
    from broker_bridge.watch.rules import Watcher

    real = Watcher.handle

    def handle(self: Watcher, event: Any) -> Any:
        if isinstance(event, RatingSeen) and event.device_id == "X-raise":
            raise ArithmeticError("injected")
        return real(self, event)

    monkeypatch.setattr(Watcher, "handle", handle)
    watcher = RunningWatcher(watch_config(tmp_path, mosquitto), clock)
    try:
        devices.rating("X-raise", 5, clock.now)
        last = devices.rating("421100-HG01-W03", 5, clock.now)
        wait_for(lambda: watcher.seen("421100-HG01-W03", last["rating_id"]))
        assert watcher.service.failures == 1
        assert watcher.thread.is_alive() and watcher.service.healthy
    finally:
        watcher.stop()


# The process --------------------------------------------------------------------------


class WebhookSink:
    """A loopback HTTP server that records the JSON bodies posted to it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                sink.bodies.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_watch(config: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start `hcp-bridge watch` and wait until it has subscribed (its log says so)."""
    log = config.with_name("watch.log")
    offset = log.stat().st_size if log.exists() else 0
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "broker_bridge", "watch", "--config", str(config)],
            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
            stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    wait_for(lambda: b"subscribed: " in log.read_bytes()[offset:] or process.poll(),
             timeout=10, what="watcher subscribed")
    assert process.poll() is None, log.read_text()
    return process


def test_bad_config_exits_78_with_one_line_per_problem(tmp_path: Path) -> None:
    config = tmp_path / "watch.toml"
    config.write_text(toml_text({
        "watch": {"state_file": str(tmp_path / "nodir" / "state.json"), "colour": "red",
                  "timezone": "Mars/Olympus"},
        "rules.bad_burst": {"count": 0},
        "rules.gaming": {"last_n": 5, "min_ratings": 9},
        "rules.sunspots": {"enabled": True},
        "halls.HG01": {"open": ["mon-fri 8:30-17:30"], "holidays": ["soon"]},
    }))
    done = subprocess.run([sys.executable, "-m", "broker_bridge", "watch", "--config",
                           str(config)], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=30)
    assert done.returncode == 78
    lines = done.stderr.strip().splitlines()
    assert all(line.startswith(f"{config}: ") for line in lines), lines
    for expected in ("[watch] colour: unknown key", "[watch] timezone: unknown time zone",
                     "[watch] state_file: directory", "[rules.bad_burst] count: must be at "
                     "least 1", "[rules.gaming] min_ratings: must be at most last_n",
                     "[rules.sunspots]: unknown rule", "[halls.HG01] open: 'mon-fri "
                     "8:30-17:30'", "[halls.HG01] holidays: 'soon'"):
        assert sum(expected in line for line in lines) == 1, (expected, lines)
    assert len(lines) == 8 and "Traceback" not in done.stderr


def test_process_restart_keeps_open_alerts_and_quiet_closed_halls(
        tmp_path: Path, mosquitto: Mosquitto, devices: Devices) -> None:
    today = datetime.now(SHANGHAI).date()
    closed = [str(today.fromordinal(today.toordinal() + d)) for d in (-1, 0, 1)]
    hook = WebhookSink()
    config = watch_config(
        tmp_path, mosquitto,
        watch={"webhook_url": hook.url},
        rules__silent={"after_min": 0.02},
        halls__HG01={"open": ["mon-sun 00:00-24:00"]},
        halls__HG09={"open": ["mon-sun 00:00-24:00"], "holidays": closed})
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(10)
    process = start_watch(config, {"NOTIFY_SOCKET": str(tmp_path / "notify.sock")})
    try:
        assert notify.recv(256) == b"READY=1"
        # W09 (open hall) and W10 (a hall on holiday) fall silent after one telemetry;
        # W03, in the hall on holiday too, has a burst of bad ratings (not an hours rule).
        devices.telemetry("421100-HG01-W09")
        devices.telemetry("421100-HG09-W10")
        burst = [devices.rating("421100-HG09-W03", 1, time.time()) for _ in range(3)]
        wait_for(lambda: devices.of("bad_rating_burst") and devices.of("device_silent"),
                 what=f"burst and silent alerts, got {devices.alerts}")
        time.sleep(1.5)  # 1.2 s of silence is the limit: W10 would be overdue by now

        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(5) == 0
        assert time.monotonic() - started < 5
        assert b"STOPPING=1" in notify.recv(256)

        process = start_watch(config)
        devices.rating("421100-HG09-W03", 2, time.time())   # the burst goes on
        for record in burst:
            devices.publish("421100-HG09-W03", "rating", record)
        devices.telemetry("421100-HG01-W09")                  # W09 is back
        wait_for(lambda: devices.of("device_silent", resolved=True), what="silent resolved")
        time.sleep(1.5)  # W09 falls silent again, within the cooldown of its first alert
        assert len(devices.of("bad_rating_burst")) == 1       # still open: not raised again
        assert [(a["device_id"], a["resolved"]) for a in devices.of("device_silent")] == [
            ("421100-HG01-W09", False), ("421100-HG01-W09", True)]
        wait_for(lambda: len(hook.bodies) == 3, what="webhook posts")
        assert sorted((b["kind"], b["resolved"]) for b in hook.bodies) == [
            ("bad_rating_burst", False), ("device_silent", False), ("device_silent", True)]
        process.send_signal(signal.SIGTERM)
        assert process.wait(5) == 0
        state = json.loads((tmp_path / "watch-state.json").read_text())
        assert list(state["open"]) == ["bad_rating_burst|421100-HG09-W03|"]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
        hook.close()
        notify.close()
