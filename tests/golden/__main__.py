"""Rewrite the golden images (a deliberate act: tests never write them).

    .venv/bin/python -m tests.golden --write        # rewrite tests/golden/*.png
    .venv/bin/python -m tests.golden --preview DIR  # 4× enlarged copies to look at
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image

from drivers.fonts import fonts_from_file
from drivers.render import render
from tests.golden.cases import (
    CASES,
    GOLDEN_DIR,
    GOLDEN_FONT,
    GOLDEN_FONT_INDEX,
    GOLDEN_FONT_PACKAGE,
    GOLDEN_FONT_SHA256,
    golden_font_sha256,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.golden", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="rewrite tests/golden/*.png")
    parser.add_argument("--preview", type=Path, help="write 4× enlarged PNGs here")
    args = parser.parse_args(argv)
    if not args.write and not args.preview:
        parser.error("say --write and/or --preview DIR")
    digest = golden_font_sha256()
    if digest is None:
        print(f"golden font {GOLDEN_FONT} is not installed (apt install "
              f"{GOLDEN_FONT_PACKAGE})", file=sys.stderr)
        return 1
    if digest != GOLDEN_FONT_SHA256:
        print(f"note: {GOLDEN_FONT} sha256 is {digest}; update GOLDEN_FONT_SHA256 in "
              "tests/golden/cases.py if these goldens are meant for this font", file=sys.stderr)
    fonts = fonts_from_file(GOLDEN_FONT, GOLDEN_FONT_INDEX)
    if args.preview:
        args.preview.mkdir(parents=True, exist_ok=True)
    for name, screen in CASES.items():
        image = render(screen, fonts)
        if args.write:
            image.save(GOLDEN_DIR / f"{name}.png")
        if args.preview:
            big = image.convert("L").resize((image.width * 4, image.height * 4),
                                            Image.Resampling.NEAREST)
            big.save(args.preview / f"{name}.png")
        print(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
