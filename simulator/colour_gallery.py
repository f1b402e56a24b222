"""`hcp-sim gallery --colour`: the screens of a colour panel (SPEC §10) drawn to PNG at
each panel size, and docs/screens-colour.md showing them.

Like the OLED gallery (simulator/gallery.py), every picture comes from the real core
driven through a scripted scene in virtual time, drawn by the real colour layout
(drivers/layout_colour.py); the output is byte-for-byte repeatable.

    hcp-sim gallery --colour --out docs/screens-colour [--doc docs/screens-colour.md]
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from device.core.model import Screen
from device.ports import HardwareNotFound
from drivers.colour_fonts import ColourFonts, load_colour_fonts
from drivers.layout_colour import layout
from simulator.gallery import CLERK, SERVICE, Scene, Shot

REGENERATE = "hcp-sim gallery --colour --out docs/screens-colour"
QR_WINDOW = "https://pj.example.gov.cn/h5?deviceCode={device_id}"
QR_CASE = "https://pj.example.gov.cn/h5?projectNo={case_id}&deviceCode={device_id}"
# Every shot at the 7-inch panel's size; the others (and the panel turned) for the
# screens whose arrangement changes with the shape.
MAIN = (800, 480)
MORE = ((480, 320), (1024, 600), (480, 800))
MORE_SHOTS = ("idle_clerk_qr", "prompt_qr", "reasons", "thanks_5")


def _clerk(scene: Scene) -> Scene:
    return scene.frame("staff_login", staff_id="S0107", staff_name=CLERK)


SHOTS: tuple[Shot, ...] = (
    Shot("idle", "idle", "idle",
         "After start-up, no clerk signed in, no `ui.qr_url`. With `ui.allow_spontaneous` "
         "(the default) a touch rates the window itself, so the five levels are buttons "
         "across the foot of the screen (on the OLED any key does it).",
         lambda: Scene()),
    Shot("idle_clerk_qr", "idle", "idle with the clerk and a QR code",
         "After `staff_login` (S0107, 李娜): the clerk's card with the photo from "
         "`[display] staff_photos_dir` (`S0107.png`; here a drawn stand-in), name and 工号; "
         f"`ui.qr_url = \"{QR_WINDOW}\"` needs no case, so its code shows on idle.",
         lambda: _clerk(Scene(qr_url=QR_WINDOW))),
    Shot("idle_placeholder_offline", "idle", "idle, no photo, offline",
         "A clerk without a photo file: the surname on a disc. The 离线 badge when the "
         "broker is out of reach. `ui.allow_spontaneous = false`: no buttons until a case "
         "comes.",
         lambda: Scene(allow_spontaneous=False).frame(
             "staff_login", staff_id="S0231", staff_name="张晓明").offline()),
    Shot("prompt_qr", "prompt", "prompt with the case's QR code",
         f"`case_completed` (service_name={SERVICE}) with `ui.qr_url = \"{QR_CASE}\"`: the "
         "five levels as touch buttons (the key number in the corner for panels with keys "
         "too), the countdown in the band, the case's code (a frame's `eval_url` would "
         "replace it). A small landscape panel leaves the code out rather than shrink the "
         "levels below legibility.",
         lambda: _clerk(Scene(qr_url=QR_CASE)).case("C-0001", SERVICE)),
    Shot("prompt_long_service", "prompt", "prompt, long service name",
         "A long service name is set smaller, then cut with …; the levels keep their size.",
         lambda: Scene().case("C-0002", "国有建设用地使用权及房屋所有权转移登记（买卖）")),
    Shot("reasons", "reasons", "reasons",
         "不满意 or 非常不满意: the reasons as buttons, 跳过 apart at the bottom right.",
         lambda: Scene().case("C-0001", SERVICE).press(2)),
    Shot("thanks_5", "thanks", "thanks",
         "Stored (fsync) before this appears; the chosen level in its colour.",
         lambda: Scene().case("C-0001", SERVICE).press(5)),
    Shot("paused", "paused", "paused", "`pause` with reason=午间休息.",
         lambda: Scene().frame("pause", reason="午间休息")),
    Shot("error_storage", "error", "storage error",
         "The outbox could not store the rating: 5 s of this, then the prompt again.",
         lambda: Scene().case("C-0001", SERVICE).press(5).storage_fails()),
)


@functools.cache
def sample_photo() -> Image.Image:
    """A drawn stand-in portrait (no real person's photo in the repository)."""
    image = Image.new("RGB", (300, 400), (206, 220, 236))
    d = ImageDraw.Draw(image)
    d.ellipse((95, 70, 205, 190), fill=(236, 200, 170))
    d.pieslice((80, 50, 220, 200), 180, 360, fill=(40, 32, 30))
    d.rounded_rectangle((50, 220, 250, 420), radius=60, fill=(28, 60, 110))
    d.polygon([(130, 220), (150, 290), (170, 220)], fill=(250, 250, 250))
    return image


def _photos(staff_id: str) -> Image.Image | None:
    return sample_photo() if staff_id == "S0107" else None


@dataclass(frozen=True)
class Picture:
    shot: Shot
    size: tuple[int, int]

    @property
    def file(self) -> str:
        return f"{self.shot.name}-{self.size[0]}x{self.size[1]}.png"


def pictures() -> list[Picture]:
    out = [Picture(shot, MAIN) for shot in SHOTS]
    out += [Picture(shot, size) for size in MORE for shot in SHOTS if shot.name in MORE_SHOTS]
    return out


def markdown(rows: list[tuple[Picture, str]], image_dir: str, fonts: ColourFonts) -> str:
    lines = [
        "# Colour screens",
        "",
        "Every screen of a colour touch panel (SPEC §10) as `drivers/layout_colour.py` "
        "draws it from the same view model as the OLED (docs/screens.md): first at the "
        "7-inch DSI panel's 800×480, then the screens whose arrangement changes with the "
        "panel's shape at 480×320 (3.5-inch SPI), 1024×600 (HDMI) and 480×800 (the 7-inch "
        "panel turned, `rotate = 90`).",
        "",
        "Sizes follow the panel: one unit is a fiftieth of the shorter side, so on the "
        "7-inch panel (about 154 × 86 mm) body text is ~24 px (4.3 mm, legible from 60 cm), "
        "titles 35–70 px, and no touch button is smaller than 13 % of the shorter side "
        "(62 px = 12 mm). The five levels share one label size, so they read as a scale; "
        "a label that does not fit breaks after 非常/基本 rather than mid-word.",
        "",
        "**Font.** Noto Sans CJK SC (Debian `fonts-noto-cjk`, face 2 of the collections), "
        "regular and bold. It installs from the Debian archive on a fresh Debian and on "
        "Raspberry Pi OS alike; it is drawn for screens, has a true bold for titles and "
        "buttons, and the mainland glyph forms a citizen expects. WenQuanYi Zen Hei "
        "(`fonts-wqy-zenhei`, the OLED's font) is the fallback: one weight only (bold "
        "would be smeared), and its outlines are coarser at 30 px and above — fine for "
        "a 12 px bitmap strike, not for a 60 px title. Text is antialiased and laid out "
        "with Pillow's basic engine, so frames are the same with and without libraqm.",
        "",
        "This page and its images are generated; do not edit them by hand:",
        "",
        f"    {REGENERATE}",
        "",
        f"Drawn with `{fonts.describe()}`. `tests/test_colour_gallery.py` fails when the "
        "checked-in images are out of date.",
        "",
        "| screen | size | what it shows and when | image |",
        "|---|---|---|---|",
    ]
    for picture, text in rows:
        alt = text.replace("\n", " / ").replace("|", "\\|").replace("[", "(").replace("]", ")")
        w, h = picture.size
        lines.append(f"| {picture.shot.title} (`{picture.shot.name}`) | {w}×{h} | "
                     f"{picture.shot.when} | ![{alt}]({image_dir}/{picture.file}) |")
    return "\n".join(lines) + "\n"


def write_gallery(out: Path, fonts: ColourFonts, doc: Path | None = None) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    rows: list[tuple[Picture, str]] = []
    screens: dict[str, Screen] = {}
    for picture in pictures():
        name = picture.shot.name
        if name not in screens:
            screens[name] = picture.shot.screen()
        frame = layout(screens[name], picture.size, fonts, _photos)
        path = out / picture.file
        frame.image.save(path, optimize=True)
        written.append(path)
        rows.append((picture, frame.text))
    if doc is not None:
        image_dir = Path(os.path.relpath(out, doc.parent)).as_posix()
        doc.write_text(markdown(rows, image_dir, fonts), encoding="utf-8")
        written.append(doc)
    return written


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="hcp-sim gallery --colour", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--doc", type=Path)
    parser.add_argument("--no-doc", action="store_true")
    parser.add_argument("--font", default="")
    args = parser.parse_args(argv)
    try:
        fonts = load_colour_fonts(args.font)
    except HardwareNotFound as e:
        print(f"hcp-sim gallery: {e}", file=sys.stderr)
        return 1
    out: Path = args.out
    doc = None if args.no_doc else (args.doc or out.with_name(out.name + ".md"))
    written = write_gallery(out, fonts, doc)
    names = {p.name for p in written}
    for path in sorted(out.glob("*.png")):
        if path.name not in names:
            print(f"note: {path} was not written by this run (delete it if it is stale)",
                  file=sys.stderr)
    print(f"{len(pictures())} colour screens drawn into {out}"
          + (f", page {doc}" if doc else ""))
    return 0
