"""The simulator's key input and display (SPEC §8, §10): what the daemon sees as a
KeyInput and a Display, both served by the one control socket of drivers/sim.py."""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from device.core.model import LEVEL_LABELS, Screen
from device.ports import DriverError, Emit, MonotonicClock

if TYPE_CHECKING:
    from drivers.sim import SimServer

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class SimFrame:
    """A screen as the sim socket reports it (SPEC §8, §10): the frame (1024 bytes of
    1-bit pixels, or a PNG for a colour display), the text as drawn (long names cut to
    their "…"), the URL of the QR code drawn (or None), and on a colour display each
    option's touch target by level (x0, y0, x1, y1 half-open, screen pixels)."""

    frame: bytes
    text: str
    qr: str | None = None
    format: str = "mono1"
    width: int = 128
    height: int = 64
    boxes: Mapping[int, Box] = field(default_factory=dict)


# screen -> SimFrame, or (1024-byte 1-bit frame, the text as drawn) for a bare renderer
Renderer = Callable[[Screen], "SimFrame | tuple[bytes, str]"]


class SimInput:
    """KeyInput whose keys are pressed through the sim socket."""

    def __init__(self, server: SimServer) -> None:
        self.server = server
        server.acquire()

    def start(self, emit: Emit, clock: MonotonicClock) -> None:
        self.server.attach_input(emit, clock)
        self.server.open()

    def close(self) -> None:
        self.server.detach_input()
        self.server.release()


class SimDisplay:
    """Display that sends each screen to every sim client (SPEC §8 screen events)."""

    def __init__(self, server: SimServer, renderer: Renderer) -> None:
        self.server = server
        self.renderer = renderer
        self.last: Screen | None = None
        self.last_frame: SimFrame | None = None
        server.acquire()

    def show(self, screen: Screen) -> None:
        self.server.open()
        failing = self.server.failing.get("display")
        if failing is not None:
            raise DriverError(failing)    # the `fail` test seam: a panel that stopped answering
        self.last = screen
        drawn = self.renderer(screen)
        if not isinstance(drawn, SimFrame):
            drawn = SimFrame(*drawn)
        self.last_frame = drawn
        options = [_option(o, with_code=screen.name == "reasons") for o in screen.options]
        # A colour idle screen that invites a rating of the window draws the five
        # levels as buttons of its own: they are touch targets too.
        listed = {o.level for o in screen.options}
        options += [{"level": level, "label": LEVEL_LABELS.get(level, str(level))}
                    for level in sorted(drawn.boxes, reverse=True) if level not in listed]
        for option in options:
            box = drawn.boxes.get(option["level"])
            if box is not None:
                option["box"] = list(box)
        event: dict[str, Any] = {
            "ev": "screen",
            "screen": screen.name,
            "text": drawn.text,
            "options": options,
            "format": drawn.format,
            "width": drawn.width,
            "height": drawn.height,
            "frame": base64.b64encode(drawn.frame).decode("ascii"),
            "qr": drawn.qr,
        }
        if screen.name in ("prompt", "reasons"):
            event["case_id"] = screen.case_id
        if screen.remaining_s is not None:
            event["remaining_s"] = screen.remaining_s
        self.server.broadcast(event, remember=True)

    def close(self) -> None:
        self.server.release()


def _option(o: Any, with_code: bool) -> dict[str, Any]:
    d: dict[str, Any] = {"level": o.level, "label": o.label}
    if with_code:
        d["code"] = o.code  # None for the skip key
    return d
