"""The core state machine in virtual time: every rule of SPEC §5, no sleeps."""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any

import pytest

from device.clock import FakeClock
from device.core.machine import Evaluator, Identity, iso_ms
from device.core.model import (
    Action,
    EmitEvent,
    FrameReceived,
    KeyDown,
    KeyUp,
    LinkChanged,
    Persist,
    PersistFailed,
    SendFrame,
    SettingsChanged,
    Show,
    Tick,
)
from device.core.settings import UiSettings

IDENTITY = Identity("421100-HG01-W03", "421100", "HG01", "W03")


def reply(actions: list[Action]) -> dict[str, Any]:
    """The ack/nak a frame got (always the first action)."""
    first = actions[0]
    assert isinstance(first, SendFrame) and first.frame["type"] in ("ack", "nak")
    return first.frame


class Harness:
    """Drives an Evaluator and keeps everything it did, like a recording fake."""

    def __init__(self, **settings: Any) -> None:
        self.clock = FakeClock()
        ids = (f"{n:032x}" for n in itertools.count(1))
        self.core = Evaluator(IDENTITY, UiSettings(window_name="03号窗口 不动产登记", **settings),
                              self.clock, new_rating_id=lambda: next(ids))
        self.actions: list[Action] = []
        self.seq = itertools.count(1)
        self._run(self.core.start(self.clock.now))

    def _run(self, actions: list[Action]) -> list[Action]:
        self.actions += actions
        return actions

    def at(self, seconds: float) -> Harness:
        """Advance virtual time, delivering every Tick the core asked for on the way."""
        end = self.clock.now + seconds
        while (d := self.core.next_deadline()) is not None and d <= end:
            self.clock.advance(max(0.0, d - self.clock.now))
            self._run(self.core.handle(Tick(self.clock.now)))
        self.clock.advance(end - self.clock.now)
        return self

    def frame(self, type_: str, **fields: Any) -> list[Action]:
        return self._run(self.core.handle(
            FrameReceived(type_, next(self.seq), fields, self.clock.now)))

    def press(self, level: int, hold: float = 0.0) -> list[Action]:
        out = self._run(self.core.handle(KeyDown(level, self.clock.now)))
        if hold:
            self.at(hold)
        out += self._run(self.core.handle(KeyUp(level, self.clock.now)))
        return out

    @property
    def screen(self) -> str:
        assert self.core.shown is not None
        return self.core.shown.name

    def ratings(self) -> list[dict[str, Any]]:
        return [a.rating for a in self.actions if isinstance(a, Persist)]

    def frames(self, type_: str | None = None) -> list[dict[str, Any]]:
        return [a.frame for a in self.actions if isinstance(a, SendFrame)
                and (type_ is None or a.frame["type"] == type_)]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [a.details for a in self.actions if isinstance(a, EmitEvent) and a.name == name]


def test_case_prompt_rate_thanks_rated_then_idle() -> None:
    h = Harness()
    assert h.screen == "idle"
    out = h.frame("case_completed", case_id="C1", service_name="不动产登记", staff_id="S7",
                  staff_name="李娜")
    assert out[0] == SendFrame({"type": "ack", "seq": 1})
    assert h.screen == "prompt" and h.core.shown is not None
    assert h.core.shown.case_id == "C1" and h.core.shown.remaining_s == 60
    h.at(2)
    out = h.press(4)
    kinds = [type(a).__name__ for a in out]
    # stored first, then thanks, then `rated`
    assert kinds.index("Persist") < kinds.index("Show") < kinds.index("SendFrame")
    (r,) = h.ratings()
    assert r["level"] == 4 and r["reason"] is None and r["trigger"] == "case"
    assert r["case"]["case_id"] == "C1" and r["case"]["service_name"] == "不动产登记"
    assert r["staff"] == {"staff_id": "S7", "staff_name": "李娜"}
    assert r["device_id"] == IDENTITY.device_id and r["schema"] == "hcp.rating/1"
    assert r["rated_at"].endswith("Z") and r["clock_synced"] is True
    assert h.frames("rated") == [{"type": "rated", "case_id": "C1", "level": 4,
                                  "rating_id": r["rating_id"]}]
    assert h.screen == "thanks"
    h.at(3)
    assert h.screen == "idle"


