"""Headless Chromium for tests: Debian's `chromium` driven by PyPI playwright (no
browser download; root needs --no-sandbox). `./hcp test` installs chromium."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture
def browser_page() -> Iterator[Any]:
    """A playwright page of a 1920×1080 headless Chromium."""
    if not shutil.which("chromium"):
        pytest.skip("chromium is not installed (./hcp test installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1920, "height": 1080})
            yield page
        finally:
            browser.close()


def ink(png: bytes, background: tuple[int, int, int] = (255, 255, 255)) -> tuple[int, int]:
    """(pixels that are not the background, distinct colours) of a screenshot."""
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    colours = image.getcolors(maxcolors=image.width * image.height) or []
    inked = sum(n for n, colour in colours if colour != background)
    return inked, len(colours)
