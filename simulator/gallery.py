"""`hcp-sim gallery`: every screen of the evaluator drawn to PNG, and the docs page showing them.

Each picture comes from the real core (device.core.machine.Evaluator) driven through a
short scripted scene in virtual time, then drawn by the real renderer, so the gallery
shows exactly what a device shows. Output is byte-for-byte repeatable: regenerating
with nothing changed leaves git clean.

    hcp-sim gallery --out docs/screens [--scale 4] [--doc docs/screens.md] [--font FILE[#N]]
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from device.clock import FakeClock
from device.core.machine import Evaluator, Identity
from device.core.model import (
    Action,
    FrameReceived,
    KeyDown,
    KeyUp,
    LinkChanged,
    Persist,
    PersistFailed,
    Screen,
    ScreenName,
    Show,
    Tick,
)
from device.core.settings import UiSettings
from device.ports import HardwareNotFound
from drivers.fonts import SIZES, Fonts, load_fonts
from drivers.layout_oled import visible_text
from drivers.render import render

WINDOW = "03号窗口 不动产登记"
LONG_WINDOW = "12号窗口 公安出入境 港澳台通行证签注"
SERVICE = "不动产转移登记"
LONG_SERVICE = "建设工程消防验收备案及抽查复查申请"
CLERK = "李娜"
IDENTITY = Identity("421100-HG01-W03", "421100", "HG01", "W03")

DEFAULT_SCALE = 4
BEZEL_GREY = 80  # the panel's edge: darker than a light page, lighter than unlit pixels
REGENERATE = "hcp-sim gallery --out docs/screens"


class Scene:
    """One evaluator in virtual time, driven like a window system and a citizen would;
    remembers the last screen the core asked to show."""

    def __init__(self, window_name: str = WINDOW, **ui: Any) -> None:
        self.clock = FakeClock()
        ids = (f"{n:032x}" for n in itertools.count(1))
        self.core = Evaluator(IDENTITY, UiSettings(window_name=window_name, **ui), self.clock,
                              new_rating_id=lambda: next(ids))
        self.screen: Screen | None = None
        self._last_persist: Persist | None = None
        self._seq = itertools.count(1)
        self._apply(self.core.start(self.clock.now))

    def _apply(self, actions: list[Action]) -> Scene:
        for action in actions:
            if isinstance(action, Show):
                self.screen = action.screen
            elif isinstance(action, Persist):
                self._last_persist = action
        return self

    def frame(self, type_: str, **fields: Any) -> Scene:
        """A frame from the window system (already CRC-checked, as the serial reader
        hands it over)."""
        event = FrameReceived(type_, next(self._seq), fields, self.clock.now)
        return self._apply(self.core.handle(event))

    def case(self, case_id: str, service_name: str | None = None) -> Scene:
        fields = {"case_id": case_id}
        if service_name is not None:
            fields["service_name"] = service_name
        return self.frame("case_completed", **fields)

    def press(self, level: int) -> Scene:
        self._apply(self.core.handle(KeyDown(level, self.clock.now)))
        return self._apply(self.core.handle(KeyUp(level, self.clock.now)))

    def wait(self, seconds: float) -> Scene:
        """Let virtual time pass, with every Tick the core asks for on the way."""
        end = self.clock.now + seconds
        while (due := self.core.next_deadline()) is not None and due <= end:
            self.clock.advance(max(0.0, due - self.clock.now))
            self._apply(self.core.handle(Tick(self.clock.now)))
        self.clock.advance(end - self.clock.now)
        return self._apply(self.core.handle(Tick(self.clock.now)))

    def offline(self) -> Scene:
        return self._apply(self.core.handle(LinkChanged(False, self.clock.now)))

    def storage_fails(self) -> Scene:
        """The outbox refuses the rating just pressed (disk full, I/O error)."""
        assert self._last_persist is not None, "storage_fails() needs a rating first"
        rating_id = self._last_persist.rating["rating_id"]
        return self._apply(self.core.handle(
            PersistFailed(rating_id, "No space left on device", self.clock.now)))


@dataclass(frozen=True)
class Shot:
    """One picture: the scene that leads to it, what it is called, and when it appears."""

    name: str            # file stem: <name>.png, <name>-x<scale>.png
    shows: ScreenName    # the screen the scene must end on (checked: no silent drift)
    title: str
    when: str            # docs: what the screen shows and when
    scene: Callable[[], Scene]

    def screen(self) -> Screen:
        screen = self.scene().screen
        if screen is None or screen.name != self.shows:
            got = None if screen is None else screen.name
            raise RuntimeError(f"gallery scene {self.name!r} ended on {got!r}, "
                               f"not {self.shows!r}: the core changed; update the scene")
        return screen


SHOTS: tuple[Shot, ...] = (
    Shot("idle", "idle", "idle",
         "After start-up, no clerk signed in. With `ui.allow_spontaneous = true` (the "
         "default) a press here rates the window itself, hence the invitation.",
         lambda: Scene()),
    Shot("idle_no_spontaneous", "idle", "idle, spontaneous ratings off",
         "`ui.allow_spontaneous = false`: keys do nothing until a case arrives, so the "
         "screen does not invite a press.",
         lambda: Scene(allow_spontaneous=False)),
    Shot("idle_staff", "idle", "idle with a clerk",
         f"After `staff_login` (staff_id=S007, staff_name={CLERK}): the name and the 工号. "
         "A long name is cut with … before mid-panel so the 工号 always shows; a login "
         "with a name only reads 工作人员：李娜.",
         lambda: Scene().frame("staff_login", staff_id="S007", staff_name=CLERK)),
    Shot("idle_qr", "idle", "idle with a QR code (扫码评价)",
         "`ui.qr_url = \"https://pj.example.gov.cn/h5?deviceCode={device_id}\"` (SPEC §10): "
         "a link that needs no case shows on idle, at the right edge, dark modules on a lit "
         "square as phones read them; clerk and welcome keep the left column. On this "
         "panel the prompt never shows a code (a colour screen does).",
         lambda: Scene(qr_url="https://pj.example.gov.cn/h5?deviceCode={device_id}")
         .frame("staff_login", staff_id="S007", staff_name=CLERK)),
    Shot("idle_offline", "idle", "idle, offline",
         "The device cannot reach the broker: the 离线 badge. Ratings are still taken "
         "and kept in the outbox; the badge is shown on idle only, never to a citizen "
         "who is rating.",
         lambda: Scene().frame("staff_login", staff_id="S007", staff_name=CLERK).offline()),
    Shot("idle_long_window_name", "idle", "idle, long window name",
         f"`device.window_name = \"{LONG_WINDOW}\"`: the name drops to 11 px, then is cut "
         "with …; the badge keeps its room.",
         lambda: Scene(LONG_WINDOW).frame("staff_login", staff_id="S007",
                                          staff_name=CLERK).offline()),
    Shot("prompt", "prompt", "prompt",
         f"`case_completed` arrives (service_name={SERVICE}): the five levels, key N "
         "rates level N; the countdown starts at `ui.prompt_timeout_s` (60).",
         lambda: Scene().case("C-0001", SERVICE)),
    Shot("prompt_5s", "prompt", "prompt, 5 s left",
         "55 s later with no press. At 0 the prompt expires: `expired` frame, back to idle.",
         lambda: Scene().case("C-0001", SERVICE).wait(55)),
    Shot("prompt_long_service", "prompt", "prompt, long service name",
         f"service_name={LONG_SERVICE}: cut with … on its row; the question and the "
         "levels are never cut.",
         lambda: Scene().case("C-0002", LONG_SERVICE)),
    Shot("prompt_no_service", "prompt", "prompt without a service name",
         "`case_completed` with no service_name: 本次服务 stands in.",
         lambda: Scene().case("C-0003")),
    Shot("reasons", "reasons", "reasons",
         "Key 2 (不满意) or 1 on the prompt: pick a reason (default R01–R04) or skip. "
         "Nothing is stored until a reason is picked, skipped, or `ui.reasons_timeout_s` "
         "(30) passes.",
         lambda: Scene().case("C-0001", SERVICE).press(2)),
    Shot("reasons_custom_two", "reasons", "reasons, two configured",
         "`ui.reasons` with two entries: keys 5 and 4 pick them, 1 skips, 3 and 2 do "
         "nothing.",
         lambda: Scene(reasons=(("X01", "等候太久"), ("X02", "材料反复")))
         .case("C-0001", SERVICE).press(1)),
    Shot("thanks_5", "thanks", "thanks, level 5",
         "Key 5 on the prompt: the rating is on disk (fsync) before this appears. Shown "
         "for `ui.thanks_s` (3 s); presses are ignored meanwhile.",
         lambda: Scene().case("C-0001", SERVICE).press(5)),
    Shot("thanks_1", "thanks", "thanks, level 1",
         "Key 1 on the prompt, then a reason (here key 5, 服务态度).",
         lambda: Scene().case("C-0001", SERVICE).press(1).press(5)),
    Shot("paused_reason", "paused", "paused, with a reason",
         "`pause` with reason=午间休息. A case on screen is hidden with its time left and "
         "comes back on `resume`.",
         lambda: Scene().frame("pause", reason="午间休息")),
    Shot("paused", "paused", "paused",
         "`pause` with no reason.",
         lambda: Scene().frame("pause")),
    Shot("error_storage", "error", "storage error",
         "The outbox could not store the rating (disk full, I/O error): no thanks, a "
         "`storage_error` event, 5 s of this, then the case is back on the prompt.",
         lambda: Scene().case("C-0001", SERVICE).press(5).storage_fails()),
)


def panel(image: Image.Image, scale: int) -> Image.Image:
    """`image` enlarged with square pixels, framed by a one-panel-pixel grey bezel so the
    edge of the glass shows on a dark page as on a light one."""
    big = image.convert("L").resize((image.width * scale, image.height * scale),
                                    Image.Resampling.NEAREST)
    framed = Image.new("L", (big.width + 2 * scale, big.height + 2 * scale), BEZEL_GREY)
    framed.paste(big, (scale, scale))
    return framed


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _font_sources(fonts: Fonts) -> str:
    sources = {str(fonts[size].source) for size in SIZES}
    return f"`{sources.pop()}`" if len(sources) == 1 else f"`{fonts.describe()}`"


def markdown(shots: tuple[Shot, ...], screens: dict[str, Screen], image_dir: str,
             scale: int, fonts: Fonts) -> str:
    """docs/screens.md: one table row per picture; alt text is the screen's visible text."""
    lines = [
        "# Screens",
        "",
        "Every screen of the evaluator as the 128×64 1-bit OLED shows it (lit pixels "
        "white), enlarged with square pixels; the grey frame marks the edge of the "
        "panel. The native images sit next to the enlarged ones "
        f"(`{image_dir}/<name>.png`).",
        "",
        "Each picture is made by the real core (`device/core/machine.py`) driven "
        "through a short scripted scene in virtual time, and drawn by the real "
        "renderer (`drivers/render.py`). The core says what a screen shows "
        "(`device/core/screens.py`: every text, the keys' options, the countdown, the "
        "clerk); the panel's layout (`drivers/layout_oled.py`) says where. Text from "
        "outside is shown by one rule (docs/behaviour.md, \"Text on the screen\").",
        "",
        "Colour touch panels (480×320, 800×480, 1024×600, landscape or portrait) draw the "
        "same view model with their own layout: docs/screens-colour.md, which also says "
        "why their font is Noto Sans CJK.",
        "",
        "This page and its images are generated; do not edit them by hand. After "
        "changing a screen, look at the result and commit it:",
        "",
        f"    {REGENERATE}",
        "",
        f"Drawn with {_font_sources(fonts)}. `tests/test_gallery.py` fails when the "
        "checked-in images are out of date.",
        "",
        "| screen | what it shows and when | image |",
        "|---|---|---|",
    ]
    for shot in shots:
        alt = " / ".join(visible_text(screens[shot.name]).splitlines())
        image = f"{image_dir}/{shot.name}-x{scale}.png"
        lines.append(f"| {_cell(shot.title)} (`{shot.name}`) | {_cell(shot.when)} | "
                     f"![{_cell(alt)}]({image}) |")
    return "\n".join(lines) + "\n"


