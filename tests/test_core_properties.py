"""Property-based tests of the core state machine: random sequences of key presses, held
keys, frames from the window, timer ticks, link changes, new settings and a disk that
fills up and empties, driven in virtual time through the daemon's own executor
(device/executor.py: actions in order; a failed Persist stops the list and is fed back
as PersistFailed). After every step, what a citizen, the window system and the platform
would observe must be sane:

- a case is stored at most once; every stored rating comes from a key press of its
  level made while its case (or, for a spontaneous rating, the idle screen) was shown;
- a thanks screen never appears, and a `rated` frame is never sent, unless the rating
  was stored first, in the same action list;
- every frame from the window gets exactly one answer, and it comes first;
- at most 8 cases are pending; a timed screen always has a deadline, and once the keys
  are released and time passes the evaluator returns to idle with nothing pending;
- every stored record passes the bridge's record rules.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.rating import check_record
from device.clock import FakeClock
from device.core.machine import QUEUE_MAX, Evaluator, Identity, iso_ms
from device.core.model import (
    Action,
    Event,
    FrameReceived,
    KeyDown,
    KeyUp,
    LinkChanged,
    Persist,
    PersistFailed,
    Screen,
    SendFrame,
    SettingsChanged,
    Show,
    Tick,
)
from device.core.settings import DEFAULT_REASONS, UiSettings
from device.executor import ActionExecutor
from device.faults import DriverHealth
from drivers.indicators import NullIndicators

IDENTITY = Identity("421100-HG01-W03", "421100", "HG01", "W03")
CASE_IDS = [f"C{i}" for i in range(10)]   # more than the queue holds
TIMED = ("prompt", "reasons", "thanks", "error")

settings_st = st.builds(
    UiSettings,
    window_name=st.just("03号窗口 不动产登记"),
    prompt_timeout_s=st.sampled_from([2.0, 5.0, 60.0]),
    reasons_timeout_s=st.sampled_from([1.0, 3.0, 30.0]),
    thanks_s=st.sampled_from([0.1, 0.5, 3.0]),
    lockout_s=st.sampled_from([0.0, 0.3, 1.0, 5.0]),
    allow_spontaneous=st.booleans(),
    spontaneous_min_interval_s=st.sampled_from([0.0, 2.0, 60.0]),
    reasons=st.sampled_from([DEFAULT_REASONS, (), (("X1", "等候太久"), ("X2", "材料反复"))]),
)

level_st = st.integers(1, 5)
# Mostly the same few cases (repeats, cancels of the case on screen), sometimes many.
case_id_st = st.one_of(st.sampled_from(CASE_IDS[:2]), st.sampled_from(CASE_IDS))
frame_st = st.one_of(
    st.tuples(st.just("case_completed"), case_id_st),
    st.tuples(st.just("cancel"), case_id_st),
    st.tuples(st.sampled_from(["pause", "resume", "staff_login", "staff_logout", "ping"]),
              st.none()),
)
step_st = st.one_of(
    st.tuples(st.just("wait"), st.sampled_from([0.0, 0.05, 0.2, 0.5, 1.0, 2.5, 4.0, 11.0, 70.0])),
    st.tuples(st.just("tick"), st.sampled_from([0.0, 0.01, 0.3, 1.7])),
    # Time passes with no Tick: the next event finds a deadline already past (the loop
    # was busy when it expired).
    st.tuples(st.just("jump"), st.sampled_from([0.05, 0.5, 2.0, 6.0, 31.0])),
    st.tuples(st.just("press"), level_st),
    st.tuples(st.just("down"), level_st),
    st.tuples(st.just("up"), level_st),
    # A key the driver found down when it started: held, never a press.
    st.tuples(st.just("found_down"), level_st),
    st.tuples(st.just("frame"), frame_st),
    st.tuples(st.just("link"), st.booleans()),
    st.tuples(st.just("disk_full"), st.booleans()),
    st.tuples(st.just("stale_persist_failed"), st.none()),
    st.tuples(st.just("settings"), settings_st),
)


@dataclass
class KeyPress:
    level: int
    wall: str             # rated_at a rating from this press would carry
    screen: str
    case_id: str | None
    stale: bool           # a deadline had passed unticked: the screen was out of date


class Panel:
    """The display the executor drives: remembers what is on it."""

    def __init__(self) -> None:
        self.screen: Screen | None = None

    def show(self, screen: Screen) -> None:
        self.screen = screen

    def close(self) -> None:
        pass


@dataclass
class World:
    """The evaluator plus what a daemon running it would have done and shown."""

    ui: UiSettings
    clock: FakeClock = field(default_factory=FakeClock)
    disk_full: bool = False
    stored: list[Persist] = field(default_factory=list)
    presses: list[KeyPress] = field(default_factory=list)
    panel: Panel = field(default_factory=Panel)
    frames_out: list[dict[str, Any]] = field(default_factory=list)
    seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        ids = (f"{n:032x}" for n in itertools.count(1))
        self.core = Evaluator(IDENTITY, self.ui, self.clock, new_rating_id=lambda: next(ids))
        self.executor = ActionExecutor(
            self.handle, self.store, self.frames_out.append, lambda name, details: None,
            self.panel, NullIndicators(), DriverHealth(lambda name, details: None),
            self.clock.monotonic)
        self.executor.run(self.checked(self.core.start(self.clock.now)))

    @property
    def displayed(self) -> Screen | None:
        return self.panel.screen

    # The daemon's executor, observed ---------------------------------------------------

    def send(self, event: Event) -> list[Action]:
        actions = self.handle(event)
        self.executor.run(actions)
        return actions

    def handle(self, event: Event) -> list[Action]:
        """The core, as the executor calls it (also for PersistFailed)."""
        return self.checked(self.core.handle(event))

    def checked(self, actions: list[Action]) -> list[Action]:
        check_action_list(actions, self.displayed)
        return actions

    def store(self, action: Persist) -> str | None:
        if self.disk_full:
            return "No space left"
        self.stored.append(action)
        return None

    # Steps ------------------------------------------------------------------------------

    def wait(self, seconds: float) -> None:
        """Time passes; the loop ticks at every deadline the core asks for."""
        end = self.clock.now + seconds
        while (d := self.core.next_deadline()) is not None and d <= end:
            self.clock.advance(max(0.0, d - self.clock.now))
            self.send(Tick(self.clock.now))
        self.clock.advance(end - self.clock.now)

    def key_down(self, level: int) -> None:
        shown = self.displayed
        assert shown is not None
        deadline = self.core.next_deadline()
        stale = deadline is not None and deadline <= self.clock.now
        self.presses.append(KeyPress(level, iso_ms(self.clock.wall()), shown.name,
                                     shown.case_id, stale))
        self.send(KeyDown(level, self.clock.now))

    def frame(self, kind: str, case_id: str | None) -> None:
        fields: dict[str, Any] = {}
        if kind in ("case_completed", "cancel"):
            fields["case_id"] = case_id
        if kind == "case_completed":
            fields["service_name"] = "不动产登记"
        if kind == "staff_login":
            fields.update(staff_id="S7", staff_name="李娜")
        seq = next(self.seq)
        actions = self.send(FrameReceived(kind, seq, fields, self.clock.now))
        answers = [a.frame for a in actions if isinstance(a, SendFrame)
                   and a.frame["type"] in ("ack", "nak")]
        assert answers and answers[0]["seq"] == seq and len(answers) == 1, actions
        assert actions[0] == SendFrame(answers[0]), \
            f"the answer to frame {seq} is not the first action: {actions}"

    def step(self, step: tuple[str, Any]) -> None:
        kind, arg = step
        if kind == "wait":
            self.wait(arg)
        elif kind == "jump":
            self.clock.advance(arg)
        elif kind == "tick":
            self.clock.advance(arg)
            self.send(Tick(self.clock.now))
        elif kind == "press":
            self.key_down(arg)
            self.send(KeyUp(arg, self.clock.now))
        elif kind == "down":
            self.key_down(arg)
        elif kind == "up":
            self.send(KeyUp(arg, self.clock.now))
        elif kind == "found_down":
            self.send(KeyDown(arg, self.clock.now, already_down=True))
        elif kind == "frame":
            self.frame(*arg)
        elif kind == "link":
            self.send(LinkChanged(arg, self.clock.now))
        elif kind == "disk_full":
            self.disk_full = arg
        elif kind == "stale_persist_failed":
            self.send(PersistFailed("f" * 32, "late news", self.clock.now))
        elif kind == "settings":
            self.send(SettingsChanged(arg, self.clock.now))
        else:  # pragma: no cover
            raise AssertionError(kind)

    # What must always hold ----------------------------------------------------------------

    def check(self) -> None:
        core = self.core
        assert core.pending_cases <= QUEUE_MAX
        cases = [p.case_id for p in self.stored if p.case_id is not None]
        assert len(cases) == len(set(cases)), f"a case stored twice: {cases}"
        ids = [p.rating["rating_id"] for p in self.stored]
        assert len(ids) == len(set(ids))
        seqs = [p.rating["seq"] for p in self.stored]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        unmatched = list(self.presses)
        for p in self.stored:
            r = p.rating
            check_record(r)
            match = next((k for k in unmatched if k.level == r["level"]
                          and k.wall == r["rated_at"] and _fits(k, p.case_id)), None)
            assert match is not None, f"rating without a press: {r}"
            unmatched.remove(match)
        shown = self.displayed
        assert shown is not None and shown == core.shown
        if shown.name in TIMED:
            assert core.next_deadline() is not None, f"stuck on {shown.name}"
        rated = [f for f in self.frames_out if f["type"] == "rated"]
        stored_ids = {p.rating["rating_id"] for p in self.stored}
        assert all(f["rating_id"] in stored_ids for f in rated), "rated without a store"

    def settle(self) -> None:
        """Release every key, resume, restore storage, let time pass: back to idle."""
        for level in range(1, 6):
            self.send(KeyUp(level, self.clock.now))
        self.disk_full = False
        self.frame("resume", None)
        self.check()
        budget = (QUEUE_MAX + 2) * (self.core.settings.prompt_timeout_s
                                    + self.core.settings.reasons_timeout_s + 10)
        self.wait(budget)
        self.check()
        assert self.displayed is not None and self.displayed.name == "idle", self.displayed
        assert self.core.pending_cases == 0 and self.core.next_deadline() is None


def _fits(press: KeyPress, case_id: str | None) -> bool:
    """Could this press have made a rating of this case (None: a spontaneous one)?"""
    if case_id is None:
        # On idle; or on a screen out of date because its deadline had passed before the
        # press (the core runs timers first: a prompt that ran out does not take a late
        # press, which then counts as on idle).
        return press.screen == "idle" or press.stale
    return press.screen == "prompt" and press.case_id == case_id


def check_action_list(actions: list[Action], before: Screen | None) -> None:
    """Thanks and `rated` only right behind the Persist of their rating (`before` is the
    screen shown when the list started)."""
    shown = before
    for i, action in enumerate(actions):
        if isinstance(action, SendFrame) and action.frame["type"] == "rated":
            persists = [a for a in actions[:i] if isinstance(a, Persist)]
            assert persists and persists[-1].rating["rating_id"] == action.frame["rating_id"], \
                f"rated without its Persist before it: {actions}"
        if isinstance(action, Show):
            if action.screen.name == "thanks" and (shown is None or shown.name != "thanks"):
                # Redrawing thanks already showing (a new clerk logs in) needs no store;
                # thanks appearing does, right before it.
                persist = actions[i - 1] if i else None
                assert isinstance(persist, Persist), \
                    f"thanks without a Persist right before it: {actions}"
                assert persist.rating["level"] == action.screen.level
            shown = action.screen


PROPERTY = settings(max_examples=250, deadline=None, stateful_step_count=50,
                    suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(ui=settings_st, steps=st.lists(step_st, max_size=45))
def test_random_event_sequences_keep_the_promises(ui: UiSettings,
                                                  steps: list[tuple[str, Any]]) -> None:
    world = World(ui)
    world.check()
    for step in steps:
        world.step(step)
        world.check()
    world.settle()


@PROPERTY
@given(ui=settings_st, cases=st.lists(st.sampled_from(CASE_IDS), min_size=1, max_size=12),
       levels=st.lists(level_st, min_size=1, max_size=12), full=st.lists(st.booleans()))
def test_busy_window_every_case_rated_at_most_once(ui: UiSettings, cases: list[str],
                                                   levels: list[int],
                                                   full: list[bool]) -> None:
    """A denser stream: cases arrive, citizens press, the disk fills and empties."""
    world = World(ui)
    for i, (case_id, level) in enumerate(zip(cases, itertools.cycle(levels), strict=False)):
        world.disk_full = full[i] if i < len(full) else False
        world.frame("case_completed", case_id)
        world.wait(0.2)
        world.key_down(level)
        world.send(KeyUp(level, world.clock.now))
        world.key_down(1)   # skip the reasons, or an ignored second press
        world.send(KeyUp(1, world.clock.now))
        world.wait(ui.thanks_s + ui.lockout_s + 0.1)
        world.check()
    world.settle()


@PROPERTY
@given(ui=settings_st, level=level_st, jump=st.sampled_from([0.5, 1.5, 4.0, 31.0, 70.0]),
       frame=frame_st, queued=st.lists(st.sampled_from(CASE_IDS), max_size=9),
       disk_full=st.booleans())
def test_a_frame_is_answered_first_even_when_a_deadline_passed_before_it(
        ui: UiSettings, level: int, jump: float, frame: tuple[str, str | None],
        queued: list[str], disk_full: bool) -> None:
    """The window's frame arrives just after a prompt, reasons or thanks timer ran out
    and before the loop ticked: the timer's actions (even a rating stored on the reasons
    timeout, whose store may fail) must not push the answer out or behind them."""
    world = World(ui)
    world.frame("case_completed", "C0")
    for case_id in queued:
        world.frame("case_completed", case_id)
    world.wait(0.1)
    world.key_down(level)
    world.send(KeyUp(level, world.clock.now))
    world.check()
    world.disk_full = disk_full
    world.clock.advance(jump)
    world.frame(*frame)
    world.check()
    world.settle()
