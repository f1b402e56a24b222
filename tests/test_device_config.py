"""The device config's checks on what ends up in every rating record (SPEC §3, §6)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from common.configschema import ConfigError
from common.serial_codec import CASE_FIELDS, FIELD_LIMITS
from device.clock import FakeClock
from device.config import MAX_ID_CHARS, parse_device_config
from device.core.machine import Evaluator, Identity
from device.core.model import FrameReceived, KeyDown, KeyUp, Persist
from device.core.settings import UiSettings

PATH = Path("/etc/hcp/device.toml")


def _config(**device: Any) -> dict[str, Any]:
    d = {"id": "421100-HG01-W03", "region_code": "421100", "hall_id": "HG01",
         "window_id": "W03", "window_name": "03号窗口", "data_dir": "/var/lib/hcp-device"}
    d.update(device)
    return {"device": d, "serial": {"port": ""}, "input": {"kind": "sim"},
            "display": {"kind": "sim"}}


def _problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_device_config(PATH, data)
    return e.value.problems


def test_a_valid_config_parses() -> None:
    assert parse_device_config(PATH, _config()).device.id == "421100-HG01-W03"


@pytest.mark.parametrize("device_id", ["abc\n", "a b", "", "x" * 65, "设备1"])
def test_device_id_must_be_the_whole_pattern(device_id: str) -> None:
    (p,) = _problems(_config(id=device_id))
    assert p.startswith(f"{PATH}: [device] id") and "[A-Za-z0-9_-]{1,64}" in p


def test_reason_code_with_a_trailing_newline_is_refused() -> None:
    data = _config()
    data["ui"] = {"reasons": [{"code": "R01\n", "label": "服务态度"}]}
    (p,) = _problems(data)
    assert "[ui] reasons" in p and "code must match" in p


@pytest.mark.parametrize("key", ["region_code", "hall_id", "window_id"])
@pytest.mark.parametrize("value, says", [
    ("", "must not be empty"), ("  ", "must not be empty"),
    ("H" * (MAX_ID_CHARS + 1), f"at most {MAX_ID_CHARS} characters"),
    ("HG\n01", "control characters"),
])
def test_record_ids_are_bounded_and_printable(key: str, value: str, says: str) -> None:
    (p,) = _problems(_config(**{key: value}))
    assert p.startswith(f"{PATH}: [device] {key}") and says in p


def test_the_largest_record_the_limits_allow_fits_in_8_kib() -> None:
    """Every field at its limit, in the character that costs most on the wire (a control
    character, escaped as six bytes), as the device publishes it: under the bridge's 8 KiB
    limit, so no configuration or frame can make every rating a rejected one."""
    worst = "\x01"
    ident = Identity("D" * 64, worst * MAX_ID_CHARS, worst * MAX_ID_CHARS,
                     worst * MAX_ID_CHARS)
    clock = FakeClock()
    ids = (f"{n:032x}" for n in itertools.count(1))
    reasons = tuple((f"R{n:0>15}", "原因") for n in range(4))
    core = Evaluator(ident, UiSettings(window_name="W", reasons=reasons), clock,
                     new_rating_id=lambda: next(ids), first_seq=2**53)
    core.start(clock.now)
    fields = {name: worst * FIELD_LIMITS[name] for name in CASE_FIELDS}
    fields["completed_at"] = "2026-11-25T10:31:07.123456789+08:00"
    out = core.handle(FrameReceived("case_completed", 1, fields, clock.now))
    out += core.handle(KeyDown(1, clock.now))
    out += core.handle(KeyUp(1, clock.advance(0.1)))
    out += core.handle(KeyDown(5, clock.advance(0.5)))   # picks the first reason
    (rating,) = [a.rating for a in out if isinstance(a, Persist)]
    assert rating["case"]["service_name"] == fields["service_name"] and rating["reason"]
    payload = json.dumps(rating, ensure_ascii=False, separators=(",", ":")).encode()
    assert len(payload) <= 8 * 1024, len(payload)


@pytest.mark.parametrize("port", ["", "/dev/ttyUSB0", "/dev/serial/by-id/usb-FTDI-if00",
                                  "socket://127.0.0.1:7000", "loop://",
                                  "rfc2217://10.0.0.5:2217?timeout=1"])
def test_serial_ports_that_pyserial_opens_are_accepted(port: str) -> None:
    data = _config()
    data["serial"] = {"port": port}
    assert parse_device_config(PATH, data).serial.port == port


@pytest.mark.parametrize("port, says", [
    ("sokcet://127.0.0.1:7000", "unknown URL scheme 'sokcet'"),
    ("socket://127.0.0.1", "needs HOST:PORT"),
    ("socket://:7000", "needs HOST:PORT"),
    ("ttyUSB0", "absolute device path"),
])
def test_a_serial_port_typo_is_a_config_error_not_missing_hardware(port: str,
                                                                   says: str) -> None:
    data = _config()
    data["serial"] = {"port": port}
    (p,) = _problems(data)
    assert p.startswith(f"{PATH}: [serial] port") and says in p
