"""The hall dashboard names the alert kinds it knows in Chinese and shows any other kind
as it came. A kind that is the name of a property every JavaScript object inherits
(`constructor`, `__proto__`, `toString`, …) is such an other kind: shown as its own
text, never as what the page's lookup table inherits (function text, "[object
Object]"). Drawn by headless Chromium from a real platform on loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from city_platform.config import PlatformConfig
from city_platform.hall import Hall
from city_platform.server import PlatformServer
from city_platform.store import Store
from tests.support import browser

browser_page = browser.browser_page
DEVICE = "421100-HG01-W03"
INHERITED = ["constructor", "__proto__", "toString", "hasOwnProperty", "valueOf",
             "isPrototypeOf", "__defineGetter__"]


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[tuple[PlatformServer, Hall]]:
    store = Store.open(f"sqlite:///{tmp_path / 'ratings.db'}")
    hall = Hall(store, PlatformConfig())
    server = PlatformServer("127.0.0.1", 0, store, hall=hall).start()
    try:
        yield server, hall
    finally:
        server.shutdown()
        server.close()
        store.close()


def _raise(hall: Hall, kind: str) -> None:
    hall.on_message(DEVICE, "alerts", json.dumps(
        {"device_id": DEVICE, "alert_id": f"{kind}:{DEVICE}", "kind": kind}).encode())


def _tags(page: Any) -> list[str]:
    return list(page.eval_on_selector_all(
        f'tr[data-device="{DEVICE}"] td[data-label="未处理预警"] span.tag',
        "tags => tags.map(t => t.textContent)"))


def test_alert_kinds_named_like_inherited_properties_show_as_their_text(
        platform: tuple[PlatformServer, Hall], browser_page: Any) -> None:
    server, hall = platform
    for kind in [*INHERITED, "backlog", "clock_unsynced", "something_new"]:
        _raise(hall, kind)
    expected = sorted([*INHERITED, "backlog", "clock_unsynced", "something_new"])
    page = browser_page
    page.goto(server.base_url + "/")
    page.wait_for_function(
        f'() => document.querySelectorAll(\'tr[data-device="{DEVICE}"] span.tag\').length '
        f"=== {len(expected)}", timeout=15000)
    shown = {"backlog": "积压", "clock_unsynced": "时钟未同步"}
    assert _tags(page) == [shown.get(kind, kind) for kind in expected]


def test_a_kind_raised_while_the_page_is_open_is_drawn_the_same(
        platform: tuple[PlatformServer, Hall], browser_page: Any) -> None:
    """Through the event stream, not only the first fetch."""
    server, hall = platform
    _raise(hall, "device_silent")
    page = browser_page
    page.goto(server.base_url + "/")
    page.wait_for_function('() => document.getElementById("link").textContent === "实时"',
                           timeout=10000)
    assert _tags(page) == ["设备离线"]
    _raise(hall, "constructor")
    page.wait_for_function(
        f'() => document.querySelectorAll(\'tr[data-device="{DEVICE}"] span.tag\').length '
        "=== 2", timeout=15000)
    assert _tags(page) == ["constructor", "设备离线"]
