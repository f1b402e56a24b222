"""The layout of the 128×64 1-bit panel class (SSD1306, SH1106, the simulator's mono
screen): a screen view model (device.core.model.Screen) as rows of text.

Only this module knows where things go on that panel; drivers/render.py resolves each
row to pixels, measuring and cutting with "…" where a text is too wide. `y` is the top
of a row's ink; a 12 px row takes 11 px of ink, so rows sit 13 px apart, five in all.
A colour panel gets its own layout module from the same view model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from device.core.model import Option, Screen, Staff
from device.core.screens import (
    IDLE_INVITE_SHORT,
    OFFLINE_BADGE,
    QR_HINT,
    REASONS_TITLE_SHORT,
    STAFF_ID_PREFIX,
    STAFF_PREFIX,
    countdown_text,
)
from drivers import qr

Size = Literal[11, 12, 16]
Align = Literal["left", "center", "right"]

WIDTH = 128
HEIGHT = 64

COLUMN_X = 65          # second column of two-per-row options
OPTION_COLUMN_PX = 50  # label room in a column: 65 px minus key cap and gaps
STAFF_ROW_Y = 16
STAFF_ID_MAX_X = 64    # the 工号 starts by mid-panel: a long name is cut before it
STAFF_ID_GAP_PX = 4    # about one space between the name and its 工号
# Idle with a QR code (SPEC §10: on this panel only on idle): the code sits at the right
# edge in the smallest square that holds it at the most pixels a module the panel's
# height allows (two up to version 3, a URL of ~50 characters; one above) with its quiet
# zone; the text keeps the column left of it, one 12 px row every 13 px.
QR_MAX_SIDE = HEIGHT
QR_TEXT_GAP = 2


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
    right: int = WIDTH    # the row's room ends here (the QR code takes the rest)

    @property
    def shown(self) -> str:
        """The text as a person reads it, key number included."""
        return self.text if self.key is None else f"{self.key}{self.text}"


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
    countdown = countdown_text(screen.remaining_s)
    picks = [o for o in screen.options if o.code is not None]
    skips = [o for o in screen.options if o.code is None]
    if all(_approx_px(o.label) <= OPTION_COLUMN_PX for o in screen.options):
        return [Row(0, screen.heading), *_two_columns(screen.options[:6], 15),
                Row(52, countdown, align="right")]
    # A label too long for half a row: one reason per row, the countdown moves up
    # beside a shorter title, and skip shares the last row when all four are used.
    rows = [Row(0, REASONS_TITLE_SHORT), Row(0, countdown, align="right")]
    for i, option in enumerate(picks[:4]):
        rows.append(Row(13 + 13 * i, option.label, key=option.level))
    for skip in skips[:1]:
        if len(picks) >= 4:
            rows.append(Row(52, skip.label, key=skip.level, align="right"))
        else:
            rows.append(Row(13 + 13 * len(picks), skip.label, key=skip.level))
    return rows


def _staff(staff: Staff) -> list[Row]:
    """The clerk on idle (SPEC §10: the 工号 with the name): "工作人员：李娜" without a
    工号, "李娜 工号S0107" with one. The 工号 gets at least half the row, so a long name
    is cut with "…" rather than hiding it, and a long 工号 is cut at the panel's edge."""
    if staff.staff_name and staff.staff_id:
        id_x = min(_approx_px(staff.staff_name) + STAFF_ID_GAP_PX, STAFF_ID_MAX_X)
        return [Row(STAFF_ROW_Y, staff.staff_name),
                Row(STAFF_ROW_Y, f"{STAFF_ID_PREFIX}{staff.staff_id}", x=id_x)]
    if staff.staff_name:
        return [Row(STAFF_ROW_Y, f"{STAFF_PREFIX}{staff.staff_name}")]
    return [Row(STAFF_ROW_Y, f"{STAFF_ID_PREFIX}{staff.staff_id}")]


def _line(screen: Screen, index: int) -> str:
    return screen.lines[index] if index < len(screen.lines) else ""


