"""What each screen says, row by row: the single source of the Chinese UI text.

The OLED renderer draws these rows; the simulator socket reports their text. Rows are
sized for a 128×64 1-bit panel: 13 px pitch for the 12 px font, five rows in all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from device.core.model import LEVEL_LABELS, Screen

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


PROMPT_LINE = "请您对本次服务进行评价"
IDLE_INVITE = "欢迎评价本窗口服务"
IDLE_WELCOME = "欢迎您"
THANKS_BIG = "感谢您的评价"
PAUSED_BIG = "暂停服务"
REASONS_TITLE = "请选择不满意的原因"
SKIP_LABEL = "跳过"
OFFLINE_BADGE = "离线"


def _countdown(remaining_s: int | None) -> str:
    return "" if remaining_s is None else f"{remaining_s}秒"


def _pairs(items: list[str]) -> list[str]:
    """Lay options out two per row: '5非常满意 4满意'."""
    return [" ".join(items[i:i + 2]) for i in range(0, len(items), 2)]


def layout(screen: Screen) -> list[Row]:
    """The rows of `screen`, top to bottom."""
    rows: list[Row] = []
    if screen.name == "idle":
        rows.append(Row(0, screen.window_name))
        if screen.offline:
            rows.append(Row(0, OFFLINE_BADGE, align="right", invert=True))
        if screen.staff_name:
            rows.append(Row(14, f"工作人员：{screen.staff_name}"))
        rows.append(Row(32, IDLE_WELCOME, size=16, align="center"))
        if screen.spontaneous:  # on idle: a press now rates the window
            rows.append(Row(51, IDLE_INVITE, align="center"))
    elif screen.name == "prompt":
        title = screen.service_name or ("本窗口服务" if screen.spontaneous else "本次服务")
        rows.append(Row(0, title))
        rows.append(Row(13, PROMPT_LINE, size=11))
        labels = [f"{o.level}{o.label}" for o in screen.options]
        for i, line in enumerate(_pairs(labels)):
            rows.append(Row(26 + 13 * i, line))
        rows.append(Row(52, _countdown(screen.remaining_s), align="right"))
    elif screen.name == "reasons":
        rows.append(Row(0, REASONS_TITLE))
        labels = [f"{o.level}{o.label}" for o in screen.options]
        for i, line in enumerate(_pairs(labels)):
            rows.append(Row(15 + 13 * i, line))
        rows.append(Row(52, _countdown(screen.remaining_s), align="right"))
    elif screen.name == "thanks":
        rows.append(Row(10, THANKS_BIG, size=16, align="center"))
        if screen.level is not None:
            rows.append(Row(36, f"您的评价：{LEVEL_LABELS[screen.level]}", align="center"))
    elif screen.name == "paused":
        rows.append(Row(0, screen.window_name))
        rows.append(Row(22, PAUSED_BIG, size=16, align="center"))
        if screen.message:
            rows.append(Row(46, screen.message, align="center"))
    elif screen.name == "error":
        rows.append(Row(10, "暂时无法评价", size=16, align="center"))
        rows.append(Row(36, screen.message or "设备故障", align="center"))
        rows.append(Row(50, "请联系工作人员", align="center"))
    return rows


def visible_text(screen: Screen) -> str:
    """The text a person sees, one line per row (rows sharing a y join with a space)."""
    lines: dict[int, list[str]] = {}
    for row in layout(screen):
        if row.text:
            lines.setdefault(row.y, []).append(row.text)
    return "\n".join(" ".join(parts) for _, parts in sorted(lines.items()))
