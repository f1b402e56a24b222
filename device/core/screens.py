"""What each screen says, row by row: the single source of the Chinese UI text.

The OLED renderer (drivers/render.py) draws these rows; the simulator socket reports
their text. Rows are sized for a 128×64 1-bit panel: `y` is the top of a row's ink, a
12 px row takes 11 px of ink, so rows sit 13 px apart; five rows in all.

Keys: on `prompt` key N rates level N. On `reasons` the core assigns the keys (reason 1
on key 5, reason 2 on key 4, …, skip on key 1); every option row shows its key number
in a key cap, so the screen never depends on that rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from device.core.model import LEVEL_LABELS, Option, Screen

Size = Literal[11, 12, 16]
Align = Literal["left", "center", "right"]

WIDTH = 128
HEIGHT = 64


@dataclass(frozen=True)
class Row:
    y: int
    text: str
    size: Size = 12
    align: Align = "left"
    invert: bool = False  # white box, black text (badges)
    x: int = 0            # left edge of a left-aligned row (the second column of options)
    key: int | None = None  # drawn before the text as an inverted key cap with this number
    shrink: bool = False  # may drop to the 11 px font before being cut with "…"

    @property
    def shown(self) -> str:
        """The text as a person reads it, key number included."""
        return self.text if self.key is None else f"{self.key}{self.text}"


PROMPT_LINE = "请您对本次服务进行评价"
IDLE_INVITE = "欢迎评价本窗口服务"
IDLE_WELCOME = "欢迎您"
THANKS_BIG = "感谢您的评价"
PAUSED_BIG = "暂停服务"
ERROR_BIG = "暂时无法评价"
ERROR_DEFAULT = "设备故障"
ERROR_HELP = "请联系工作人员"
REASONS_TITLE = "请选择不满意的原因"
REASONS_TITLE_SHORT = "请选择原因"
SKIP_LABEL = "跳过"
OFFLINE_BADGE = "离线"
STAFF_PREFIX = "工作人员："

COLUMN_X = 65          # second column of two-per-row options
OPTION_COLUMN_PX = 50  # label room in a column: 65 px minus key cap and gaps


def _countdown(remaining_s: int | None) -> str:
    return "" if remaining_s is None else f"{remaining_s}秒"


def _approx_px(text: str) -> int:
    """Width at 12 px, near enough to choose a layout (the renderer measures exactly)."""
    return sum(12 if ord(ch) >= 0x2E80 else 7 for ch in text)


def _two_columns(options: tuple[Option, ...], first_y: int) -> list[Row]:
    """Options two per row, left to right, top to bottom: '[5]非常满意  [4]满意'."""
    rows = []
    for i, option in enumerate(options):
        rows.append(Row(first_y + 13 * (i // 2), option.label, key=option.level,
                        x=0 if i % 2 == 0 else COLUMN_X))
    return rows


def _reasons(screen: Screen) -> list[Row]:
    countdown = _countdown(screen.remaining_s)
    picks = [o for o in screen.options if o.code is not None]
    skips = [o for o in screen.options if o.code is None]
    if all(_approx_px(o.label) <= OPTION_COLUMN_PX for o in screen.options):
        return [Row(0, REASONS_TITLE), *_two_columns(screen.options, 15),
                Row(52, countdown, align="right")]
    # A label too long for half a row: one reason per row, the countdown moves up
    # beside a shorter title, and skip shares the last row when all four are used.
    rows = [Row(0, REASONS_TITLE_SHORT), Row(0, countdown, align="right")]
    for i, option in enumerate(picks):
        rows.append(Row(13 + 13 * i, option.label, key=option.level))
    for skip in skips:
        if len(picks) >= 4:
            rows.append(Row(52, skip.label, key=skip.level, align="right"))
        else:
            rows.append(Row(13 + 13 * len(picks), skip.label, key=skip.level))
    return rows


def layout(screen: Screen) -> list[Row]:
    """The rows of `screen`, top to bottom."""
    rows: list[Row] = []
    if screen.name == "idle":
        rows.append(Row(1, screen.window_name, shrink=True))
        if screen.offline:
            rows.append(Row(1, OFFLINE_BADGE, align="right", invert=True))
        if screen.staff_name:
            rows.append(Row(16, f"{STAFF_PREFIX}{screen.staff_name}"))
        if screen.spontaneous:  # on idle: a press now rates the window
            rows.append(Row(32, IDLE_WELCOME, size=16, align="center"))
            rows.append(Row(52, IDLE_INVITE, align="center"))
        else:
            rows.append(Row(36, IDLE_WELCOME, size=16, align="center"))
    elif screen.name == "prompt":
        title = screen.service_name or ("本窗口服务" if screen.spontaneous else "本次服务")
        rows.append(Row(0, title))
        rows.append(Row(13, PROMPT_LINE))
        rows.extend(_two_columns(screen.options, 26))
        rows.append(Row(52, _countdown(screen.remaining_s), align="right"))
    elif screen.name == "reasons":
        rows.extend(_reasons(screen))
    elif screen.name == "thanks":
        rows.append(Row(14, THANKS_BIG, size=16, align="center"))
        if screen.level is not None:  # the chosen level, drawn like the key that chose it
            rows.append(Row(40, LEVEL_LABELS[screen.level], key=screen.level, align="center"))
    elif screen.name == "paused":
        rows.append(Row(1, screen.window_name, shrink=True))
        rows.append(Row(23, PAUSED_BIG, size=16, align="center"))
        if screen.message:
            rows.append(Row(47, screen.message, align="center"))
    elif screen.name == "error":
        rows.append(Row(8, ERROR_BIG, size=16, align="center"))
        rows.append(Row(32, screen.message or ERROR_DEFAULT, align="center"))
        rows.append(Row(48, ERROR_HELP, align="center"))
    return rows


def visible_text(screen: Screen) -> str:
    """The text a person sees, one line per row (rows sharing a y join with a space)."""
    lines: dict[int, list[str]] = {}
    for row in layout(screen):
        if row.text:
            lines.setdefault(row.y, []).append(row.shown)
    return "\n".join(" ".join(parts) for _, parts in sorted(lines.items()))
