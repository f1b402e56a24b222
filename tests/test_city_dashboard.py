"""The hall dashboard (GET /): `hcp-platform run` as a subprocess following a real
mosquitto, a bridge and a sim device; a rating pressed on the device appears on the page
in a real headless Chromium (server-sent events), on a hall screen and on a phone; a
token beyond loopback."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.publish import single

from city_platform.config import PlatformConfig, load
from city_platform.hall import Hall
from city_platform.server import PlatformServer
from city_platform.store import Store
from common.configschema import ConfigError
from tests.support import browser
from tests.support.bridge import REPO, BridgeProcess
from tests.support.device import DeviceProcess
from tests.support.mosquitto import Mosquitto, free_port

browser_page = browser.browser_page
DEVICE = "421100-HG01-W03"


class PlatformProcess:
    def __init__(self, workdir: Path, broker: Mosquitto) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.config = workdir / "platform.toml"
        self.config.write_text(
            f'[store]\nurl = "sqlite:///{workdir / "ratings.db"}"\n'
            f'[http]\nlisten = "127.0.0.1:{self.port}"\n'
            f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
            f'[followups]\ncheck_s = 0.5\n', encoding="utf-8")
        self.log = workdir / "platform.log"
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "city_platform", "run", "--config", str(self.config)],
                cwd=REPO, env=env, stdout=out, stderr=out)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("hcp-platform exited:\n" + self.log.read_text())
            try:
                with urllib.request.urlopen(f"{self.base_url}/healthz", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError("hcp-platform did not answer:\n" + self.log.read_text())

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> int:
        self.process.terminate()
        return self.process.wait(10)


@pytest.fixture
def chain(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[tuple[PlatformProcess,
                                                                   DeviceProcess]]:
    platform = PlatformProcess(tmp_path / "platform", mosquitto)
    bridge = BridgeProcess(tmp_path / "bridge", mosquitto,
                           f"{platform.base_url}/api/ratings").start()
    device = DeviceProcess(tmp_path / "device", mqtt_port=mosquitto.port).start()
    try:
        yield platform, device
    finally:
        device.close()
        bridge.terminate()
        assert platform.stop() == 0, platform.log.read_text()[-2000:]


def cell(page: Any, name: str) -> Any:
    return page.locator(f'tr[data-device="{DEVICE}"] td[data-label="{name}"]')


def test_a_rating_pressed_on_a_device_appears_on_the_page(
        chain: tuple[PlatformProcess, DeviceProcess], browser_page: Any,
        mosquitto: Mosquitto) -> None:
    platform, device = chain
    page = browser_page
    page.goto(platform.base_url + "/")
    assert "好差评实时看板" in page.title()
    # The device's retained status, followed over MQTT: online.
    page.wait_for_function(
        f'() => {{ const c = document.querySelector(\'tr[data-device="{DEVICE}"] '
        f'td[data-label="在线"]\'); return c && c.textContent === "在线"; }}', timeout=15000)
    assert cell(page, "今日评价").text_content() == "0"
    page.wait_for_function('() => document.getElementById("link").textContent === "实时"',
                           timeout=10000)
    w, sim = device.window, device.sim
    assert w is not None and sim is not None
    # Nobody logged in yet: the device's status says so (staff null).
    assert cell(page, "当班人员").text_content() == "—"
    w.send("staff_login", staff_id="S0042", staff_name="王晓红")
    page.wait_for_function(
        f'() => document.querySelector(\'tr[data-device="{DEVICE}"] '
        f'td[data-label="当班人员"]\').textContent === "王晓红"', timeout=15000)
    w.send("case_completed", case_id="C-DASH-1", staff_id="S0042", staff_name="王晓红")
    assert sim.wait_screen("prompt", 5)
    sim.press(2)
    assert sim.wait_screen("reasons", 5)
    sim.press(5)  # a reason (or skip): either way the rating is stored
    assert w.wait_for(lambda f: f.get("type") == "rated", 5) is not None
    # No reload: the event stream redraws the row.
    page.wait_for_function(
        f'() => document.querySelector(\'tr[data-device="{DEVICE}"] '
        f'td[data-label="今日评价"]\').textContent === "1"', timeout=15000)
    assert cell(page, "今日满意率").text_content() == "0.0%"
    assert cell(page, "差评待办").text_content() == "1"
    assert cell(page, "当班人员").text_content() == "王晓红"
    # The clerk leaves: the row says nobody, not the staff of the rating just made.
    w.send("staff_logout")
    page.wait_for_function(
        f'() => document.querySelector(\'tr[data-device="{DEVICE}"] '
        f'td[data-label="当班人员"]\').textContent === "—"', timeout=15000)
    # A hostile status on another device's topic (markup, control characters, wrong
    # types): shown as text, never as markup.
    hostile = "421100-HG01-W04"
    single(f"hcp/v1/{hostile}/status", json.dumps(
        {"online": True, "version": 7,
         "staff": {"staff_name": "<img src=x onerror=alert(1)>\u202e\n", "staff_id": [1]}}),
        qos=1, retain=True, hostname=mosquitto.host, port=mosquitto.port)
    page.wait_for_function(
        f'() => document.querySelector(\'tr[data-device="{hostile}"]\') !== null',
        timeout=15000)
    row = page.locator(f'tr[data-device="{hostile}"]')
    assert row.locator('td[data-label="当班人员"]').text_content() == \
        "<img src=x onerror=alert(1)>"
    assert row.locator("img").count() == 0
    assert page.evaluate("document.scrollingElement.scrollWidth") <= 1920
    # A phone: the same rows as cards, no sideways scrolling.
    page.set_viewport_size({"width": 390, "height": 844})
    page.reload()
    page.wait_for_function(
        f'() => document.querySelector(\'tr[data-device="{DEVICE}"]\') !== null',
        timeout=10000)
    assert page.evaluate("document.scrollingElement.scrollWidth") <= 390
    assert cell(page, "今日评价").is_visible()


def test_beyond_loopback_a_token_is_required(tmp_path: Path) -> None:
    config = tmp_path / "platform.toml"
    config.write_text('[http]\nlisten = "0.0.0.0:8080"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="token_file: required"):
        load(str(config))
    store = Store.open(f"sqlite:///{tmp_path / 'ratings.db'}")
    hall = Hall(store, PlatformConfig())
    server = PlatformServer("127.0.0.1", 0, store, token="s3cret", hall=hall).start()
    try:
        def get(path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
            conn.request("GET", path, headers=headers or {})
            response = conn.getresponse()
            status, cookie = response.status, response.getheader("Set-Cookie") or ""
            response.read()
            conn.close()
            return status, cookie

        assert get("/")[0] == 401
        assert get("/api/hall")[0] == 401
        status, cookie = get("/?token=s3cret")
        assert status == 200 and cookie.startswith("hcp_token=s3cret")
        assert get("/api/hall", {"Cookie": "hcp_token=s3cret"})[0] == 200
        assert get("/api/hall", {"Authorization": "Bearer s3cret"})[0] == 200
        assert get("/healthz")[0] == 200
    finally:
        server.shutdown()
        server.close()
        store.close()


def test_an_overdue_follow_up_is_raised_once_on_the_broker(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    """hcp-platform run with a real mosquitto: a 差评 of 2025-09-26 is long overdue; the
    alert arrives on hcp/v1/alerts once, though the check runs every half second."""
    import threading

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from tests.support.ratings import make_rating

    received: list[dict[str, Any]] = []
    subscribed = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="alert-reader",
                         protocol=mqtt.MQTTv5)
    client.on_subscribe = lambda *args: subscribed.set()
    client.on_message = lambda c, u, m: received.append(json.loads(m.payload))
    client.on_connect = lambda c, u, f, r, p=None: c.subscribe("hcp/v1/alerts", qos=1)
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    platform = None
    try:
        assert subscribed.wait(10)
        platform = PlatformProcess(tmp_path / "platform", mosquitto)
        def post_and_wait(record: dict[str, Any]) -> None:
            request = urllib.request.Request(
                f"{platform.base_url}/api/ratings",
                data=json.dumps({"ratings": [record]}).encode(), method="POST",
                headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=10) as response:
                assert json.loads(response.read())["results"][0]["status"] == "accepted"
            deadline = time.monotonic() + 20
            while not any(a["evidence"]["rating_id"] == record["rating_id"] for a in received):
                assert time.monotonic() < deadline, platform.log.read_text()[-2000:]
                time.sleep(0.05)

        # Each later 差评's alert comes from a later check: by the third, the first has
        # been checked again at least twice, and must not have been raised again.
        bad = [make_rating(level=1, rated_at=f"2025-09-2{day}T02:00:00.000Z")
               for day in (6, 5, 4)]
        for record in bad:
            post_and_wait(record)
        assert [(a["alert"], a["evidence"]["rating_id"]) for a in received] == [
            ("followup_overdue", r["rating_id"]) for r in bad]
        assert received[0]["evidence"]["due"] == "2025-09-30"
        assert received[0]["watcher"] == "hcp-platform" and received[0]["severity"] == "critical"
    finally:
        client.loop_stop()
        client.disconnect()
        if platform is not None:
            assert platform.stop() == 0


def test_a_hall_screen_shows_its_own_windows(tmp_path: Path) -> None:

    from tests.support.ratings import make_rating

    store = Store.open(f"sqlite:///{tmp_path / 'ratings.db'}")
    hall = Hall(store, PlatformConfig())
    store.submit([make_rating("421100-HG01-W01", level=5),
                  make_rating("421100-HG02-W07", level=1)])
    everything = hall.snapshot()
    assert [w["device_id"] for w in everything["windows"]] == ["421100-HG01-W01",
                                                               "421100-HG02-W07"]
    server = PlatformServer("127.0.0.1", 0, store, hall=hall).start()
    try:
        with urllib.request.urlopen(f"{server.base_url}/api/hall?hall=HG02",
                                    timeout=5) as response:
            only = json.loads(response.read())
        assert only["hall"] == "HG02"
        assert [(w["window_id"], w["followups_open"]) for w in only["windows"]] == [("W07", 1)]
    finally:
        server.shutdown()
        server.close()
        store.close()


def test_broker_messages_give_window_names_and_expired_prompts(tmp_path: Path) -> None:
    """What the platform follows on the broker reaches the report: the window's name from
    its retained config, and expired prompts whatever the bridges' profile (the same
    event twice, or also as a gov record, is one expired prompt)."""
    from datetime import date

    from broker_bridge.profile import GovProfile
    from city_platform.report import build_report
    from tests.support.ratings import make_rating

    store = Store.open(f"sqlite:///{tmp_path / 'ratings.db'}")
    hall = Hall(store, PlatformConfig())
    try:
        store.submit([make_rating(DEVICE, level=5, rated_at="2026-11-05T02:00:00Z")])
        hall.on_message(DEVICE, "config", json.dumps({"window_name": "03号窗口 不动产登记"})
                        .encode())
        event = {"event": "prompt_expired", "at": "2026-11-05T03:00:00.000Z",
                 "case_id": "C-EXP"}
        for _ in range(2):
            hall.on_message(DEVICE, "event", json.dumps(event).encode())
        hall.on_message(DEVICE, "event", b'{"event": "prompt_expired", "at": "soon"}')
        store.submit([GovProfile().expired(DEVICE, event)])   # the gov path: same id
        report = build_report(store, date(2026, 11, 1), date(2026, 11, 30))
        (window,) = report.halls[0].windows
        assert (window.window_id, window.window_name, window.expired, window.total) == (
            "W03", "03号窗口 不动产登记", 1, 1)
    finally:
        store.close()
