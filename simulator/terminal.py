"""The terminal under `hcp-sim device`: raw keys in, whole-screen redraws out (plain
text and ANSI cursor movement only, for an SSH session without mouse or colours), and
lines cut to the terminal's width so that nothing wraps and scrolls the view."""

from __future__ import annotations

import os
import select
import sys
import termios
import tty
import unicodedata
from typing import Any


class Terminal:
    """Raw keys in, whole-screen redraws out; restores the terminal however we leave."""

    def __init__(self) -> None:
        self.fd = sys.stdin.fileno()
        self.tty = os.isatty(self.fd)
        self.saved: list[Any] | None = None
        # What the terminal shows now: a redraw skips the colour lines that did not change
        # (a colour screen is tens of kilobytes of escapes, and the status line below it
        # changes every second); plain lines are always written again.
        self._shown: list[str] = []
        self._size: tuple[int, int] | None = None

    def __enter__(self) -> Terminal:
        if self.tty:
            self.saved = termios.tcgetattr(self.fd)
            tty.setcbreak(self.fd)
            sys.stdout.write("\x1b[?25l\x1b[2J")  # hide cursor, clear
        return self

    def __exit__(self, *exc: object) -> None:
        if self.saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)
            sys.stdout.write("\x1b[?25h\n")
            sys.stdout.flush()

    def read_key(self, timeout: float) -> str | None:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return None
        data = os.read(self.fd, 1)
        if not data:
            return "EOF"
        return data.decode("utf-8", "replace")

    def draw(self, lines: list[str]) -> None:
        # Lines are placed by absolute cursor moves, never by a newline: on the
        # terminal's bottom row a newline would scroll the whole view up by one.
        size: tuple[int, int] | None = None
        if sys.stdout.isatty():
            now = os.get_terminal_size(sys.stdout.fileno())
            size = (now.columns, now.lines)
        if size != self._size:  # resized: whatever was drawn may have wrapped
            self._shown, self._size = [], size
            sys.stdout.write("\x1b[H\x1b[J")
        out = [f"\x1b[{row + 1};1H{line}\x1b[K" for row, line in enumerate(lines)
               if row >= len(self._shown) or self._shown[row] != line or "\x1b[" not in line]
        if len(lines) < len(self._shown):
            out.append(f"\x1b[{len(lines) + 1};1H\x1b[J")
        self._shown = list(lines)
        sys.stdout.write("".join(out))
        sys.stdout.flush()


def width_of(text: str) -> int:
    """Terminal columns `text` takes: East Asian wide and fullwidth characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def fit(text: str, cols: int) -> str:
    """`text` cut to `cols` terminal columns, so that no line wraps and scrolls the view."""
    if width_of(text) <= cols:
        return text
    out, used = [], 0
    for ch in text:
        w = 2 if unicodedata.east_asian_width(ch) in "WF" else 1
        if used + w > cols - 1:
            break
        out.append(ch)
        used += w
    return "".join(out) + "…"
