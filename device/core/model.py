"""The vocabulary of the evaluator core: events in, actions out, and what a screen shows.

Everything here is plain frozen data, so drivers, the daemon loop, the simulator and
tests all speak the same small language, and the core stays pure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

InputKind = Literal["button", "touch", "sim"]
ScreenName = Literal["idle", "prompt", "reasons", "thanks", "paused", "error"]

LEVEL_LABELS: dict[int, str] = {
    5: "非常满意",
    4: "满意",
    3: "基本满意",
    2: "不满意",
    1: "非常不满意",
}

# The voice clips the core asks for (SPEC §10); drivers/clips holds what each one says.
VOICE_CLIPS: tuple[str, ...] = ("prompt", "reasons", "thanks", "error",
                                "level5", "level4", "level3", "level2", "level1")


def level_clip(level: int) -> str:
    """The clip that reads key `level`'s level aloud (`read_levels`)."""
    return f"level{level}"


# Events ---------------------------------------------------------------------
# `t` is the monotonic time (seconds) at which the event happened, stamped by the
# driver that saw it, from the same clock the core is given.

@dataclass(frozen=True)
class KeyDown:
    level: int
    t: float
    input: InputKind = "button"
    # Down before the device could see it go down (found down at start): it counts as
    # held, for the two-key and stuck-key rules, but never rates anything.
    already_down: bool = False


@dataclass(frozen=True)
class KeyUp:
    level: int
    t: float


@dataclass(frozen=True)
class Tick:
    t: float


@dataclass(frozen=True)
class FrameReceived:
    """A CRC-valid, well-formed frame from the window system (fields already checked)."""

    type: str
    seq: int
    fields: dict[str, Any]
    t: float


@dataclass(frozen=True)
class PersistFailed:
    """The outbox could not store the rating the core asked it to persist."""

    rating_id: str
    reason: str
    t: float


@dataclass(frozen=True)
class LinkChanged:
    """The device gained or lost its broker connection (drives the offline badge)."""

    online: bool
    t: float


@dataclass(frozen=True)
class SettingsChanged:
    """New UI settings (from the retained `config` topic), already validated."""

    settings: Any  # device.config.UiSettings
    t: float


Event = KeyDown | KeyUp | Tick | FrameReceived | PersistFailed | LinkChanged | SettingsChanged


# Screens --------------------------------------------------------------------
# A screen is a view model: what to show, never where. Layouts per panel class
# (drivers/layout_oled.py for the 128×64 1-bit panel) turn it into pixels; every text on
# it is already display text (common.text.display_text), built by device.core.screens.

@dataclass(frozen=True)
class Option:
    """What one key does on the current screen (`code` is None for "skip")."""

    level: int          # the key (1..5) that picks it
    label: str
    code: str | None = None


@dataclass(frozen=True)
class Staff:
    """The clerk signed in at the window; either part may be empty, not both."""

    staff_id: str
    staff_name: str


@dataclass(frozen=True)
class Screen:
    """What one screen shows, as plain data (built by device.core.screens).

    `heading` is what the screen is about and `lines` what follows it, in reading order:
    idle 欢迎您 (+ the invitation when a press would rate the window); prompt the service
    name (+ 请您对本次服务进行评价); reasons 请选择不满意的原因; thanks 感谢您的评价 (+ the
    chosen level's label); paused 暂停服务 (+ the reason); error 暂时无法评价 (+ what
    failed, + whom to ask). A layout picks sizes and places; it adds no words of its own
    beyond the vocabulary of device.core.screens (a badge, a shorter title).
    """

    name: ScreenName
    heading: str = ""
    lines: tuple[str, ...] = ()
    window_name: str = ""
    staff: Staff | None = None
    service_name: str | None = None
    case_id: str | None = None         # not shown; the sim socket reports it
    remaining_s: int | None = None     # countdown on prompt / reasons
    level: int | None = None           # the level chosen (reasons, thanks)
    options: tuple[Option, ...] = ()   # prompt, reasons: which key does what
    message: str | None = None         # pause reason, error text
    # prompt/reasons: rating the window without a case; idle: such a rating is open now
    spontaneous: bool = False
    offline: bool = False              # badge: the device cannot reach the broker
    # A URL to show as a QR code (SPEC §10, device/core/qr_url.py): idle when the
    # template needs no case, prompt the case's link; never on other screens.
    qr_url: str | None = None

    @property
    def staff_name(self) -> str | None:
        """The clerk's name, or None when nobody (or only a 工号) is signed in."""
        return self.staff.staff_name or None if self.staff else None

    def text(self) -> str:
        """The words of this screen in reading order, one per line (logs, headless)."""
        from device.core.screens import plain_text
        return plain_text(self)


# Actions --------------------------------------------------------------------

@dataclass(frozen=True)
class Show:
    screen: Screen


@dataclass(frozen=True)
class Persist:
    """Store this rating durably; nothing after it in the action list may run if it fails.

    `case_id`, `rated_epoch` and `rated_mono` (the monotonic time of the press) go into
    the duplicate-case memory in the same write."""

    rating: dict[str, Any]
    case_id: str | None = None
    rated_epoch: float = 0.0
    rated_mono: float | None = None


@dataclass(frozen=True)
class SendFrame:
    """Send a frame to the window system. ack/nak carry the window's seq in `frame`;
    for every other type the serial writer adds the evaluator's own seq."""

    frame: dict[str, Any]


@dataclass(frozen=True)
class EmitEvent:
    """A device event for logs and the `event` topic (SPEC §7)."""

    name: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Feedback:
    """A hint for key LEDs / buzzer: "press", "thanks", "ignored", "error"."""

    kind: str
    level: int | None = None


@dataclass(frozen=True)
class Speak:
    """Play these clips one after another at `volume` (0..100), cutting whatever is
    playing: the voice of the screen just shown (SPEC §10)."""

    clips: tuple[str, ...]
    volume: int = 80


Action = Show | Persist | SendFrame | EmitEvent | Feedback | Speak