def qr_box(screen: Screen) -> tuple[int, int, int] | None:
    """Where the QR code goes, (x, y, side), or None: only idle shows one, and only when
    its URL makes a code of at least one pixel a module with a quiet zone."""
    if screen.name != "idle" or not screen.qr_url:
        return None
    try:
        modules = len(qr.matrix(screen.qr_url))
    except ValueError:
        return None
    placed = qr.fit(modules, QR_MAX_SIDE, qr.MIN_QUIET)
    if placed is None:
        return None
    quiet = min(qr.QUIET * placed.scale, (QR_MAX_SIDE - modules * placed.scale) // 2)
    side = modules * placed.scale + 2 * quiet
    return WIDTH - side, (HEIGHT - side) // 2, side


def _idle_with_qr(screen: Screen) -> list[Row]:
    """Idle beside a QR code: window, clerk (name and 工号 on rows of their own), the
    welcome and 扫码评价, each in the left column."""
    box = qr_box(screen)
    r = (box[0] if box else WIDTH) - QR_TEXT_GAP
    rows = [Row(1, screen.window_name, shrink=True, right=r)]
    if screen.offline:
        rows.append(Row(1, OFFLINE_BADGE, align="right", invert=True, right=r))
    staff = screen.staff
    if staff is not None:
        if staff.staff_name:
            rows.append(Row(13, staff.staff_name, shrink=True, right=r))
        if staff.staff_id:
            rows.append(Row(26 if staff.staff_name else 13,
                            f"{STAFF_ID_PREFIX}{staff.staff_id}", shrink=True, right=r))
        rows.append(Row(39, IDLE_INVITE_SHORT if screen.lines else screen.heading,
                        align="center", right=r))
    else:
        rows.append(Row(20, screen.heading, size=16, align="center", right=r))
        if screen.lines:
            rows.append(Row(39, IDLE_INVITE_SHORT, align="center", right=r))
    rows.append(Row(52, QR_HINT, align="center", right=r))
    return rows


def layout(screen: Screen) -> list[Row]:
    """The rows of `screen`, top to bottom."""
    rows: list[Row] = []
    if qr_box(screen) is not None:
        return _idle_with_qr(screen)
    if screen.name == "idle":
        rows.append(Row(1, screen.window_name, shrink=True))
        if screen.offline:
            rows.append(Row(1, OFFLINE_BADGE, align="right", invert=True))
        if screen.staff is not None:
            rows.extend(_staff(screen.staff))
        if screen.lines:  # the invitation: a press now rates the window
            rows.append(Row(32, screen.heading, size=16, align="center"))
            rows.append(Row(52, _line(screen, 0), align="center"))
        else:
            rows.append(Row(36, screen.heading, size=16, align="center"))
    elif screen.name == "prompt":
        rows.append(Row(0, screen.heading))
        rows.append(Row(13, _line(screen, 0)))
        rows.extend(_two_columns(screen.options[:6], 26))  # five levels: three rows
        rows.append(Row(52, countdown_text(screen.remaining_s), align="right"))
    elif screen.name == "reasons":
        rows.extend(_reasons(screen))
    elif screen.name == "thanks":
        rows.append(Row(14, screen.heading, size=16, align="center"))
        if screen.lines:  # the chosen level, drawn like the key that chose it
            rows.append(Row(40, _line(screen, 0), key=screen.level, align="center"))
    elif screen.name == "paused":
        rows.append(Row(1, screen.window_name, shrink=True))
        rows.append(Row(23, screen.heading, size=16, align="center"))
        if screen.lines:
            rows.append(Row(47, _line(screen, 0), align="center"))
    elif screen.name == "error":
        rows.append(Row(8, screen.heading, size=16, align="center"))
        rows.append(Row(32, _line(screen, 0), align="center"))
        rows.append(Row(48, _line(screen, 1), align="center"))
    return rows


def visible_text(screen: Screen) -> str:
    """The text a person sees, one line per row (rows sharing a y join with a space),
    before the renderer cuts anything too wide."""
    lines: dict[int, list[str]] = {}
    for row in layout(screen):
        if row.text:
            lines.setdefault(row.y, []).append(row.shown)
    return "\n".join(" ".join(parts) for _, parts in sorted(lines.items()))
