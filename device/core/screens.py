"""What each screen says: the single source of the Chinese UI text, and the builders of
the screen view model (device.core.model.Screen) the evaluator core shows.

No pixels here: a layout per panel class (drivers/layout_oled.py for the 128×64 1-bit
panel) decides where each text goes and how it is cut. Every text from outside — window
name, service name, clerk, pause reason, reason labels — is made display text here
(common.text.display_text) and bounded to MAX_TEXT characters, so no layout ever sees a
line break, a control character or a megabyte of text.

Keys: on `prompt` key N rates level N. On `reasons` the core assigns the keys (reason 1
on key 5, reason 2 on key 4, …, skip on key 1); each Option says which key picks it, so
no layout depends on that rule.
"""

from __future__ import annotations

from collections.abc import Mapping

from common.text import display_text
from device.core.model import LEVEL_LABELS, Option, Screen, Staff

PROMPT_LINE = "请您对本次服务进行评价"
PROMPT_SERVICE = "本次服务"          # a case without a service name
PROMPT_WINDOW = "本窗口服务"         # a spontaneous rating of the window
IDLE_INVITE = "欢迎评价本窗口服务"
IDLE_WELCOME = "欢迎您"
IDLE_INVITE_SHORT = "欢迎评价"    # the invitation beside a QR code on a small panel
QR_HINT = "扫码评价"             # under or beside the QR code (SPEC §10)
THANKS_BIG = "感谢您的评价"
PAUSED_BIG = "暂停服务"
ERROR_BIG = "暂时无法评价"
ERROR_DEFAULT = "设备故障"
ERROR_HELP = "请联系工作人员"
REASONS_TITLE = "请选择不满意的原因"
REASONS_TITLE_SHORT = "请选择原因"  # for a panel where the full title leaves no room
SKIP_LABEL = "跳过"
OFFLINE_BADGE = "离线"
STAFF_PREFIX = "工作人员："
STAFF_ID_PREFIX = "工号"

# No panel shows more than a few dozen characters of one text; a longer one is cut
# here, before any layout measures it (a window system may send 128, a bug far more).
MAX_TEXT = 128


def shown(value: object) -> str:
    """`value` as text a screen may show: display text, at most MAX_TEXT characters;
    anything that is not a string shows as nothing."""
    if not isinstance(value, str):
        return ""
    # Cut before normalising too, so a huge string costs no more than a short one;
    # normalising only shortens, so 4× leaves enough to fill MAX_TEXT.
    return display_text(value[:4 * MAX_TEXT])[:MAX_TEXT].rstrip()


def countdown_text(remaining_s: int | None) -> str:
    """The countdown as shown: "60秒", or "" without one."""
    return "" if remaining_s is None else f"{remaining_s}秒"


def staff_of(login: Mapping[str, object] | None) -> Staff | None:
    """The clerk from a staff_login's fields, or None when there is nothing to show."""
    if not login:
        return None
    staff = Staff(shown(login.get("staff_id")), shown(login.get("staff_name")))
    return staff if staff.staff_id or staff.staff_name else None


def _option(level: int, label: object, code: str | None) -> Option:
    # A label that is nothing but spaces or control characters: the code stands in, so
    # the key still says what it picks.
    return Option(level, shown(label) or shown(code), code)


# Builders: one per screen name. Facts the core knows go in; the view model comes out.

def idle(window_name: str, staff: Staff | None, *, offline: bool,
         spontaneous: bool, qr_url: str | None = None) -> Screen:
    """Waiting for a case; `spontaneous`: a press now rates the window itself; `qr_url`:
    the window's rating link (扫码评价), when there is one that needs no case."""
    return Screen("idle", heading=IDLE_WELCOME, lines=(IDLE_INVITE,) if spontaneous else (),
                  window_name=shown(window_name), staff=staff, spontaneous=spontaneous,
                  offline=offline, qr_url=qr_url or None)


def prompt(window_name: str, staff: Staff | None, *, case_id: str | None,
           service_name: object, remaining_s: int, qr_url: str | None = None) -> Screen:
    """The five levels for a case, or for the window itself when `case_id` is None;
    `qr_url`: the case's rating link (its eval_url or the filled-in template)."""
    service = shown(service_name)
    heading = service or (PROMPT_WINDOW if case_id is None else PROMPT_SERVICE)
    options = tuple(Option(level, LEVEL_LABELS[level]) for level in (5, 4, 3, 2, 1))
    return Screen("prompt", heading=heading, lines=(PROMPT_LINE,),
                  window_name=shown(window_name), staff=staff,
                  service_name=service or None, case_id=case_id, remaining_s=remaining_s,
                  options=options, spontaneous=case_id is None, qr_url=qr_url or None)


def reasons(window_name: str, staff: Staff | None, *, case_id: str | None,
            service_name: object, remaining_s: int, level: int | None,
            choices: tuple[Option, ...]) -> Screen:
    """Why not satisfied: `choices` say which key picks which reason (skip: code None);
    their labels come from the config and are made display text here."""
    service = shown(service_name)
    return Screen("reasons", heading=REASONS_TITLE, window_name=shown(window_name),
                  staff=staff, service_name=service or None, case_id=case_id,
                  remaining_s=remaining_s, level=level,
                  options=tuple(_option(o.level, o.label, o.code) for o in choices),
                  spontaneous=case_id is None)


def thanks(window_name: str, staff: Staff | None, *, level: int | None) -> Screen:
    """The rating is stored; `level` is the one chosen (its label follows the heading)."""
    chosen = (LEVEL_LABELS[level],) if level in LEVEL_LABELS else ()
    return Screen("thanks", heading=THANKS_BIG, lines=chosen,
                  window_name=shown(window_name), staff=staff,
                  level=level if chosen else None)


def paused(window_name: str, staff: Staff | None, *, reason: object) -> Screen:
    """The window paused rating (lunch, maintenance); the reason when one was given."""
    message = shown(reason)
    return Screen("paused", heading=PAUSED_BIG, lines=(message,) if message else (),
                  window_name=shown(window_name), staff=staff, message=message or None)


def error(window_name: str, staff: Staff | None, *, message: object) -> Screen:
    """Rating is not possible right now (e.g. the outbox refused a rating)."""
    text = shown(message) or ERROR_DEFAULT
    return Screen("error", heading=ERROR_BIG, lines=(text, ERROR_HELP),
                  window_name=shown(window_name), staff=staff, message=text)


def plain_text(screen: Screen) -> str:
    """The words of `screen` in reading order, one per line, whatever the panel: window,
    badge, clerk, heading, lines, options ("5非常满意"), countdown."""
    parts: list[str] = []
    if screen.name in ("idle", "paused"):
        parts.append(screen.window_name)
    if screen.name == "idle":
        if screen.offline:
            parts.append(OFFLINE_BADGE)
        if screen.staff is not None:
            parts.append(staff_line(screen.staff))
    parts.append(screen.heading)
    parts.extend(screen.lines)
    parts.extend(f"{o.level}{o.label}" for o in screen.options)
    parts.append(countdown_text(screen.remaining_s))
    return "\n".join(p for p in parts if p)


def staff_line(staff: Staff) -> str:
    """"工作人员：李娜 工号S007", the parts there are."""
    parts = [f"{STAFF_PREFIX}{staff.staff_name}" if staff.staff_name else "",
             f"{STAFF_ID_PREFIX}{staff.staff_id}" if staff.staff_id else ""]
    return " ".join(p for p in parts if p)
