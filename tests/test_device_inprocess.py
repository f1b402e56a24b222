"""The daemon in-process, in virtual time (tests/support/inprocess.py): serial session,
receipts, settings from the broker and the orderly stop, with fake drivers and a fake
broker link. No subprocess, no thread, no sleep: a test runs in milliseconds."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from device.core.model import Persist
from device.outbox import Outbox
from tests.support.inprocess import Device


@pytest.fixture
def device(tmp_path: Path) -> Device:
    return Device(tmp_path)


# --- serial session -------------------------------------------------------------------

def test_hello_on_every_open_and_ack_nak(device: Device) -> None:
    device.start()
    assert [f["type"] for f in device.serial.written] == ["hello"]
    assert device.serial.written[0]["device_id"] == device.config.device.id
    seq = device.serial.send_frame("case_completed", case_id="C-1")
    device.run(0)
    assert {"type": "ack", "seq": seq} in device.serial.written
    seq = device.serial.send_frame("cancel")          # case_id is required
    device.serial.send_raw(b'{"type":"ping","seq":77}*0000')   # CRC wrong: no answer
    device.run(0)
    assert {"type": "nak", "seq": seq, "error": "bad_field"} in device.serial.written
    assert not [f for f in device.serial.written if f.get("seq") == 77]
    device.serial.plug(False)
    device.serial.plug(True)
    device.run(0)
    assert len(device.serial.frames("hello")) == 2
    hellos = device.serial.frames("hello")
    assert hellos[1]["seq"] > hellos[0]["seq"]


def test_rated_frame_held_while_unplugged_is_sent_after_hello(device: Device) -> None:
    device.start()
    device.serial.send_frame("case_completed", case_id="C-HELD")
    device.run(0.1)
    device.serial.plug(False)                  # unplugged while the citizen decides
    device.run(0)
    device.keys.press(5)
    device.run(0.1)
    assert device.display.current == "thanks"
    assert not device.serial.frames("rated")
    device.run(30)
    device.serial.plug(True)
    device.run(0)
    kinds = [f["type"] for f in device.serial.written]
    assert kinds[-2:] == ["hello", "rated"], kinds
    assert device.serial.written[-1]["case_id"] == "C-HELD"


def test_rated_written_just_before_the_link_dropped_is_told_again(device: Device) -> None:
    device.start()
    device.rate("C-EDGE", 4)
    device.serial.plug(False)                  # < 2 s after the write: maybe never arrived
    device.run(5)
    device.serial.plug(True)
    device.run(0)
    rated = device.serial.frames("rated")
    assert [f["case_id"] for f in rated] == ["C-EDGE", "C-EDGE"]
    assert device.serial.written[-2]["type"] == "hello"


def test_unknown_frame_type_is_neither_logged_nor_published(
        device: Device, caplog: pytest.LogCaptureFixture) -> None:
    """A window system that puts a citizen's name in `type`: the nak and the counters
    say what went wrong, the log and the serial_error event do not repeat it."""
    caplog.set_level(logging.DEBUG, "hcp")
    device.start()
    device.broker_up()
    seq = device.serial.send_frame("张三 420100199001011234")
    device.run(0)
    assert {"type": "nak", "seq": seq, "error": "unknown_type"} in device.serial.written
    (event,) = device.link.events("serial_error")
    assert event["last"] == "unknown_type" and event["counts"] == {"unknown_type": 1}
    published = json.dumps(device.link.published, ensure_ascii=False)
    assert "张三" not in published and "420100199001011234" not in published
    assert "张三" not in caplog.text and "420100199001011234" not in caplog.text
    assert device.daemon.telemetry(device.clock.now)["serial_errors_by_kind"] == \
        {"unknown_type": 1}


FORGED = "C-1\n2026-12-02 08:00:00 INFO hcp.device: rating stored: forged"


def test_newline_in_a_case_id_cannot_forge_a_log_line(
        device: Device, caplog: pytest.LogCaptureFixture) -> None:
    """Whether the codec refuses such a case id or the core rates it, no line of the log
    starts with what the window system wrote after the newline."""
    device.start()
    device.serial.send_frame("case_completed", case_id=FORGED)
    device.run(0.1)
    device.keys.press(5)
    device.run(1)
    assert not [line for line in caplog.text.splitlines()
                if line.startswith("2026-12-02 08:00:00")]


def test_the_store_logs_a_case_id_escaped(tmp_path: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
    """The rating store's own log line, fed a case id the codec might let through."""
    device = Device(tmp_path).start()
    core = device.daemon.core
    assert core is not None
    rating = {"rating_id": "a" * 32, "level": 5, "trigger": "case", "seq": 1,
              "rated_at": "2026-12-02T00:00:00.000Z"}
    caplog.set_level(logging.INFO, "hcp")
    assert device.daemon.store.store(Persist(rating, case_id=FORGED, rated_epoch=1.0)) is None
    (line,) = [r.getMessage() for r in caplog.records if "rating stored" in r.getMessage()]
    assert "\n" not in line and "C-1\\n2026" in line


