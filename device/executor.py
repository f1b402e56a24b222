"""Runs the core's actions, in order, against the device's parts.

The rules every action list follows: actions run in the order the core gave them; a
Persist that fails stops the list (no thanks, no `rated` for a rating not stored) and is
fed back to the core as PersistFailed. Every other part may fail without stopping
anything: a display, LED, buzzer or speaker that stops answering is a fault
(device/faults.py), and the rating goes on with what works. A failed display is re-shown the current
screen every DISPLAY_RETRY_S, which lets its driver open the panel again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from device.core.model import (
    Action,
    EmitEvent,
    Event,
    Feedback,
    Persist,
    PersistFailed,
    Screen,
    SendFrame,
    Show,
    Speak,
)
from device.faults import DriverHealth, EventSink
from device.ports import Display, DriverError, Indicators, Voice

log = logging.getLogger("hcp.device")

DISPLAY_RETRY_S = 5.0


class ActionExecutor:
    """`handle` is the core's (for PersistFailed); `store` stores a rating and returns
    None, or why it could not; `send_frame` writes a frame to the window system."""

    def __init__(self, handle: Callable[[Event], list[Action]],
                 store: Callable[[Persist], str | None],
                 send_frame: Callable[[dict[str, Any]], object],
                 event: EventSink, display: Display, indicators: Indicators,
                 health: DriverHealth, monotonic: Callable[[], float],
                 voice: Voice | None = None) -> None:
        self.handle = handle
        self.store = store
        self.send_frame = send_frame
        self.event = event
        self.display = display
        self.indicators = indicators
        self.health = health
        self.monotonic = monotonic
        self.voice = voice
        self.screen: Screen | None = None     # what the core last asked to show
        self._display_retry_at: float | None = None

    def run(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Persist):
                why = self.store(action)
                if why is not None:
                    # Nothing after a failed Persist may run: no thanks, no `rated`.
                    self.run(self.handle(PersistFailed(action.rating["rating_id"], why,
                                                       self.monotonic())))
                    return
            elif isinstance(action, Show):
                self._show(action.screen)
            elif isinstance(action, SendFrame):
                self.send_frame(action.frame)
            elif isinstance(action, Feedback):
                self._feedback(action)
            elif isinstance(action, EmitEvent):
                self.event(action.name, action.details)
            elif isinstance(action, Speak):
                self._speak(action)
            else:  # pragma: no cover - the Action union is closed
                raise TypeError(f"unknown action {action!r}")

    def next_deadline(self) -> float | None:
        """When a failed display is to be tried again."""
        return self._display_retry_at

    def retry_if_due(self, now: float) -> None:
        if self._display_retry_at is not None and now >= self._display_retry_at \
                and self.screen is not None:
            self._show(self.screen)

    def _show(self, screen: Screen) -> None:
        self.screen = screen
        error = _attempt(self.display.show, screen, "display")
        now = self.monotonic()
        if error is None:
            self._display_retry_at = None
            self.health.worked("display", now)
        else:
            self._display_retry_at = now + DISPLAY_RETRY_S
            self.health.failed("display", error, now)

    def _feedback(self, feedback: Feedback) -> None:
        error = _attempt(self.indicators.feedback, feedback, "indicators")
        if error is None:
            self.health.worked("indicators", self.monotonic())
        else:
            self.health.failed("indicators", error, self.monotonic())


    def _speak(self, speak: Speak) -> None:
        """Start the clips (the core puts them after their screen); a voice that cannot
        play is a fault, and the rating goes on. That it works again is the driver's
        to say, when a clip has played to its end."""
        voice = self.voice
        if voice is None:
            return
        error = _attempt(lambda s: voice.play(s.clips, s.volume), speak, "voice")
        if error is not None:
            self.health.failed("voice", error, self.monotonic())


def _attempt(call: Callable[[Any], None], arg: Any, part: str) -> str | None:
    """Run a driver call; its failure as text, or None."""
    try:
        call(arg)
    except DriverError as e:
        return str(e) or type(e).__name__
    except Exception as e:
        # A bug in a driver (or in drawing) is still only that part failing: the rating
        # in progress must reach the outbox and the window system all the same.
        log.exception("%s raised unexpectedly", part)
        return f"unexpected {type(e).__name__}: {e}"
    return None
