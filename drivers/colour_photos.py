"""Staff photos for the clerk's card on colour screens: `[display] staff_photos_dir`
read safely (ids checked, sizes bounded, files re-read when they change), and a source
that never lets a bad photo cost the frame.
"""

from __future__ import annotations

import logging
import re
import stat
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageOps

from common.text import log_text
from device.core.model import Staff

log = logging.getLogger(__name__)

PhotoSource = Callable[[str], Image.Image | None]

_SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def safe_photo(photos: PhotoSource | None, staff: Staff) -> Image.Image | None:
    if photos is None or not _SAFE_ID.fullmatch(staff.staff_id):
        return None
    try:
        return photos(staff.staff_id)
    except OSError as e:
        log.warning("photo of %s not shown: %s", log_text(staff.staff_id), e)
        return None



class PhotoDir:
    """`[display] staff_photos_dir`: `<staff_id>.png` or `.jpg`, read once per file
    version (a new photo is picked up when its mtime changes), bounded in memory."""

    MAX_PIXELS = 4096 * 4096

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self._cache: dict[str, tuple[float, Image.Image | None]] = {}

    def __call__(self, staff_id: str) -> Image.Image | None:
        if not _SAFE_ID.fullmatch(staff_id):
            return None  # never a path outside the directory
        for ext in (".png", ".jpg", ".jpeg"):
            path = self.dir / f"{staff_id}{ext}"
            try:
                info = path.stat()
            except OSError:
                continue
            mtime = info.st_mtime
            cached = self._cache.get(staff_id)
            if cached is not None and cached[0] == mtime:
                return cached[1]
            image: Image.Image | None
            try:
                if not stat.S_ISREG(info.st_mode):
                    # A FIFO would make Image.open wait for a writer, and the display too.
                    raise OSError("not a regular file")
                with Image.open(path) as raw:
                    if raw.width * raw.height > self.MAX_PIXELS:
                        raise OSError(f"{raw.width}×{raw.height} is too large")
                    raw.thumbnail((600, 800))
                    image = ImageOps.exif_transpose(raw).convert("RGB")
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
                # SyntaxError: PIL's word for a broken PNG (a wrong chunk length).
                log.warning("staff photo %s not used: %s", path, e)
                image = None
            if len(self._cache) > 64:
                self._cache.clear()
            self._cache[staff_id] = (mtime, image)
            return image
        return None
