"""Every boundary where the bridge reads what others wrote — MQTT rating, status,
telemetry and event payloads, the platform's answers and headers, its own state file —
fed arbitrary bytes, JSON, numbers and dates (hypothesis). Each asserts that nothing
escapes the adapter, and the classification: dead letter, rejected, retry, skipped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from broker_bridge.platform_client import PlatformError, _parse_results
from broker_bridge.watch.state import load_state

RID = "0123456789abcdef0123456789abcdef"


# Repeated keys are refused at every JSON boundary ---------------------------------------

@pytest.mark.parametrize("body", [
    b'{"results": [{"rating_id": "%s", "status": "accepted", "status": "rejected"}]}'
    % RID.encode(),
    b'{"results": [], "results": [{"rating_id": "%s", "status": "accepted"}]}' % RID.encode(),
])
def test_a_platform_answer_with_a_repeated_key_is_garbled_and_retried(body: bytes) -> None:
    with pytest.raises(PlatformError) as caught:
        _parse_results(body, 200)
    assert caught.value.retryable and "repeated key" in caught.value.detail


def test_a_platform_answer_with_a_byte_order_mark_is_read() -> None:
    body = b'\xef\xbb\xbf{"results": [{"rating_id": "%s", "status": "accepted"}]}' % RID.encode()
    assert _parse_results(body, 200)[RID].status == "accepted"


def test_a_watch_state_file_with_a_repeated_key_is_set_aside(tmp_path: Path) -> None:
    state = tmp_path / "watch-state.json"
    state.write_bytes(b'{"devices": {}, "devices": {"x": 1}}')
    assert load_state(state) is None
    assert (tmp_path / "watch-state.json.damaged").exists()
    state.write_text(json.dumps({"devices": {}}))
    assert load_state(state) == {"devices": {}}