def test_low_level_asks_reason_then_stores_it() -> None:
    h = Harness()
    h.frame("case_completed", case_id="C1")
    h.press(2)
    assert h.screen == "reasons" and h.ratings() == []
    assert h.core.shown is not None
    opts = [(o.level, o.code) for o in h.core.shown.options]
    assert opts == [(5, "R01"), (4, "R02"), (3, "R03"), (2, "R04"), (1, None)]
    h.at(0.2)
    h.press(4)
    (r,) = h.ratings()
    assert (r["level"], r["reason"]) == (2, "R02")


def test_reasons_skip_and_timeout_store_null_reason() -> None:
    h = Harness(reasons_timeout_s=30)
    h.frame("case_completed", case_id="C1")
    h.press(1)
    h.press(1)  # skip key
    h.at(5)
    h.frame("case_completed", case_id="C2")
    h.press(2)
    h.at(31)
    assert [(r["level"], r["reason"]) for r in h.ratings()] == [(1, None), (2, None)]


def test_no_reasons_configured_stores_at_once() -> None:
    h = Harness(reasons=())
    h.frame("case_completed", case_id="C1")
    h.press(1)
    assert h.screen == "thanks" and h.ratings()[0]["reason"] is None


def test_prompt_expires_without_rating() -> None:
    h = Harness(prompt_timeout_s=60)
    h.frame("case_completed", case_id="C1")
    h.at(59.5)
    assert h.screen == "prompt" and h.core.shown and h.core.shown.remaining_s == 1
    h.at(1)
    assert h.screen == "idle" and h.ratings() == []
    assert h.frames("expired") == [{"type": "expired", "case_id": "C1"}]
    assert h.events("prompt_expired") == [{"case_id": "C1"}]
    # an expired case may be sent again
    assert reply(h.frame("case_completed", case_id="C1"))["type"] == "ack"
    assert h.screen == "prompt"


def test_countdown_updates_every_second() -> None:
    h = Harness(prompt_timeout_s=5)
    h.frame("case_completed", case_id="C1")
    h.at(5)
    shown = [a.screen.remaining_s for a in h.actions if isinstance(a, Show)
             and a.screen.name == "prompt"]
    assert shown == [5, 4, 3, 2, 1]


def test_queue_order_and_limit() -> None:
    h = Harness()
    for i in range(8):
        assert h.frame("case_completed", case_id=f"C{i}")[0] == SendFrame(
            {"type": "ack", "seq": i + 1})
    assert h.frame("case_completed", case_id="C8")[0] == SendFrame(
        {"type": "nak", "seq": 9, "error": "queue_full"})
    for i in range(8):
        assert h.core.shown is not None and h.core.shown.case_id == f"C{i}"
        h.press(5)
        h.at(3)
    assert [r["case"]["case_id"] for r in h.ratings()] == [f"C{i}" for i in range(8)]
    assert h.screen == "idle"


def test_duplicate_case_pending_and_for_24h() -> None:
    h = Harness()
    h.frame("case_completed", case_id="C1")
    assert reply(h.frame("case_completed", case_id="C1"))["error"] == "duplicate_case"
    h.press(5)
    h.at(3)
    h.at(23 * 3600)
    assert reply(h.frame("case_completed", case_id="C1"))["error"] == "duplicate_case"
    h.at(3600)
    assert reply(h.frame("case_completed", case_id="C1"))["type"] == "ack"


def test_a_forward_clock_step_does_not_shorten_the_24_h_memory() -> None:
    """A Pi without an RTC rates a case before NTP has synced; the sync then steps the
    clock 60 h forward. By the wall clock the rating is 60 h old, but only a minute has
    passed: the case must still be refused."""
    h = Harness()
    h.frame("case_completed", case_id="C1")
    h.press(5)
    h.at(60)
    h.clock.wall_now += 60 * 3600
    assert reply(h.frame("case_completed", case_id="C1"))["error"] == "duplicate_case"
    h.at(24 * 3600)           # a day by both clocks: now it may be rated again
    assert reply(h.frame("case_completed", case_id="C1"))["type"] == "ack"


def test_duplicate_memory_survives_restart() -> None:
    clock = FakeClock()
    core = Evaluator(IDENTITY, UiSettings(window_name="W"), clock,
                     rated_cases={"C1": clock.wall_now - 3600})
    core.start(clock.now)
    out = core.handle(FrameReceived("case_completed", 1, {"case_id": "C1"}, clock.now))
    assert out[0] == SendFrame({"type": "nak", "seq": 1, "error": "duplicate_case"})