# --- receipts ---------------------------------------------------------------------------

def test_a_receipt_removes_and_a_forged_or_malformed_one_is_ignored(device: Device) -> None:
    device.start()
    device.broker_up()
    first = device.rate("C-R1", 5)["rating_id"]
    second = device.rate("C-R2", 3)["rating_id"]
    device.puback()
    assert {p["rating_id"] for p in device.link.of("rating")} == {first, second}
    for junk in (b"not json", b'{"receipts": 5}', b"[1, 2]", b'{"receipts": [7, null]}',
                 json.dumps({"receipts": [{"rating_id": "f" * 32, "status": "accepted"},
                                          {"rating_id": second[:31], "status": "accepted"},
                                          {"rating_id": second, "status": "eaten"}]}).encode()):
        device.message("receipt", junk)
    assert device.daemon.stats.backlog == 2 and device.daemon.stats.receipts == 0
    device.message("receipt", {"receipts": [{"rating_id": first, "status": "accepted"}]})
    assert device.daemon.stats.backlog == 1 and device.daemon.stats.receipts == 1
    # the receipted rating is never published again; the other one is, after resend_after_s
    published = len(device.link.of("rating"))
    device.run(device.config.mqtt.resend_after_s + 1)
    again = [p["rating_id"] for p in device.link.of("rating")[published:]]
    assert again == [second]
    device.stop()
    assert [r["rating_id"] for r in device.pending()] == [second]


def test_a_rejected_receipt_moves_the_rating_to_the_rejected_list(device: Device) -> None:
    device.start()
    device.broker_up()
    rid = device.rate("C-REJ", 2)["rating_id"]
    device.message("receipt", {"receipts": [{"rating_id": rid, "status": "rejected",
                                             "error": "bad hall"}]})
    assert device.daemon.stats.rejected == 1
    assert device.daemon.telemetry(device.clock.now)["rejected"] == 1
    device.stop()
    assert device.pending() == []
    outbox = Outbox(device.data_dir)
    outbox.open()
    try:
        assert [r["rating"]["rating_id"] for r in outbox.rejected()] == [rid]
    finally:
        outbox.close()


# --- settings from the broker ----------------------------------------------------------

NEW_NAME = "05号窗口 社保医保"


def test_remote_config_applied_persisted_and_rejected(tmp_path: Path) -> None:
    device = Device(tmp_path).start()
    device.broker_up()
    device.message("config", {"window_name": NEW_NAME, "thanks_s": 1.5}, retain=True)
    assert device.display.screens[-1].window_name == NEW_NAME
    (applied,) = device.link.events("config_applied")
    assert applied["keys"] == ["thanks_s", "window_name"]
    device.message("config", {"thanks_s": -1, "unknown_key": 1}, retain=True)
    (rejected,) = device.link.events("config_rejected")
    assert rejected["problems"] and any("unknown_key" in p for p in rejected["problems"])
    assert device.daemon.core is not None
    assert device.daemon.core.settings.window_name == NEW_NAME   # unchanged by the bad one
    device.stop()

    # A restart without a broker: the accepted settings hold.
    again = Device(tmp_path, clock=device.clock).start()
    assert again.display.screens[-1].window_name == NEW_NAME
    assert again.daemon.core is not None and again.daemon.core.settings.thanks_s == 1.5
    again.broker_up()
    again.message("config", b"", retain=True)      # cleared: back to the file's settings
    assert again.display.screens[-1].window_name == device.config.ui.window_name
    assert again.link.events("config_applied")[-1]["keys"] == []
    again.stop()


