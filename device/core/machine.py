"""The evaluator's behaviour (SPEC §5) as one pure state machine.

Events go in (`handle`), actions come out; time comes only from the events and from
the injected clock, so every timeout, lockout and stuck-key rule can be tested in
virtual time. The machine never touches a file, a socket or the real clock. What the
record of a rating holds is device/core/rating_record.py; which screen a state shows and
what is said with it, device/core/screen_choice.py.
"""

from __future__ import annotations

import math
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from common.serial_codec import ack, nak
from device.core.model import (
    LEVEL_LABELS,
    Action,
    EmitEvent,
    Event,
    Feedback,
    FrameReceived,
    InputKind,
    KeyDown,
    KeyUp,
    LinkChanged,
    Persist,
    PersistFailed,
    Screen,
    SendFrame,
    SettingsChanged,
    Show,
)
from device.core.rating_record import Identity, build_rating, iso_ms
from device.core.screen_choice import (
    REASON_KEYS,
    SKIP_KEY,
    choose_screen,
    reason_options,
    spoken,
)
from device.core.settings import UiSettings

# Identity, iso_ms, REASON_KEYS and SKIP_KEY live beside (rating_record, screen_choice)
# and stay importable from here, where the daemon, the tools and the tests look for them.
__all__ = ["DUPLICATE_WINDOW_S", "ERROR_SCREEN_S", "QUEUE_MAX", "REASON_KEYS", "SKIP_KEY",
           "STUCK_AFTER_S", "Evaluator", "Identity", "Interaction", "PendingCase",
           "WallClock", "iso_ms"]

QUEUE_MAX = 8                 # pending cases, including the one on screen
DUPLICATE_WINDOW_S = 24 * 3600
STUCK_AFTER_S = 10.0
ERROR_SCREEN_S = 5.0


class WallClock(Protocol):
    def wall(self) -> float: ...

    def synced(self) -> bool: ...


@dataclass
class PendingCase:
    case_id: str
    fields: dict[str, Any]
    remaining_s: float | None = None   # prompt time left while hidden by a pause


@dataclass
class Interaction:
    """A rating under way: a case (or the window itself) on the prompt or reasons screen."""

    case: PendingCase | None           # None: a spontaneous rating of the window
    stage: str                         # "prompt" | "reasons"
    deadline: float
    level: int | None = None
    input: InputKind = "button"
    pressed_wall: float = 0.0
    pressed_synced: bool = False       # whether the clock could be trusted at that moment
    pressed_mono: float = 0.0
    paused_remaining: float | None = None


@dataclass
class _Undo:
    """What to restore if the outbox refuses the rating we just asked it to store."""

    rating_id: str
    case: PendingCase | None
    previous_spontaneous_t: float | None