def test_cancelled_case_stores_nothing_even_on_reasons_screen() -> None:
    h = Harness()
    h.frame("case_completed", case_id="C1")
    h.frame("case_completed", case_id="C2")
    h.press(2)
    assert h.screen == "reasons"
    h.frame("cancel", case_id="C1")
    assert h.events("prompt_cancelled") == [{"case_id": "C1"}]
    assert h.screen == "prompt" and h.core.shown and h.core.shown.case_id == "C2"
    h.frame("cancel", case_id="C2")
    assert h.screen == "idle" and h.ratings() == [] and h.frames("expired") == []
    # a cancelled case may come again
    assert reply(h.frame("case_completed", case_id="C1"))["type"] == "ack"


def test_pause_hides_case_and_freezes_its_timer() -> None:
    h = Harness(prompt_timeout_s=60)
    h.frame("case_completed", case_id="C1")
    h.at(50)
    h.frame("pause", reason="午休")
    assert h.screen == "paused" and h.core.shown and h.core.shown.message == "午休"
    h.press(5)  # ignored while paused
    h.at(600)
    assert h.frames("expired") == [] and h.ratings() == []
    h.frame("resume")
    assert h.screen == "prompt" and h.core.shown and h.core.shown.remaining_s == 10
    h.at(10)
    assert h.frames("expired") == [{"type": "expired", "case_id": "C1"}]


def test_one_press_one_rating_lockout_and_thanks() -> None:
    h = Harness(lockout_s=1.0, thanks_s=0.5)
    h.frame("case_completed", case_id="C1")
    h.frame("case_completed", case_id="C2")
    h.press(5)
    h.press(5)  # during thanks
    h.at(0.6)
    assert h.screen == "prompt"  # C2 already on screen
    h.press(4)  # within lockout after the rating: ignored
    h.at(0.5)
    h.press(3)
    assert [r["level"] for r in h.ratings()] == [5, 3]


def test_two_keys_at_once_ignored() -> None:
    h = Harness()
    h.frame("case_completed", case_id="C1")
    h._run(h.core.handle(KeyDown(3, h.clock.now)))
    # the second key, while the first is still held, does nothing
    h._run(h.core.handle(KeyDown(1, h.clock.now)))
    h._run(h.core.handle(KeyUp(1, h.clock.now)))
    h._run(h.core.handle(KeyUp(3, h.clock.now)))
    assert [r["level"] for r in h.ratings()] == [3]


def test_stuck_key_raises_event_and_is_ignored_until_released() -> None:
    h = Harness(allow_spontaneous=False)
    h._run(h.core.handle(KeyDown(2, h.clock.now)))
    h.at(10.5)
    assert h.events("button_stuck") == [{"level": 2, "held_s": 10.0}]
    h.frame("case_completed", case_id="C1")
    # other keys still work while the stuck one is down
    h.press(4)
    assert [r["level"] for r in h.ratings()] == [4]
    h._run(h.core.handle(KeyUp(2, h.clock.now)))
    assert len(h.events("button_stuck")) == 1


def test_a_key_found_down_at_start_rates_nothing_but_is_reported_stuck() -> None:
    h = Harness()                                     # spontaneous ratings allowed
    h._run(h.core.handle(KeyDown(3, h.clock.now, already_down=True)))
    h.at(10.5)
    assert h.ratings() == [] and h.screen == "idle"
    assert h.events("button_stuck") == [{"level": 3, "held_s": 10.0}]
    h._run(h.core.handle(KeyUp(3, h.clock.now)))
    h.press(3)                                        # released and pressed: a real press
    assert [r["level"] for r in h.ratings()] == [3]


def test_spontaneous_rating_and_interval() -> None:
    h = Harness(spontaneous_min_interval_s=60)
    h.frame("staff_login", staff_id="S1", staff_name="王芳")
    assert h.core.shown and h.core.shown.staff_name == "王芳"
    h.press(5)
    h.at(3)
    h.press(4)  # within 60 s of the last spontaneous rating
    h.at(58)
    h.press(3)
    rs = h.ratings()
    assert [r["level"] for r in rs] == [5, 3]
    assert rs[0]["trigger"] == "spontaneous" and rs[0]["case"] is None
    assert rs[0]["staff"] == {"staff_id": "S1", "staff_name": "王芳"}
    assert h.frames("rated") == []  # no case: nothing to tell the window
    h.frame("staff_logout")
    h.at(61)
    h.press(5)
    assert h.ratings()[-1]["staff"] is None


