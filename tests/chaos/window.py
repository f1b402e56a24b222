"""The window business system and the citizens of one evaluator, as the chaos run plays
them: cases in, prompts watched on the sim screen, keys pressed, `rated` frames collected.

`WindowSide` reads every frame the device sends (acks, `rated`, `expired`, `hello`) so
nothing waits on another's frames; `ScreenWatch` keeps the sim screen events;
`WindowWorker` is the stream of cases. It never assumes a frame arrives: a missing
answer is retried, and a case whose fate is unclear (device killed, serial line down at
the wrong moment) is asked about again by re-sending it — `duplicate_case` then proves
the rating was stored.
"""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from simulator.windowlink import LinkError
from tests.chaos.chain import PROMPT_TIMEOUT_S, REASONS_TIMEOUT_S, Chain, Device
from tests.chaos.ledger import Case, Ledger

ANSWER_TIMEOUT_S = 1.5
SERVICES = [("11421100MB1", "不动产登记"), ("11421100SB2", "社保卡补办"),
            ("11421100YB3", "医保关系转移"), ("11421100GS4", "个体工商户登记")]
LEVEL_WEIGHTS = {5: 50, 4: 25, 3: 10, 2: 8, 1: 7}
DONE, AGAIN, UNCLEAR = "done", "again", "unclear"
MIN_LEFT_S = 2.5   # press only with this much of the prompt's countdown left


class DeviceGone(Exception):
    """The device restarted (or went down) while we were waiting on it."""


class WindowSide:
    """Collects what one device sends on its serial line."""

    def __init__(self, device: Device, ledger: Ledger) -> None:
        self.device = device
        self.ledger = ledger
        self._cond = threading.Condition()
        self._answers: dict[int, dict[str, Any]] = {}
        self._outcomes: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.hellos = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name=f"frames-{device.name}",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)

    def _read(self) -> None:
        window = self.device.window
        while not self._stop.is_set():
            item = window.next_received(0.2)
            if item is None or not item.ok or item.frame is None:
                continue
            frame = item.frame
            kind = frame.get("type")
            if kind == "rated":
                self.ledger.rated(self.device.name, frame)
            with self._cond:
                if kind in ("ack", "nak") and isinstance(frame.get("seq"), int):
                    self._answers[frame["seq"]] = frame
                    if len(self._answers) > 1000:
                        for seq in list(self._answers)[:500]:
                            del self._answers[seq]
                elif kind in ("rated", "expired") and isinstance(frame.get("case_id"), str):
                    self._outcomes[frame["case_id"]].append(frame)
                elif kind == "hello":
                    self.hellos += 1
                self._cond.notify_all()

    def request(self, frame_type: str, timeout: float = ANSWER_TIMEOUT_S,
                **fields: Any) -> dict[str, Any] | None:
        """Send a frame and wait for its ack/nak; None if it could not be sent or got none."""
        try:
            seq = self.device.window.send(frame_type, **fields)
        except LinkError:
            return None
        deadline = time.monotonic() + timeout
        with self._cond:
            while seq not in self._answers:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            return self._answers.pop(seq)

    def outcomes(self, case_id: str) -> list[dict[str, Any]]:
        with self._cond:
            return list(self._outcomes.get(case_id, ()))

    def wait_outcome(self, case_id: str, seen: int, timeout: float,
                     also: Callable[[], bool] = lambda: False) -> dict[str, Any] | None:
        """The first `rated`/`expired` for this case beyond the `seen` already known, or
        None after `timeout` or as soon as `also()` is true."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                frames = self._outcomes.get(case_id, [])
                if len(frames) > seen:
                    return frames[seen]
                left = deadline - time.monotonic()
                if left <= 0 or also():
                    return None
                self._cond.wait(min(left, 0.1))


class ScreenWatch:
    """Every screen event of one device (across restarts), plus its status answers."""

    def __init__(self, chain: Chain, device: Device, ledger: Ledger) -> None:
        self.device = device
        self.ledger = ledger
        self._cond = threading.Condition()
        self.events: list[tuple[int, str, str | None]] = []   # generation, screen, case_id
        self.statuses = 0
        self.status: dict[str, Any] = {}
        chain.listen(device, self._on_event)

    def _on_event(self, ev: dict[str, Any]) -> None:
        if ev.get("ev") == "status" and isinstance(ev.get("backlog"), int):
            self.ledger.backlog(self.device.name, ev["backlog"])
            with self._cond:
                self.statuses += 1
                self.status = ev
                self._cond.notify_all()
            return
        if ev.get("ev") != "screen":
            return
        with self._cond:
            self.events.append((self.device.generation, str(ev.get("screen")), ev.get("case_id")))
            if len(self.events) > 2000:
                del self.events[:1000]
            self._cond.notify_all()

    def fresh_status(self, timeout: float = 2.0) -> dict[str, Any] | None:
        """Ask the daemon for its status and wait for the answer."""
        sim = self.device.sim
        if sim is None:
            return None
        with self._cond:
            seen = self.statuses
        try:
            sim.request_status()
        except OSError:
            return None
        with self._cond:
            if not self._cond.wait_for(lambda: self.statuses > seen, timeout):
                return None
            return self.status

    def mark(self) -> int:
        with self._cond:
            return len(self.events)

    def remaining(self) -> float:
        """Seconds left on the prompt or reasons countdown shown now (0 if none)."""
        sim = self.device.sim
        screen = sim.screen if sim is not None else None
        left = screen.get("remaining_s") if screen is not None else None
        return float(left) if isinstance(left, int | float) else 0.0

    def current(self) -> tuple[str | None, str | None]:
        sim = self.device.sim
        screen = sim.screen if sim is not None else None
        if screen is None:
            return None, None
        return screen.get("screen"), screen.get("case_id")

    def wait(self, predicate: Callable[[str, str | None], bool], since: int, timeout: float,
             also: Callable[[], bool] = lambda: False) -> tuple[str, str | None] | None:
        """The first screen event after index `since` matching `predicate`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                # The list may have been trimmed; `since` then points too far, never too early.
                for _gen, name, case_id in self.events[min(since, len(self.events)):]:
                    if predicate(name, case_id):
                        return name, case_id
                since = len(self.events)
                left = deadline - time.monotonic()
                if left <= 0 or also():
                    return None
                self._cond.wait(min(left, 0.1))