@dataclass
class Evaluator:
    identity: Identity
    settings: UiSettings
    clock: WallClock
    first_seq: int = 1
    rated_cases: dict[str, float] = field(default_factory=dict)  # case_id -> rated epoch
    # case_id -> monotonic time of the rating, where known (this boot): the wall clock of a
    # Pi without an RTC can jump hours forward when NTP syncs, which must not shorten the
    # 24 h memory. A case counts as recent while either clock says so.
    rated_cases_mono: dict[str, float] = field(default_factory=dict)
    new_rating_id: Callable[[], str] = field(default=lambda: uuid.uuid4().hex)

    def __post_init__(self) -> None:
        self.seq = self.first_seq
        self.queue: deque[PendingCase] = deque()
        self.active: Interaction | None = None
        self.paused = False
        self.pause_reason: str | None = None
        self.staff: dict[str, str | None] | None = None
        self.offline = False
        self.thanks_until: float | None = None
        self.thanks_level: int | None = None
        self.error_until: float | None = None
        self.error_message: str | None = None
        self.lockout_until = -math.inf
        self.last_spontaneous_t: float | None = None
        self.held: dict[int, float] = {}      # level -> key-down time
        self.stuck: set[int] = set()
        self.shown: Screen | None = None
        self._undo: _Undo | None = None
        self._spontaneous_before: float | None = None

    # ------------------------------------------------------------------ public

    def start(self, t: float) -> list[Action]:
        return self._refresh(t, [])

    def handle(self, event: Event) -> list[Action]:
        out: list[Action] = []
        self._timers(event.t, out)  # a late event must not act on an expired prompt
        if isinstance(event, KeyDown):
            self._key_down(event, out)
        elif isinstance(event, KeyUp):
            self.held.pop(event.level, None)
            self.stuck.discard(event.level)
        elif isinstance(event, FrameReceived):
            self._frame(event, out)
        elif isinstance(event, PersistFailed):
            self._persist_failed(event, out)
        elif isinstance(event, LinkChanged):
            self.offline = not event.online
        elif isinstance(event, SettingsChanged):
            self.settings = event.settings
        return self._refresh(event.t, out)

    def next_deadline(self) -> float | None:
        """The next moment a Tick is needed (timeouts, countdown digits, stuck keys)."""
        times: list[float] = []
        if self.thanks_until is not None:
            times.append(self.thanks_until)
        if self.error_until is not None:
            times.append(self.error_until)
        if self.active is not None and not self.paused:
            d = self.active.deadline
            times.append(d)
            # the next whole second of the countdown
            if self.shown is not None and self.shown.remaining_s is not None:
                times.append(d - (self.shown.remaining_s - 1))
        times += [t0 + STUCK_AFTER_S for lvl, t0 in self.held.items() if lvl not in self.stuck]
        return min(times) if times else None

    def flush(self, t: float) -> list[Action]:
        """On shutdown: a level already pressed (reasons screen) is stored, not lost."""
        out: list[Action] = []
        act = self.active
        if act is not None and act.stage == "reasons":
            self._rate(act, None, t, out)
        return out

    @property
    def pending_cases(self) -> int:
        return len(self.queue)

    # ------------------------------------------------------------------ keys

    def _key_down(self, ev: KeyDown, out: list[Action]) -> None:
        if ev.level not in LEVEL_LABELS or ev.level in self.held:
            return
        others = [lvl for lvl in self.held if lvl not in self.stuck]
        self.held[ev.level] = ev.t
        if others or ev.already_down:
            return  # two keys down at once: ignore the newcomer
        if (ev.t < self.lockout_until or self.thanks_until is not None
                or self.error_until is not None or self.paused):
            return
        act = self.active
        if act is None:
            self._spontaneous(ev, out)
        elif act.stage == "prompt":
            self._level_pressed(act, ev, out)
        else:
            self._reason_pressed(act, ev, out)

    def _spontaneous(self, ev: KeyDown, out: list[Action]) -> None:
        s = self.settings
        if not s.allow_spontaneous or self.queue:
            return
        last = self.last_spontaneous_t
        if last is not None and ev.t - last < s.spontaneous_min_interval_s:
            return
        act = Interaction(case=None, stage="prompt", deadline=ev.t)
        self._spontaneous_before = last
        self.last_spontaneous_t = ev.t
        self.active = act
        self._level_pressed(act, ev, out)

    def _level_pressed(self, act: Interaction, ev: KeyDown, out: list[Action]) -> None:
        act.level = ev.level
        act.input = ev.input
        act.pressed_wall = self.clock.wall()
        act.pressed_mono = ev.t
        # Together with the time it qualifies: a sync while the reasons screen is up must
        # not vouch for a stamp taken before it.
        act.pressed_synced = self.clock.synced()
        out.append(Feedback("press", ev.level))
        if ev.level <= 2 and self.settings.reasons:
            act.stage = "reasons"
            act.deadline = ev.t + self.settings.reasons_timeout_s
        else:
            self._rate(act, None, ev.t, out)

    def _reason_pressed(self, act: Interaction, ev: KeyDown, out: list[Action]) -> None:
        options = reason_options(self.settings)
        chosen = next((o for o in options if o.level == ev.level), None)
        if chosen is None:
            return
        out.append(Feedback("press", ev.level))
        self._rate(act, chosen.code, ev.t, out)

    # ------------------------------------------------------------------ rating

    def _rate(self, act: Interaction, reason: str | None, t: float, out: list[Action]) -> None:
        assert act.level is not None
        case = act.case
        rating_id = self.new_rating_id()
        rating = build_rating(
            self.identity, rating_id=rating_id, seq=self.seq, level=act.level, reason=reason,
            case_fields=case.fields if case is not None else None, staff=self.staff,
            input_kind=act.input, rated_wall=act.pressed_wall, clock_synced=act.pressed_synced)
        self.seq += 1
        self._undo = _Undo(rating_id, case, self._spontaneous_before)
        out.append(Persist(rating, case.case_id if case else None, act.pressed_wall,
                           act.pressed_mono))
        if case is not None:
            if len(self.rated_cases) > 512:
                self._forget_old_cases(t)
            self.rated_cases[case.case_id] = act.pressed_wall
            self.rated_cases_mono[case.case_id] = act.pressed_mono
            if self.queue and self.queue[0] is case:
                self.queue.popleft()
        self.active = None
        self.lockout_until = t + self.settings.lockout_s
        self.thanks_until = t + self.settings.thanks_s
        self.thanks_level = act.level
        # Thanks right after the Persist (the executor runs actions in order and stops
        # at a failed Persist), then the rest: the citizen's feedback comes first.
        self._refresh(t, out)
        if case is not None:
            out.append(SendFrame({"type": "rated", "case_id": case.case_id,
                                  "level": act.level, "rating_id": rating_id}))
        out.append(Feedback("thanks", act.level))

    def _persist_failed(self, ev: PersistFailed, out: list[Action]) -> None:
        undo = self._undo
        if undo is None or undo.rating_id != ev.rating_id:
            return
        self._undo = None
        self.thanks_until = None
        if undo.case is not None:
            self.rated_cases.pop(undo.case.case_id, None)
            self.rated_cases_mono.pop(undo.case.case_id, None)
            if undo.case not in self.queue:
                self.queue.appendleft(undo.case)
        else:
            self.last_spontaneous_t = undo.previous_spontaneous_t
        self.error_until = ev.t + ERROR_SCREEN_S
        self.error_message = "评价未能保存"
        out.append(Feedback("error"))
        out.append(EmitEvent("storage_error", {"rating_id": ev.rating_id, "error": ev.reason}))

    # ------------------------------------------------------------------ frames

    def _frame(self, ev: FrameReceived, out: list[Action]) -> None:
        f = ev.fields
        if ev.type == "case_completed":
            case_id = f["case_id"]
            # Answers go first, like the ack below: timers may already have put a rating's
            # Persist in `out`, and nothing after a failed Persist is executed.
            if (any(c.case_id == case_id for c in self.queue)
                    or self._recently_rated(case_id, ev.t)):
                out.insert(0, SendFrame(nak(ev.seq, "duplicate_case")))
                return
            if len(self.queue) >= QUEUE_MAX:
                out.insert(0, SendFrame(nak(ev.seq, "queue_full")))
                return
            self.queue.append(PendingCase(case_id, dict(f)))
        elif ev.type == "cancel":
            self._cancel(f["case_id"], out)
        elif ev.type == "staff_login":   # events only when the clerk changes
            staff = {"staff_id": f.get("staff_id", ""), "staff_name": f.get("staff_name", "")}
            if staff != self.staff:
                out.append(EmitEvent("staff_login", dict(staff)))
            self.staff = staff
        elif ev.type == "staff_logout":
            if self.staff is not None:
                out.append(EmitEvent("staff_logout", dict(self.staff)))   # who left
            self.staff = None
        elif ev.type == "pause":
            if not self.paused and self.active is not None:
                self.active.paused_remaining = self.active.deadline - ev.t
            self.paused = True
            self.pause_reason = f.get("reason")
        elif ev.type == "resume":
            if self.paused and self.active is not None and self.active.paused_remaining is not None:
                self.active.deadline = ev.t + self.active.paused_remaining
                self.active.paused_remaining = None
            self.paused = False
            self.pause_reason = None
        out.insert(0, SendFrame(ack(ev.seq)))

    def _recently_rated(self, case_id: str, t: float) -> bool:
        rated = self.rated_cases.get(case_id)
        if rated is None:
            return False
        if self._is_recent(case_id, rated, self.clock.wall(), t):
            return True
        del self.rated_cases[case_id]
        self.rated_cases_mono.pop(case_id, None)
        return False

    def _is_recent(self, case_id: str, rated_wall: float, wall: float, t: float) -> bool:
        mono = self.rated_cases_mono.get(case_id)
        return (wall - rated_wall < DUPLICATE_WINDOW_S
                or (mono is not None and t - mono < DUPLICATE_WINDOW_S))

    def _forget_old_cases(self, t: float) -> None:
        wall = self.clock.wall()
        for case_id in [c for c, at in self.rated_cases.items()
                        if not self._is_recent(c, at, wall, t)]:
            del self.rated_cases[case_id]
            self.rated_cases_mono.pop(case_id, None)

    def _cancel(self, case_id: str, out: list[Action]) -> None:
        case = next((c for c in self.queue if c.case_id == case_id), None)
        if case is None:
            return
        self.queue.remove(case)
        if self.active is not None and self.active.case is case:
            self.active = None
        out.append(EmitEvent("prompt_cancelled", {"case_id": case_id}))

    # ------------------------------------------------------------------ time

    def _timers(self, t: float, out: list[Action]) -> None:
        if self.thanks_until is not None and t >= self.thanks_until:
            self.thanks_until = None
            self._undo = None
        if self.error_until is not None and t >= self.error_until:
            self.error_until = None
        for lvl, t0 in self.held.items():
            if lvl not in self.stuck and t - t0 >= STUCK_AFTER_S:
                self.stuck.add(lvl)
                out.append(EmitEvent("button_stuck", {"level": lvl, "held_s": round(t - t0, 1)}))
        act = self.active
        if act is not None and not self.paused and t >= act.deadline:
            if act.stage == "reasons":
                self._rate(act, None, t, out)
            elif act.case is not None:
                case_id = act.case.case_id
                if self.queue and self.queue[0] is act.case:
                    self.queue.popleft()
                self.active = None
                out.append(SendFrame({"type": "expired", "case_id": case_id}))
                out.append(EmitEvent("prompt_expired", {"case_id": case_id}))

    # ------------------------------------------------------------------ screen

    def _refresh(self, t: float, out: list[Action]) -> list[Action]:
        """Open the next prompt if the screen is free, then show what should be shown."""
        busy = (self.thanks_until is not None or self.error_until is not None or self.paused)
        if self.active is None and self.queue and not busy:
            self.active = Interaction(case=self.queue[0], stage="prompt",
                                      deadline=t + self.settings.prompt_timeout_s)
        screen = choose_screen(self, t)
        if screen != self.shown:
            before, self.shown = self.shown, screen
            out.append(Show(screen))
            speak = spoken(self.settings, before, screen)
            if speak is not None:
                out.append(speak)  # after its screen: the citizen sees what is said
        return out
