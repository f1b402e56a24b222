"""The colour screens the goldens cover (SPEC §10), at each panel size, and the exact font
files they were drawn with.

    .venv/bin/python -m tests.golden.colour --write   # rewrite tests/golden/colour/*.png

Shared by tests/test_colour_layout.py (compares) and the colour gallery
(simulator/colour_gallery.py). Writing them is a deliberate act: tests never do.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

from PIL import Image

from device.core import screens
from device.core.model import Option, Screen, Staff
from drivers.colour_fonts import ColourFonts, FontFace
from simulator.colour_gallery import sample_photo
from tests.golden.cases import DEFAULT_REASON_OPTIONS, QR_CASE, QR_WINDOW, WINDOW

COLOUR_DIR = Path(__file__).resolve().parent / "colour"
REGENERATE = ".venv/bin/python -m tests.golden.colour --write"
FONT_PACKAGE = "fonts-noto-cjk"
_NOTO = Path("/usr/share/fonts/opentype/noto")
# Debian bookworm's fonts-noto-cjk 1:20220127+repack1-1, face 2 (Simplified Chinese).
FONT_FILES = {
    _NOTO / "NotoSansCJK-Regular.ttc":
        "b76b0433203017ca80401b2ee0dd69350349871c4b19d504c34dbdd80541690a",
    _NOTO / "NotoSansCJK-Bold.ttc":
        "faa5f3656a78b2e2d450d27fe8382c778bc2b6bb5ea29c986664a6a435056ceb",
}
FONTS = ColourFonts(FontFace(_NOTO / "NotoSansCJK-Regular.ttc", 2),
                    FontFace(_NOTO / "NotoSansCJK-Bold.ttc", 2))

# (width, height) -> the file name's part; portrait is the 7-inch panel turned.
SIZES: dict[tuple[int, int], str] = {
    (480, 320): "480x320", (800, 480): "800x480", (1024, 600): "1024x600",
    (480, 800): "480x800",
}

ZHANG = Staff("S0231", "张晓明")
LI = Staff("S0107", "李娜")        # has a photo in the goldens' photo source

CASES: dict[str, Screen] = {
    "idle": screens.idle(WINDOW, None, offline=False, spontaneous=True),
    "idle_staff_qr": screens.idle(WINDOW, LI, offline=False, spontaneous=True,
                                  qr_url=QR_WINDOW),
    "idle_placeholder_offline": screens.idle(WINDOW, ZHANG, offline=True, spontaneous=False,
                                             qr_url=QR_WINDOW),
    "prompt_qr": screens.prompt(WINDOW, LI, case_id="C1", service_name="不动产转移登记",
                                remaining_s=60, qr_url=QR_CASE),
    "prompt": screens.prompt(WINDOW, None, case_id="C2",
                             service_name="国有建设用地使用权及房屋所有权转移登记（买卖）",
                             remaining_s=42),
    "reasons": screens.reasons(WINDOW, None, case_id="C1", service_name=None, remaining_s=30,
                               level=2, choices=DEFAULT_REASON_OPTIONS),
    "reasons_long": screens.reasons(WINDOW, None, case_id="C1", service_name=None,
                                    remaining_s=25, level=1, choices=(
                                        Option(5, "等候时间过长", "X01"),
                                        Option(4, "要求重复提交材料", "X02"),
                                        Option(1, "跳过", None))),
    "thanks": screens.thanks(WINDOW, None, level=5),
    "thanks_1": screens.thanks(WINDOW, None, level=1),
    "paused": screens.paused(WINDOW, None, reason="午间休息"),
    "error": screens.error(WINDOW, None, message="评价未能保存"),
}


def photos(staff_id: str) -> Image.Image | None:
    return sample_photo() if staff_id == LI.staff_id else None


def golden_path(name: str, size: tuple[int, int]) -> Path:
    return COLOUR_DIR / f"{SIZES[size]}_{name}.png"


def font_problem() -> str | None:
    """Why the colour goldens cannot be checked here, or None."""
    for path, digest in FONT_FILES.items():
        if not path.is_file():
            return (f"the colour goldens are drawn with {path}, which is not installed: "
                    f"apt install {FONT_PACKAGE} (./hcp test installs it)")
        actual = hashlib.sha256(path.read_bytes()).hexdigest()
        if actual != digest:
            return (f"the colour goldens are drawn with {path} sha256 {digest}, the installed "
                    f"file has {actual}: if the new font is meant, update FONT_FILES in "
                    f"tests/golden/colour.py, run {REGENERATE}, look at every picture")
    return None


def main(argv: list[str] | None = None) -> int:
    from drivers.layout_colour import layout
    parser = argparse.ArgumentParser(prog="python -m tests.golden.colour", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="rewrite the colour goldens")
    args = parser.parse_args(argv)
    if not args.write:
        parser.error("say --write")
    problem = font_problem()
    if problem:
        print(problem, file=sys.stderr)
        return 1
    COLOUR_DIR.mkdir(exist_ok=True)
    for size in SIZES:
        for name, screen in CASES.items():
            layout(screen, size, FONTS, photos).image.save(golden_path(name, size),
                                                           optimize=True)
            print(golden_path(name, size).name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