class WindowWorker(threading.Thread):
    """Plays the window system and the citizens of one device until `stop()`."""

    def __init__(self, chain: Chain, device: Device, ledger: Ledger,
                 rng: random.Random) -> None:
        super().__init__(name=f"window-{device.name}", daemon=True)
        self.device = device
        self.ledger = ledger
        self.rng = rng
        self.side = WindowSide(device, ledger)
        self.screens = ScreenWatch(chain, device, ledger)
        self._stopping = threading.Event()
        self._n = 0
        self.unresolved: list[Case] = []
        self._press_generation: dict[str, int] = {}   # case_id -> device generation
        self.errors: list[str] = []

    def stop(self) -> None:
        self._stopping.set()

    # The stream ------------------------------------------------------------------------

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._round()
            except Exception as e:  # noqa: BLE001 - a worker bug must be reported, not hang
                self.errors.append(f"{type(e).__name__}: {e}")
                time.sleep(1)
            self._pause(self.rng.uniform(0.1, 1.0))

    def _pause(self, seconds: float) -> None:
        self._stopping.wait(seconds)

    def _round(self) -> None:
        if not self._wait_up():
            return
        if self.rng.random() < 0.06:
            self._stray_press()
            return
        cases = [self._new_case() for _ in range(self.rng.choice((1, 1, 1, 2, 3)))]
        queued = [c for c in cases if self._submit(c)]
        for case in queued:
            self._serve(case)

    def _wait_up(self, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while not self.device.up.wait(0.2):
            if self._stopping.is_set() or time.monotonic() > deadline:
                return False
        return True

    def _new_case(self) -> Case:
        self._n += 1
        case = self.ledger.new_case(self.device.name, f"{self.device.name}-C{self._n:05d}")
        return case

    def _case_fields(self, case: Case) -> dict[str, Any]:
        code, name = self.rng.choice(SERVICES)
        return {"case_id": case.case_id, "service_code": code, "service_name": name,
                "dept_code": "D01", "staff_id": "S07", "staff_name": "李娜",
                "completed_at": time.strftime("%Y-%m-%dT%H:%M:%S+08:00")}

    def _submit(self, case: Case, deadline_s: float = 20.0) -> bool:
        """Send the case until the device answers; True once it is queued there."""
        fields = self._case_fields(case)
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            answer = self.side.request("case_completed", **fields)
            if answer is None:
                self._stopping.wait(0.3)
                continue
            if answer["type"] == "ack":
                return True
            error = answer.get("error")
            if error == "duplicate_case" and not case.presses:
                return True  # an earlier copy arrived; its ack was lost
            if error == "duplicate_case":
                self.ledger.outcome(case, "stored")
                return False
            if error == "queue_full":
                self._stopping.wait(1.0)
                continue
            self.errors.append(f"{case.case_id}: unexpected answer {answer}")
            self.ledger.outcome(case, "abandoned")
            return False
        self.ledger.outcome(case, "abandoned")
        return False

    def _send_until_acked(self, frame_type: str, generation: int, **fields: Any) -> bool:
        """For frames that must get through (cancel, pause, resume): retry until acked, or
        False if the device restarted meanwhile (which forgets its state anyway)."""
        while not self._stopping.is_set() or frame_type == "resume":
            if self.device.generation != generation:
                return False
            answer = self.side.request(frame_type, **fields)
            if answer is not None:
                return bool(answer["type"] == "ack")
            self._pause(0.3)
        return False

    # One case from prompt to outcome -----------------------------------------------------

    def _serve(self, case: Case) -> None:
        for _attempt in range(30):
            try:
                result = self._serve_once(case)
            except DeviceGone:
                result = UNCLEAR
            if result == DONE:
                return
            if result == UNCLEAR and not self._reconcile(case):
                return
        self.ledger.outcome(case, "unknown")
        self.unresolved.append(case)

    def _gone(self, generation: int) -> Callable[[], bool]:
        return lambda: self.device.generation != generation or not self.device.up.is_set()

    def _wait_prompt(self, case: Case, timeout: float, gone: Callable[[], bool]) -> bool:
        since = self.screens.mark()
        if self.screens.current() == ("prompt", case.case_id):
            return True
        return self.screens.wait(lambda n, c: n == "prompt" and c == case.case_id, since,
                                 timeout, gone) is not None

    def _serve_once(self, case: Case) -> str:
        """Wait for the prompt and act as the citizen: DONE when the outcome is known, AGAIN
        when the rating could not be stored (the case comes back on the prompt), UNCLEAR
        when a restart or a dead serial line hid what happened (`_reconcile` then asks)."""
        generation = self.device.generation
        gone = self._gone(generation)
        if not self._wait_prompt(case, 2 * PROMPT_TIMEOUT_S + 6, gone):
            if gone():
                raise DeviceGone
            if not case.presses and any(f["type"] == "expired"
                                        for f in self.side.outcomes(case.case_id)):
                self.ledger.outcome(case, "expired")
                return DONE
            return UNCLEAR
        roll = self.rng.random()
        if roll < 0.04:
            return self._walk_away(case, generation)
        if roll < 0.08:
            if self._send_until_acked("cancel", generation, case_id=case.case_id):
                self.ledger.outcome(case, "cancelled")
                return DONE
            raise DeviceGone
        if roll < 0.12:
            if not self._send_until_acked("pause", generation, reason="系统维护"):
                raise DeviceGone
            self._pause(self.rng.uniform(0.3, 1.5))
            if not self._send_until_acked("resume", generation):
                raise DeviceGone
            if not self._wait_prompt(case, 5, gone):
                return UNCLEAR
        self._pause(self.rng.uniform(0.1, 1.2))   # the citizen reads the screen
        return self._rate(case, generation)

    def _walk_away(self, case: Case, generation: int) -> str:
        seen = len(self.side.outcomes(case.case_id))
        frame = self.side.wait_outcome(case.case_id, seen, PROMPT_TIMEOUT_S + 5,
                                       self._gone(generation))
        if frame is not None and frame["type"] != "expired":
            self.errors.append(f"{case.case_id}: {frame['type']} without a press")
        # Without a frame the line or the device was down; nothing was pressed for this
        # case, so nothing can have been stored for it either way.
        self.ledger.outcome(case, "expired")
        return DONE

    def _rate(self, case: Case, generation: int) -> str:
        gone = self._gone(generation)
        level = self.rng.choices(list(LEVEL_WEIGHTS), list(LEVEL_WEIGHTS.values()))[0]
        seen = len(self.side.outcomes(case.case_id))
        since = self.screens.mark()
        # The key must land on this case's prompt: a press in the very last moment could
        # rightly rate the next case instead, and the ledger would call it a phantom.
        if self.screens.current() != ("prompt", case.case_id):
            return UNCLEAR
        if self.screens.remaining() < MIN_LEFT_S:
            return self._walk_away(case, generation)
        self.ledger.press(case, level)
        self._press_generation[case.case_id] = generation
        self._press(level)
        if level >= 3 and self.rng.random() < 0.1:
            # An impatient second press: ignored on the thanks screen; if the machine is
            # slow enough for it to land on the next prompt, it rates that case.
            self.ledger.loose_press(self.device.name, level)
            self._press(level)
        wait = 6.0
        if level <= 2:
            shown = self.screens.wait(lambda n, c: n in ("reasons", "error", "thanks"),
                                      since, 5, gone)
            still_there = (shown == ("reasons", case.case_id)
                           and self.screens.current() == ("reasons", case.case_id)
                           and self.screens.remaining() >= 2)
            choice = self.rng.random()
            if still_there and choice < 0.65:
                self._press(self.rng.choice((5, 4, 3, 2)))
            elif still_there and choice < 0.85:
                self._press(1)  # skip
            else:
                wait += REASONS_TIMEOUT_S   # left to the reasons timeout

        def error_shown() -> bool:
            return self.screens.wait(lambda n, c: n == "error", since, 0.0) is not None

        frame = self.side.wait_outcome(case.case_id, seen, wait,
                                       lambda: gone() or error_shown())
        if frame is not None:
            # `expired`: the prompt ran out before the press landed (a slow machine).
            self.ledger.outcome(case, "rated" if frame["type"] == "rated" else "expired")
            return DONE
        if error_shown():
            # Storage failed: no thanks, no rated; the case comes back on the prompt.
            self.ledger.storage_failure(case)
            return AGAIN
        return UNCLEAR

    def _press(self, level: int) -> None:
        sim = self.device.sim
        if sim is None:
            raise DeviceGone
        try:
            sim.press(level)
        except OSError:
            raise DeviceGone from None

    def _reconcile(self, case: Case) -> bool:
        """The outcome is unclear: ask the device by sending the case again. True when the
        case is pending there again (serve it once more), False when its fate is known."""
        if not self._wait_up(60):
            self.ledger.outcome(case, "unknown")
            self.unresolved.append(case)
            return False
        fields = self._case_fields(case)
        deadline = time.monotonic() + 30
        maybe_queued = False   # an unanswered copy of ours may have been queued
        while time.monotonic() < deadline:
            generation = self.device.generation
            answer = self.side.request("case_completed", **fields)
            if answer is None:
                maybe_queued = True
                self._pause(0.3)
                continue
            if answer["type"] == "ack":
                return True
            if answer.get("error") != "duplicate_case":
                self.errors.append(f"{case.case_id}: unexpected answer {answer}")
                break
            if not case.presses:
                return True   # our earlier copy is queued there
            if self._press_generation.get(case.case_id) != generation and not maybe_queued:
                # Restarted since the press, so nothing of ours is pending there: the
                # device remembers the case because it stored a rating for it.
                return self._stored(case)
            # Either pending (its prompt will show, perhaps after another case's) or
            # stored (it will not).
            if self._wait_prompt(case, 2 * PROMPT_TIMEOUT_S + 2, self._gone(generation)):
                return True
            if self.device.generation != generation:
                continue   # restarted while we watched: ask again
            return self._stored(case)
        self.ledger.outcome(case, "unknown")
        self.unresolved.append(case)
        return False

    def _stored(self, case: Case) -> bool:
        self.ledger.outcome(case, "stored")
        return False

    def _stray_press(self) -> None:
        """A citizen presses with no case on screen; with spontaneous ratings off this
        must store nothing (any rating from it is a phantom)."""
        # Only with nothing of ours pending there: a case still queued could come up on
        # the screen just as the key goes down, and rightly take the press.
        status = self.screens.fresh_status()
        name, _ = self.screens.current()
        sim = self.device.sim
        if status is None or status.get("pending_cases") != 0 or name != "idle" or sim is None:
            return
        level = self.rng.randint(1, 5)
        self.ledger.stray_press(self.device.name, level)
        try:
            sim.press(level)
        except OSError:
            return
