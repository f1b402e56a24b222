"""The evaluator's own frames: numbering, and outcomes held until the window system can be
expected to have them (device/frames.py), with a recording link and virtual time."""

from __future__ import annotations

import json
from typing import Any

from device.clock import FakeClock
from device.frames import FrameWriter
from device.outbox import StorageError
from device.ports import DriverError


class RecordingLink:
    """A serial link that is up or down and keeps every frame it carried."""

    def __init__(self) -> None:
        self.up = True
        self.carried: list[dict[str, Any]] = []

    def send(self, data: bytes) -> bool:
        if not self.up:
            return False
        body = data.rsplit(b"*", 1)[0]
        self.carried.append(json.loads(body))
        return True


def rated(case_id: str) -> dict[str, Any]:
    return {"type": "rated", "case_id": case_id, "level": 5, "rating_id": case_id.lower() * 4}


def writer(link: RecordingLink, clock: FakeClock) -> FrameWriter:
    blocks = iter(range(1, 10**6, 1000))
    return FrameWriter(link, lambda count: next(blocks), clock=clock.monotonic)  # type: ignore[arg-type]


def test_an_outcome_written_just_before_the_link_dropped_is_sent_again_after_hello() -> None:
    link, clock = RecordingLink(), FakeClock()
    w = writer(link, clock)
    w.send({"type": "hello"})
    assert w.send(rated("A"))
    clock.advance(0.5)
    link.up = False
    assert w.link_lost() == 1              # written 0.5 s ago: perhaps never read
    assert not w.send(rated("B"))           # made while the link is down: held behind A
    link.up = True
    w.send({"type": "hello"})
    assert w.flush() == 2
    kinds = [(f["type"], f.get("case_id")) for f in link.carried]
    assert kinds == [("hello", None), ("rated", "A"), ("hello", None), ("rated", "A"),
                     ("rated", "B")]
    seqs = [f["seq"] for f in link.carried]
    assert seqs == sorted(set(seqs))        # the copy gets a new, higher seq


def test_an_outcome_the_link_carried_for_the_settle_time_is_settled_not_resent() -> None:
    link, clock = RecordingLink(), FakeClock()
    w = writer(link, clock)
    w.send(rated("A"))
    clock.advance(FrameWriter.SETTLE_S - 0.1)
    assert w.settled() == []
    clock.advance(0.2)
    assert [f["case_id"] for f in w.settled()] == ["A"]
    link.up = False
    assert w.link_lost() == 0 and not w.held


def test_a_clean_stop_settles_everything_written() -> None:
    link, clock = RecordingLink(), FakeClock()
    w = writer(link, clock)
    w.send(rated("A"))
    w.send({"type": "expired", "case_id": "B"})
    assert [f["case_id"] for f in w.settled(all_written=True)] == ["A", "B"]


def test_answers_are_never_held_again() -> None:
    link, clock = RecordingLink(), FakeClock()
    w = writer(link, clock)
    w.send({"type": "ack", "seq": 7})
    link.up = False
    assert w.link_lost() == 0
    assert link.carried == [{"type": "ack", "seq": 7}]   # the window's own seq, untouched


def test_numbers_come_from_reserved_blocks_and_go_on_without_one() -> None:
    link, clock = RecordingLink(), FakeClock()
    starts = iter([5001])
    failing = False

    def reserve(count: int) -> int:
        if failing:
            raise StorageError("disk full")
        return next(starts)

    w = FrameWriter(link, reserve, clock=clock.monotonic)  # type: ignore[arg-type]
    w.send({"type": "hello"})
    assert link.carried[-1]["seq"] == 5001           # above what an earlier run reserved
    failing = True
    w.seq = 5001 + FrameWriter.SEQ_BLOCK - 1          # the block is used up
    w.send({"type": "hello"})
    assert link.carried[-1]["seq"] == 5001 + FrameWriter.SEQ_BLOCK


class FailingLink(RecordingLink):
    """Open, but its writes fail while `fail` is set (a window system not reading)."""

    def __init__(self) -> None:
        super().__init__()
        self.fail = False

    def send(self, data: bytes) -> bool:
        if self.fail:
            raise DriverError("write timeout")
        return super().send(data)


def test_a_failed_write_holds_the_outcome_and_is_reported_not_raised() -> None:
    link, clock = FailingLink(), FakeClock()
    outcomes: list[str | None] = []
    w = FrameWriter(link, None, clock=clock.monotonic,  # type: ignore[arg-type]
                    report=outcomes.append)
    link.fail = True
    assert w.send(rated("A")) is False          # no exception reaches the loop
    assert w.send({"type": "ack", "seq": 3}) is False
    assert outcomes == ["write timeout", "write timeout"]
    assert [f["case_id"] for f in w.held] == ["A"]
    link.fail = False
    assert w.send({"type": "ack", "seq": 4}) is True
    assert outcomes[-1] is None
    assert w.flush() == 1 and link.carried[-1]["case_id"] == "A"