def write_gallery(out: Path, fonts: Fonts, scale: int = DEFAULT_SCALE,
                  doc: Path | None = None) -> list[Path]:
    """Write `<name>.png` (native, mode 1) and `<name>-x<scale>.png` for every shot into
    `out`, and the docs page to `doc` when given; returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    screens: dict[str, Screen] = {}
    for shot in SHOTS:
        screen = screens[shot.name] = shot.screen()
        image = render(screen, fonts)
        for path, picture in ((out / f"{shot.name}.png", image),
                              (out / f"{shot.name}-x{scale}.png", panel(image, scale))):
            picture.save(path, optimize=True)
            written.append(path)
    if doc is not None:
        image_dir = Path(os.path.relpath(out, doc.parent)).as_posix()
        doc.parent.mkdir(parents=True, exist_ok=True)
        doc.write_text(markdown(SHOTS, screens, image_dir, scale, fonts), encoding="utf-8")
        written.append(doc)
    return written


def main(argv: list[str]) -> int:
    if "--colour" in argv:  # the colour panels' gallery (SPEC §10)
        from simulator.colour_gallery import main as colour_main
        return colour_main([a for a in argv if a != "--colour"])
    parser = argparse.ArgumentParser(
        prog="hcp-sim gallery", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True,
                        help="directory for the PNGs (created if missing)")
    parser.add_argument("--scale", type=int, default=DEFAULT_SCALE,
                        help=f"enlargement of the framed copies, 2..16 (default {DEFAULT_SCALE})")
    parser.add_argument("--doc", type=Path,
                        help="where to write the docs page (default: OUT.md, next to OUT)")
    parser.add_argument("--no-doc", action="store_true", help="write the PNGs only")
    parser.add_argument("--font", default="",
                        help="as [display] font in the device config: FILE or FILE#N "
                             "(default: the font the device finds on its own)")
    args = parser.parse_args(argv)
    if not 2 <= args.scale <= 16:
        parser.error("--scale must be 2..16")
    try:
        fonts = load_fonts(args.font)
    except HardwareNotFound as e:
        print(f"hcp-sim gallery: {e}", file=sys.stderr)
        return 1
    out: Path = args.out
    doc = None if args.no_doc else (args.doc or out.with_name(out.name + ".md"))
    written = write_gallery(out, fonts, args.scale, doc)
    names = {p.name for p in written}
    for path in sorted(out.glob("*.png")):
        if path.name not in names:
            print(f"note: {path} was not written by this run (delete it if it is stale)",
                  file=sys.stderr)
    print(f"{len(SHOTS)} screens drawn into {out}" + (f", page {doc}" if doc else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
