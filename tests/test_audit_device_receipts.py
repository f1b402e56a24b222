"""Hostile receipts (SPEC §7 `receipt` topic) through the daemon in-process: whatever the
bridge's message holds, the daemon keeps running and no rating is lost."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device.outbox import Outbox
from tests.support.inprocess import Device


def rejected_list(data_dir: Path) -> list[dict[str, object]]:
    outbox = Outbox(data_dir)
    outbox.open()
    try:
        return outbox.rejected()
    finally:
        outbox.close()


def test_a_rejected_receipt_whose_error_is_a_lone_surrogate_is_kept(tmp_path: Path) -> None:
    """JSON "\\ud800" is valid JSON but no UTF-8: writing it to the outbox raised
    UnicodeEncodeError out of the loop and the daemon died (and again after each
    restart, when the re-sent rating drew the same receipt)."""
    device = Device(tmp_path).start()
    device.broker_up()
    rid = device.rate("C-SURR", 2)["rating_id"]
    device.message("receipt", b'{"receipts": [{"rating_id": "%s", "status": "rejected", '
                              b'"error": "bad \\ud800 hall \\udfff"}]}' % rid.encode())
    assert device.daemon.stats.rejected == 1 and device.daemon.stats.backlog == 0
    device.rate("C-AFTER", 5)                        # the loop is still serving
    device.stop()
    assert [r["rating_id"] for r in device.pending()] == [device.serial.frames("rated")[-1]
                                                          ["rating_id"]]
    (kept,) = rejected_list(device.data_dir)
    assert kept["rating"]["rating_id"] == rid       # type: ignore[index]
    assert kept["error"] == "bad ? hall ?"


# Text as JSON can carry it: lone surrogates included ("\\ud800" is valid JSON).
json_text = st.text(st.characters() | st.characters(categories=["Cs"]), max_size=30)
json_values = json_text | st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | json_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=10)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(error=json_values, status=st.sampled_from(["rejected", "accepted", "duplicate"]))
def test_any_error_value_in_a_receipt_leaves_the_daemon_running(
        tmp_path_factory: object, error: object, status: str) -> None:
    tmp = tmp_path_factory.mktemp("r")   # type: ignore[attr-defined]
    device = Device(tmp).start()
    device.broker_up()
    rid = device.rate("C-1", 4)["rating_id"]
    device.message("receipt", json.dumps(
        {"receipts": [{"rating_id": rid, "status": status, "error": error}]}).encode())
    assert device.daemon.stats.receipts == 1 and device.daemon.stats.backlog == 0
    device.stop()
    assert device.pending() == []
    assert len(rejected_list(device.data_dir)) == (status == "rejected")
