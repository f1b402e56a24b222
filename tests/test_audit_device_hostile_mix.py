"""The whole daemon in-process, fed hostile input from every side at once: binary and
malformed serial lines, hostile retained config payloads, hostile receipts, between real
cases and presses. Whatever comes, the loop keeps running, everything it publishes can be
sent as UTF-8 JSON (as the paho link encodes it), and every rated case is stored once."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.serial_codec import frame_line
from tests.support.inprocess import Device

text = st.text(st.characters() | st.characters(categories=["Cs"]), max_size=40)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12)
config_keys = st.sampled_from(["window_name", "prompt_timeout_s", "reasons_timeout_s",
                               "thanks_s", "lockout_s", "allow_spontaneous",
                               "spontaneous_min_interval_s", "reasons", "qr_url",
                               "read_levels", "volume", "alsa_device"])
frame_types = st.sampled_from(["case_completed", "cancel", "staff_login", "staff_logout",
                               "pause", "resume", "ping", "rated", "x"])
frame_keys = st.sampled_from(["case_id", "service_name", "staff_id", "staff_name",
                              "completed_at", "eval_url", "reason", "seq", "type"])

step_st = st.one_of(
    st.tuples(st.just("case"), st.sampled_from(["C1", "C2", "C3"])),
    st.tuples(st.just("press"), st.integers(1, 5)),
    st.tuples(st.just("wait"), st.sampled_from([0.1, 1.0, 5.0, 61.0])),
    st.tuples(st.just("raw"), st.binary(max_size=200)),
    st.tuples(st.just("frame"), st.tuples(frame_types, st.integers(-2**70, 2**70),
                                          st.dictionaries(frame_keys, json_values,
                                                          max_size=4))),
    st.tuples(st.just("config"), st.dictionaries(config_keys, json_values, max_size=3)),
    st.tuples(st.just("config_raw"), st.binary(max_size=100)),
    st.tuples(st.just("receipt"), st.tuples(st.sampled_from(["accepted", "duplicate",
                                                              "rejected", "x"]),
                                            json_values)),
    st.tuples(st.just("receipt_raw"), json_values),
)


def play(device: Device, step: tuple[str, Any]) -> None:
    kind, arg = step
    if kind == "case":
        device.serial.send_frame("case_completed", case_id=arg, service_name="不动产登记")
    elif kind == "press":
        device.keys.press(arg)
    elif kind == "wait":
        device.run(arg)
        return
    elif kind == "raw":
        device.serial.send_raw(arg)
    elif kind == "frame":
        ftype, seq, fields = arg   # CRC-valid, escaped JSON: lone surrogates get through
        body = json.dumps({"type": ftype, "seq": seq, **fields}).encode()
        device.serial.send_raw(frame_line(body).line.rstrip(b"\n"))
    elif kind == "config":
        device.message("config", json.dumps(arg).encode(), retain=True)
    elif kind == "config_raw":
        device.message("config", arg, retain=True)
    elif kind == "receipt":
        status, error = arg
        ids = sorted({p["rating_id"] for p in device.link.of("rating")})
        device.message("receipt", json.dumps({"receipts": [
            {"rating_id": rid, "status": status, "error": error} for rid in ids]}).encode())
    elif kind == "receipt_raw":
        device.message("receipt", json.dumps(arg).encode())
    device.run(0)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(steps=st.lists(step_st, max_size=30))
def test_hostile_input_from_every_side_never_stops_the_daemon_or_loses_a_rating(
        steps: list[tuple[str, Any]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        device = Device(Path(tmp)).start()
        publish = device.link.publish

        def encoded(kind: str, payload: dict[str, Any], **kw: Any) -> None:
            # What MqttLink.publish does on the loop's thread: must never raise.
            json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
            publish(kind, payload, **kw)

        device.link.publish = encoded  # type: ignore[method-assign,assignment]
        device.broker_up()
        for step in steps:
            play(device, step)
        device.message("config", b"", retain=True)   # back to the file's settings
        device.serial.send_frame("resume")
        device.run(3700)        # every prompt runs out, even one of a 3600 s config
        device.serial.send_frame("case_completed", case_id="C-LAST")
        device.run(0.1)
        device.keys.press(5)
        device.run(5)
        rated = [f["case_id"] for f in device.serial.frames("rated")]
        assert "C-LAST" in rated
        device.stop()
        # Every `rated` told to the window names a rating that was stored (pending or
        # receipted); no case was rated twice.
        assert len(rated) == len(set(rated))
