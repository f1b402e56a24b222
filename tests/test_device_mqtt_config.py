"""The retained `config` topic (SPEC §7): a valid message changes what the citizen sees,
survives a restart with the broker down, a bad one is refused with an event and changes
nothing, an empty retained payload brings back the file's settings."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from device.core.settings import UiSettings
from device.remote_config import apply, parse_remote_config
from tests.support.device import DeviceProcess
from tests.support.mosquitto import Mosquitto
from tests.support.scripted_broker import ScriptedBroker
from tests.test_device_mqtt_support import (
    Watcher,
    device_factory,
    press_rating,
    sim_status,
)

__all__ = ["device_factory"]

DeviceFactory = Callable[..., DeviceProcess]
FILE_NAME = "03号窗口 不动产登记"
REMOTE_NAME = "05号窗口 社保医保"


def idle_text(device: DeviceProcess, contains: str, timeout: float = 10.0) -> str | None:
    """The idle screen's text once it contains `contains` (the current one counts)."""
    assert device.sim is not None
    screen = device.sim.screen
    if screen and screen.get("screen") == "idle" and contains in screen.get("text", ""):
        return str(screen["text"])
    ev = device.sim.wait_screen("idle", timeout, where=lambda e: contains in e["text"])
    return None if ev is None else str(ev["text"])


def test_retained_config_applied_persisted_rejected_and_cleared(
        mosquitto: Mosquitto, device_factory: DeviceFactory) -> None:
    platform = Watcher(mosquitto)
    device = device_factory(mosquitto.port).start()
    try:
        assert platform.wait_for("status", lambda s: s["online"]), device.log()
        assert idle_text(device, FILE_NAME)

        # Valid: the idle screen shows the new name; the new reasons are offered.
        platform.publish("config", json.dumps({
            "window_name": REMOTE_NAME, "prompt_timeout_s": 45,
            "reasons": [{"code": "X1", "label": "等候太久"}, {"code": "X2", "label": "材料反复"}],
        }, ensure_ascii=False), retain=True)
        assert idle_text(device, REMOTE_NAME), device.log()
        applied = platform.wait_event("config_applied")
        assert applied["keys"] == ["prompt_timeout_s", "reasons", "window_name"]
        assert device.sim is not None
        device.sim.press(2)
        reasons = device.sim.wait_screen("reasons", 5)
        assert reasons is not None
        assert [o["code"] for o in reasons["options"]] == ["X1", "X2", None]
        device.sim.press(1)   # skip
        assert device.sim.wait_screen("idle", 5)

        # Invalid (and retained, replacing the good one): refused, nothing changes.
        mark = platform.mark()
        platform.publish("config", json.dumps({"window_name": "", "thanks_s": "soon",
                                               "colour": "red"}), retain=True)
        rejected = platform.wait_event("config_rejected", after=mark)
        assert rejected is not None, device.log()
        assert any("window_name" in p for p in rejected["problems"])
        assert any("thanks_s" in p for p in rejected["problems"])
        assert any("colour: unknown key" in p for p in rejected["problems"])
        assert device.sim.screen is not None and REMOTE_NAME in device.sim.screen["text"]
        assert device.proc is not None and device.proc.poll() is None

        # Persisted: a restart with the broker down still shows the remote settings.
        device.kill()
        mosquitto.stop()
        device.start()
        assert idle_text(device, REMOTE_NAME), device.log()
        assert sim_status(device)["broker"] == "offline"

        # The broker is back (with the bad retained message): still refused, still applied.
        mark = platform.mark()
        mosquitto.start()
        assert platform.wait_event("config_rejected", after=mark, timeout=20), device.log()
        assert device.sim is not None and device.sim.screen is not None
        assert REMOTE_NAME in device.sim.screen["text"]

        # An empty retained payload clears it: back to the file's settings.
        mark = platform.mark()
        platform.publish("config", b"", retain=True)
        assert idle_text(device, FILE_NAME), device.log()
        cleared = platform.wait_event("config_applied", after=mark)
        assert cleared["keys"] == []
        press_rating(device, 2)   # default reasons again; press_rating skips them
    finally:
        platform.close()
    device.kill()
    device.start()   # and that is what a restart shows too
    assert idle_text(device, FILE_NAME)


BASE = UiSettings(window_name=FILE_NAME)