def test_spontaneous_disabled() -> None:
    h = Harness(allow_spontaneous=False)
    h.press(5)
    assert h.ratings() == [] and h.screen == "idle"


def test_seq_increases_and_ids_unique() -> None:
    h = Harness(spontaneous_min_interval_s=0, lockout_s=0)
    for _ in range(5):
        h.press(5)
        h.at(3.1)
    rs = h.ratings()
    assert [r["seq"] for r in rs] == [1, 2, 3, 4, 5]
    assert len({r["rating_id"] for r in rs}) == 5


def test_persist_failure_shows_error_not_thanks_and_keeps_case() -> None:
    h = Harness()
    h.frame("case_completed", case_id="C1")
    out = h.press(5)
    persist = next(a for a in out if isinstance(a, Persist))
    out = h._run(h.core.handle(PersistFailed(persist.rating["rating_id"], "disk full",
                                             h.clock.now)))
    assert h.screen == "error"
    h.at(5)
    assert h.screen == "prompt" and h.core.shown and h.core.shown.case_id == "C1"
    # the case can still be rated (it is not in the duplicate memory)
    h.at(1)
    h.press(4)
    assert h.ratings()[-1]["level"] == 4


def test_unsynced_clock_is_reported_in_record() -> None:
    h = Harness()
    h.clock.is_synced = False
    h.press(5)
    assert h.ratings()[0]["clock_synced"] is False


def test_clock_synced_qualifies_the_time_of_the_press_not_of_the_reason() -> None:
    h = Harness()
    h.clock.is_synced = False
    pressed_at = h.clock.wall_now
    h.press(2)                       # the time is taken here, from a clock not yet synced
    assert h.screen == "reasons"
    h.clock.is_synced = True         # NTP syncs and steps the clock while the reason waits
    h.clock.wall_now += 3 * 3600
    h.press(5)
    (r,) = h.ratings()
    assert r["rated_at"] == iso_ms(pressed_at) and r["clock_synced"] is False


def test_offline_badge_on_idle_only() -> None:
    h = Harness()
    h._run(h.core.handle(LinkChanged(False, h.clock.now)))
    assert h.core.shown and h.core.shown.offline
    h.frame("case_completed", case_id="C1")
    assert h.core.shown and not h.core.shown.offline


def test_settings_change_applies_to_screen() -> None:
    h = Harness()
    new = replace(h.core.settings, window_name="05号窗口 社保")
    h._run(h.core.handle(SettingsChanged(new, h.clock.now)))
    assert h.core.shown and h.core.shown.window_name == "05号窗口 社保"


def test_flush_stores_level_chosen_on_reasons_screen() -> None:
    h = Harness()
    h.frame("case_completed", case_id="C1")
    h.press(1)
    h._run(h.core.flush(h.clock.now))
    assert [(r["level"], r["reason"]) for r in h.ratings()] == [(1, None)]


@pytest.mark.parametrize("ftype", ["ping", "staff_logout", "resume"])
def test_simple_frames_are_acked(ftype: str) -> None:
    h = Harness()
    assert h.frame(ftype)[0] == SendFrame({"type": "ack", "seq": 1})


@pytest.mark.parametrize("second", ["duplicate", "queue_full"])
def test_nak_comes_before_a_rating_stored_by_a_timer_in_the_same_event(second: str) -> None:
    """A frame that arrives just after the reasons timeout ran out (before the loop ticked)
    triggers that rating's Persist first. Its nak must still lead the actions: the daemon
    stops at a failed Persist, and the window would never get its answer."""
    h = Harness(reasons_timeout_s=3)
    if second == "duplicate":
        h.frame("case_completed", case_id="C1")
        h.press(2)
    else:
        h.press(2)  # a spontaneous rating on its reasons screen while the queue fills
        for i in range(1, 9):
            h.frame("case_completed", case_id=f"C{i}")
    assert h.screen == "reasons"
    h.clock.advance(5)  # the reasons deadline passes; no Tick yet
    out = h.frame("case_completed", case_id="C1" if second == "duplicate" else "C9")
    assert any(isinstance(a, Persist) for a in out)
    first = out[0]
    assert isinstance(first, SendFrame)
    assert first.frame["type"] == "nak"
    assert first.frame["error"] == ("duplicate_case" if second == "duplicate" else "queue_full")
