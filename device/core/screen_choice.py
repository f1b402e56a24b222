"""Which screen the evaluator's state shows, and what is said as it appears (SPEC §5,
§10): error, thanks, paused, idle, prompt or reasons, with their texts, countdown, QR
and reason keys. Pure functions of the state; a change of what a state looks like or
sounds like lands here, a change of the rules that lead to that state in machine.py.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from device.core import qr_url, screens
from device.core.model import Option, Screen, Speak, level_clip
from device.core.rating_record import Identity
from device.core.screens import SKIP_LABEL
from device.core.settings import UiSettings

if TYPE_CHECKING:
    from device.core.machine import Evaluator

__all__ = ["REASON_KEYS", "SKIP_KEY", "VOICED_SCREENS", "choose_screen", "device_ids",
           "reason_options", "spoken"]

SKIP_KEY = 1                  # on the reasons screen; reasons take keys 5, 4, 3, 2
REASON_KEYS = (5, 4, 3, 2)
VOICED_SCREENS = ("prompt", "reasons", "thanks", "error")   # each has its clip


def spoken(settings: UiSettings, before: Screen | None, now: Screen) -> Speak | None:
    """What to say as `now` replaces `before` (SPEC §10): each prompt, reasons,
    thanks and error screen once as it appears, not at each second of its countdown."""
    if now.name not in VOICED_SCREENS:
        return None
    if before is not None and before.name == now.name and before.case_id == now.case_id:
        return None  # the same screen redrawn (countdown, window name, badge)
    clips: tuple[str, ...] = (now.name,)
    if now.name == "prompt" and settings.read_levels:
        clips += tuple(level_clip(o.level) for o in now.options)
    return Speak(clips, settings.volume)


def choose_screen(ev: Evaluator, t: float) -> Screen:
    """The screen the evaluator `ev` shows at monotonic time `t`."""
    s = ev.settings
    staff = screens.staff_of(ev.staff)
    if ev.error_until is not None:
        return screens.error(s.window_name, staff, message=ev.error_message)
    if ev.thanks_until is not None:
        return screens.thanks(s.window_name, staff, level=ev.thanks_level)
    if ev.paused:
        return screens.paused(s.window_name, staff, reason=ev.pause_reason)
    act = ev.active
    if act is None:
        return screens.idle(s.window_name, staff, offline=ev.offline,
                            spontaneous=s.allow_spontaneous,
                            qr_url=qr_url.fill(s.qr_url, device_ids(ev.identity), None))
    case = act.case
    case_id = case.case_id if case else None
    service_name = case.fields.get("service_name") if case else None
    remaining_s = max(0, math.ceil(act.deadline - t))
    if act.stage == "prompt":
        return screens.prompt(s.window_name, staff, case_id=case_id,
                              service_name=service_name, remaining_s=remaining_s,
                              qr_url=qr_url.fill(s.qr_url, device_ids(ev.identity),
                                                 case.fields if case else None))
    return screens.reasons(s.window_name, staff, case_id=case_id,
                           service_name=service_name, remaining_s=remaining_s,
                           level=act.level, choices=reason_options(s))


def device_ids(identity: Identity) -> dict[str, str]:
    """What a qr_url template may name of the device itself."""
    i = identity
    return {"device_id": i.device_id, "region_code": i.region_code,
            "hall_id": i.hall_id, "window_id": i.window_id}


def reason_options(settings: UiSettings) -> tuple[Option, ...]:
    """The reasons screen's choices: the first four reasons on keys 5..2, skip on 1."""
    reasons = settings.reasons[:len(REASON_KEYS)]
    opts = [Option(key, label, code) for key, (code, label)
            in zip(REASON_KEYS, reasons, strict=False)]
    opts.append(Option(SKIP_KEY, SKIP_LABEL, None))
    return tuple(opts)
