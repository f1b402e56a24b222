"""What `hcp-sim device` draws in the terminal: the keys, the OLED in half blocks (or
a colour panel in true-colour blocks, scaled), the screen's text, the voice, the status
line and the latest messages, fitted to the terminal. A change of the view lands here;
driving the daemon and the window system is simulator/device_sim.py's."""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING

from simulator.colour_view import cells_for, colour_blocks, frame_image
from simulator.simclient import half_blocks
from simulator.terminal import fit, width_of

if TYPE_CHECKING:
    from simulator.device_sim import DeviceSim

__all__ = ["FRAME_LINES", "HELP", "HELP_ATTACHED", "MESSAGE_LINES", "TITLE", "view_lines"]

HELP = ("1-5 评价键  c 办结一件  x 撤销  p 暂停/恢复  l 登录/退出  "
        "s 卡键10秒  q 退出")
# Attached to a daemon started elsewhere: its serial peer is not ours to play.
HELP_ATTACHED = "1-5 评价键  s 卡键10秒  q 离开（评价器继续运行）"
# Lines around the OLED: keys, two box edges (the top one holds the title), screen
# text, voice, status.
FRAME_LINES = 6
TITLE = "hcp-sim device 好差评评价器模拟"
MESSAGE_LINES = 4


def view_lines(sim: DeviceSim) -> list[str]:
    """The whole view, never taller or wider than the terminal: the keys, the status
    and the info lines (the demo's URLs) stay on screen; the OLED is merged to half
    size and messages are dropped first."""
    client = sim.sim
    screen = client.screen if client else None
    status = (client.status if client else None) or {}
    cols, rows = shutil.get_terminal_size((130, 50))
    info = list(sim.args.info or [])
    # Full resolution needs 130 columns and 32 rows for the OLED; a smaller terminal
    # gets it merged two by two (64×16 cells), with a note saying so.
    full = cols >= 130 and rows >= FRAME_LINES + 32 + len(info) + 1
    step = 1 if full else 2
    width = 128 // step
    title = f"─ {TITLE}{' (attached)' if sim.attached else ''} "
    picture = frame_image(screen) if screen else None
    colour: list[str] = []
    if picture is not None:  # a colour panel: true-colour half blocks, scaled
        box = (cols - 2, rows - FRAME_LINES - len(info) - 1)
        colour = colour_blocks(picture, *box)
        width = cells_for(picture.size, *box)[0]
    out = [fit(HELP_ATTACHED if sim.attached else HELP, cols),
           "┌" + title + "─" * max(0, width - width_of(title)) + "┐"]
    if colour:
        out += ["│" + row + "│" for row in colour]
    elif screen and screen.get("frame") and screen.get("format", "mono1") == "mono1":
        out += ["│" + row + "│" for row in half_blocks(screen["frame"], step, step)]
    else:
        out += ["│" + " " * width + "│" for _ in range(64 // (2 * step))]
    note = "  (merged 2×2: 130×40 shows every pixel)" if step > 1 and not colour else ""
    if colour and picture is not None:
        note = f"  ({picture.width}×{picture.height}, scaled)"
    out.append("└" + "─" * width + "┘" + (note if width + 2 + len(note) <= cols else ""))
    if screen:
        name = screen.get("screen")
        extra = f"  case {screen['case_id']}" if screen.get("case_id") else ""
        out.append(f"screen: {name}{extra} | " + screen.get("text", "").replace("\n", " / "))
    else:
        out.append("screen: (waiting for the evaluator)")
    out.append(sim.voice.line() if sim.voice else "voice: -")
    broker = status.get("broker", "?")
    serial = "open" if status.get("serial_open") else "closed"
    platform = "" if sim.platform_total is None else f" | platform {sim.platform_total}"
    out.append(f"broker {broker} | serial {serial} | backlog {status.get('backlog', '?')}"
               f" | receipts {status.get('receipts', 0)}{platform}"
               f" | last frame {status.get('last_frame') or '-'}")
    out += info
    room = max(0, rows - len(out))
    with sim.lock:
        if room:
            out += sim.messages[-min(room, MESSAGE_LINES):]
    # Colour rows are as wide as the box already; their escapes are no columns.
    return [line if "\x1b[" in line else fit(line, cols) for line in out[:rows]]