@pytest.mark.parametrize("payload, problem", [
    (b"\xff\xfe", "not JSON"),
    (b"{", "not JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (b'{"prompt_timeout_s": NaN}', "NaN"),
    (b'{"thanks_s": -Infinity}', "Infinity"),
    (b'{"thanks_s": 1' + b"0" * 400 + b"}", "thanks_s: a number outside the 64-bit range"),
    (b'{"prompt_timeout_s": 1' + b"0" * 30 + b"}", "outside the 64-bit range"),
    (b'{"thanks_s": 1' + b"0" * 5000 + b"}", "not JSON"),
    (b'{"lockout_s": true}', "lockout_s: must be a number"),
    (b'{"window_name": "a\\nb"}', "control characters"),
    (b'{"window_name": "' + b"x" * 41 + b'"}', "at most 40"),
    (b'{"window_name": "03\\u2028\\u7a97\\u53e3"}', "window_name: must not contain control"),
    (b'{"window_name": "03\\r\\n"}', "window_name: must not contain control"),
    (b'{"window_name": "\\u202e03"}', "window_name: must not contain control"),
    (b'{"window_name": "\\t"}', "window_name: must not be empty"),
    (b'{"reasons": [{"code": "X1", "label": "\\u7b49\\u5019\\r\\n"}]}',
     "entry 1: label must not contain control"),
    (b'{"reasons": [{"code": "X1", "label": "\\u200b"}]}', "entry 1: label must not"),
    (b'{"reasons": [{"code": "X1", "label": 5}]}', "entry 1: label must be a string"),
    (b'{"thanks_s": 2, "thanks_s": 3}', "'thanks_s' given twice"),
    (b'{"reasons": [{"code": "X1", "code": "X2", "label": "a"}]}', "'code' given twice"),
    (b" " * (300 * 1024), f"payload of {300 * 1024} bytes is over"),
    (b'{"reasons": [{"code": "R1"}]}', "code and label"),
    (b'{"reasons": null}', "must be a list"),
    (b'{"prompt_timeout_s": 0}', "at least"),
    (b'{"device_id": "x"}', "unknown key"),
    (b"[" * 10000 + b"]" * 10000, "over"),
    (b"[" * 5000 + b"]" * 5000, "not JSON"),
])
def test_bad_config_payloads_are_problems_not_exceptions(payload: bytes, problem: str) -> None:
    # Regression: NaN passed every range check and a 400-digit number raised
    # OverflowError in the daemon's loop — a retained message would crash it at every start.
    result = parse_remote_config(payload)
    assert isinstance(result, list) and result
    assert any(problem in p for p in result), result


def test_text_the_screen_shows_is_refused_not_changed() -> None:
    # Regression (issue 17): a reason label with a line break was persisted and crashed
    # the device at every level 1-2 press, after restarts too.
    label = "等候\r\n太久"
    result = parse_remote_config(json.dumps(
        {"reasons": [{"code": "X1", "label": label}]}, ensure_ascii=False).encode())
    assert isinstance(result, list) and len(result) == 1
    assert label not in result[0] and "\n" not in result[0]


def test_problems_are_one_line_each_and_bounded() -> None:
    payload = json.dumps({f"bad\nkey{i}": i for i in range(50)}).encode()
    result = parse_remote_config(payload)
    assert isinstance(result, list) and len(result) == 20
    assert all("\n" not in p and len(p) <= 300 for p in result)
    assert "unknown key" in result[0] and "\\n" in result[0]


def test_full_width_spaces_are_fine_in_a_window_name() -> None:
    name = "03号窗口\u3000不动产登记"
    assert parse_remote_config(json.dumps({"window_name": name}).encode()) == {
        "window_name": name}


def test_a_valid_message_sets_only_what_it_names_on_top_of_the_file() -> None:
    changes = parse_remote_config(json.dumps(
        {"window_name": REMOTE_NAME, "thanks_s": 2, "allow_spontaneous": False}).encode())
    assert changes == {"window_name": REMOTE_NAME, "thanks_s": 2.0, "allow_spontaneous": False}
    assert isinstance(changes, dict)
    settings = apply(BASE, changes)
    assert (settings.window_name, settings.thanks_s, settings.allow_spontaneous) == \
        (REMOTE_NAME, 2.0, False)
    assert settings.prompt_timeout_s == BASE.prompt_timeout_s
    assert apply(BASE, {}) == BASE



def test_a_config_too_large_to_take_in_is_rejected_by_name_not_ignored(
        mosquitto: Mosquitto, device_factory: DeviceFactory) -> None:
    """A retained config over the link's 256 KiB limit was dropped without a word: the
    platform team never learnt it had been refused (issue 17)."""
    platform = Watcher(mosquitto)
    device = device_factory(mosquitto.port).start()
    try:
        assert platform.wait_for("status", lambda s: s["online"]), device.log()
        mark = platform.mark()
        huge = json.dumps({"window_name": "05号窗口", "padding": "x" * (300 * 1024)})
        platform.publish("config", huge, retain=True)
        rejected = platform.wait_event("config_rejected", after=mark, timeout=20)
        assert rejected is not None, device.log()
        assert rejected["problems"] == [f"payload of {len(huge)} bytes is over 16384"]
        assert idle_text(device, FILE_NAME), "nothing was applied, nothing cleared"
        assert device.proc is not None and device.proc.poll() is None
    finally:
        platform.close()


def test_a_refused_subscription_is_asked_for_again_on_the_same_connection(
        device_factory: DeviceFactory) -> None:
    """A broker may refuse the receipt subscription for a while (NATS under a burst of
    connections): without asking again the device got no receipt until it reconnected."""
    asked: list[list[tuple[str, int]]] = []

    def refuse_first(filters: list[tuple[str, int]]) -> list[int]:
        asked.append(filters)
        return [0x80] * len(filters) if len(asked) == 1 else [qos for _, qos in filters]

    with ScriptedBroker(suback=refuse_first) as broker:
        device = device_factory(broker.port).start()
        deadline = time.monotonic() + 20
        while len(broker.subscribes) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(broker.subscribes) >= 2, device.log()
        assert len(broker.connects) == 1, "asked again without reconnecting"
        assert all(topic.endswith(("/receipt", "/config")) for topic, _ in
                   broker.subscribes[1])
        assert "refused the receipt/config subscription" in device.log()