# --- orderly stop -------------------------------------------------------------------------

def test_a_press_queued_before_stop_is_stored(device: Device) -> None:
    device.start()
    device.serial.send_frame("case_completed", case_id="C-LAST")
    device.run(0.1)
    device.keys.press(5)              # queued, not yet handled
    device.daemon.request_stop("SIGTERM")
    assert not device.daemon.serve()
    device.daemon.shutdown()
    device.stopped = True
    assert [r["case"]["case_id"] for r in device.pending()] == ["C-LAST"]
    assert [f["case_id"] for f in device.serial.frames("rated")] == ["C-LAST"]


def test_the_level_chosen_on_the_reasons_screen_is_stored_at_stop(device: Device) -> None:
    device.start()
    device.serial.send_frame("case_completed", case_id="C-REASONS")
    device.run(0.1)
    device.keys.press(2)
    device.run(0.1)
    assert device.display.current == "reasons"
    device.stop()
    (record,) = device.pending()
    assert (record["case"]["case_id"], record["level"], record["reason"]) == \
        ("C-REASONS", 2, None)


def test_each_driver_is_closed_once(device: Device) -> None:
    device.start()
    device.stop()
    assert (device.keys.closed, device.display.closed, device.indicators.closed,
            device.serial.closed) == (1, 1, 1, 1)
    assert device.link.stopped


# --- clock seam ---------------------------------------------------------------------------

def test_event_and_telemetry_times_come_from_the_clock_seam(device: Device) -> None:
    device.clock.wall_now = 1_000_000_000.0     # 2001-09-09T01:46:40Z
    device.start()
    device.broker_up()
    device.serial.send_frame("case_completed", case_id="C-T")
    device.run(device.config.ui.prompt_timeout_s + 1)
    (expired,) = device.link.events("prompt_expired")
    assert expired["at"].startswith("2001-09-09T01:4")
    (telemetry, *_) = device.link.of("telemetry")
    assert telemetry["at"] == "2001-09-09T01:46:40.000Z"


def test_rated_not_known_to_have_arrived_is_told_again_after_a_restart(tmp_path: Path) -> None:
    """Stopped (or killed) while the link was down: the next run holds the case's
    `rated` frame and tells it after its first hello; one that arrived is not repeated."""
    device = Device(tmp_path).start()
    device.rate("C-SEEN", 5)
    device.run(3)                          # carried for 2 s: known to have arrived
    device.serial.send_frame("case_completed", case_id="C-UNSEEN")
    device.run(0.1)
    device.serial.plug(False)
    device.run(0)
    device.keys.press(4)
    device.run(1)
    device.stop()
    again = Device(tmp_path, clock=device.clock).start(plug=False)
    again.serial.plug(True)
    again.run(0)
    assert [(f["type"], f.get("case_id")) for f in again.serial.written] == \
        [("hello", None), ("rated", "C-UNSEEN")]


def test_events_while_offline_are_published_after_connect(device: Device) -> None:
    device.start()
    device.serial.send_frame("case_completed", case_id="C-OFF")
    device.run(device.config.ui.prompt_timeout_s + 1)   # expires while offline
    assert device.link.published == []
    device.broker_up()
    (expired,) = device.link.events("prompt_expired")
    assert expired["case_id"] == "C-OFF"
    assert device.link.of("telemetry"), "telemetry right after the connect"
    kinds = [k for k, *_ in device.link.published]
    assert kinds.index("event") < kinds.index("telemetry")
    device.run(device.config.mqtt.telemetry_s)
    assert len(device.link.of("telemetry")) == 2
