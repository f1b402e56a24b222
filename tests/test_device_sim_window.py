"""`hcp-sim device` plays the window system as one should (SPEC §4): a frame waits for
the evaluator's hello (one sent while the evaluator opens its serial port can be lost),
and a frame with no ack or nak is sent again with its seq, a bounded number of times."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from simulator.device_sim import RESEND_AFTER_S, RESEND_TRIES, DeviceSim


class FakeWindow:
    def __init__(self) -> None:
        self.sent: list[tuple[int, str, dict[str, Any]]] = []
        self._seq = 100

    def send(self, frame_type: str, /, **fields: Any) -> int:
        seq = fields.pop("seq", None)
        if seq is None:
            self._seq += 1
            seq = self._seq
        self.sent.append((seq, frame_type, fields))
        return int(seq)

    def close(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def sim(tmp_path: Path) -> tuple[DeviceSim, FakeWindow, Clock]:
    args = argparse.Namespace(attach=None, data_dir=str(tmp_path))
    device = DeviceSim(args)
    assert device.window is not None
    device.window.close()
    window = FakeWindow()
    device.window = window  # type: ignore[assignment]
    clock = Clock()
    device.clock = clock.monotonic
    return device, window, clock


def test_frames_before_hello_wait_for_it_and_keep_their_order(
        sim: tuple[DeviceSim, FakeWindow, Clock]) -> None:
    device, window, _ = sim
    device.send("staff_login", staff_id="S007", staff_name="李娜")
    device.send("case_completed", case_id="C-1")
    assert window.sent == []
    assert any("held until the evaluator says hello" in m for m in device.messages)
    device._on_window_frame({"type": "hello", "device_id": "D", "version": "1"})
    assert [(t, f) for _, t, f in window.sent] == [
        ("staff_login", {"staff_id": "S007", "staff_name": "李娜"}),
        ("case_completed", {"case_id": "C-1"})]
    device.send("cancel", case_id="C-1")           # after hello: at once
    assert window.sent[-1][1:] == ("cancel", {"case_id": "C-1"})


def test_an_unanswered_frame_is_sent_again_with_its_seq_a_bounded_number_of_times(
        sim: tuple[DeviceSim, FakeWindow, Clock]) -> None:
    device, window, clock = sim
    device._say_held()
    device.send("case_completed", case_id="C-1")
    (first,) = window.sent
    clock.now += RESEND_AFTER_S - 0.01
    device._resend_unanswered()
    assert len(window.sent) == 1                   # not yet
    for _ in range(RESEND_TRIES + 3):
        clock.now += RESEND_AFTER_S
        device._resend_unanswered()
    assert len(window.sent) == RESEND_TRIES
    assert {s for s, _, _ in window.sent} == {first[0]}
    assert {(t, tuple(f.items())) for _, t, f in window.sent} == {
        ("case_completed", (("case_id", "C-1"),))}
    assert any(f"no answer after {RESEND_TRIES} tries" in m for m in device.messages)


def test_an_answered_frame_is_not_sent_again(
        sim: tuple[DeviceSim, FakeWindow, Clock]) -> None:
    device, window, clock = sim
    device._say_held()
    device.send("case_completed", case_id="C-1")
    device.send("case_completed", case_id="C-2")
    seq1, seq2 = (s for s, _, _ in window.sent)
    device._on_window_frame({"type": "ack", "seq": seq1})
    device._on_window_frame({"type": "nak", "seq": seq2, "error": "duplicate_case"})
    clock.now += 10 * RESEND_AFTER_S
    device._resend_unanswered()
    assert len(window.sent) == 2
