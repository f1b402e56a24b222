"""The screens the goldens cover, and the exact font file the goldens were drawn with.

Shared by tests/test_render.py (compares) and `python -m tests.golden` (rewrites).
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

from device.core.model import LEVEL_LABELS, Option, Screen
from device.core.settings import DEFAULT_REASONS

GOLDEN_DIR = Path(__file__).resolve().parent
REGENERATE = ".venv/bin/python -m tests.golden --write"
REGENERATE_GALLERY = ".venv/bin/hcp-sim gallery --out docs/screens"
GOLDEN_FONT_PACKAGE = "fonts-wqy-zenhei"

# Goldens are pixel-exact, so they hold for one font file only: Debian's
# fonts-wqy-zenhei 0.9.45 (the face "WenQuanYi Zen Hei Sharp", index 2).
GOLDEN_FONT = Path("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc")
GOLDEN_FONT_INDEX = 2
GOLDEN_FONT_SHA256 = "79c18ebe7b811951e8311bad7103ebeae8c337ed9988ea69e8a78a66cfe029b9"

WINDOW = "03号窗口 不动产登记"
PROMPT_OPTIONS = tuple(Option(level, LEVEL_LABELS[level]) for level in (5, 4, 3, 2, 1))
DEFAULT_REASON_OPTIONS = (
    *(Option(key, label, code)
      for key, (code, label) in zip((5, 4, 3, 2), DEFAULT_REASONS, strict=True)),
    Option(1, "跳过", None),
)


def golden_font_sha256() -> str | None:
    """The installed golden font's digest, or None when it is not installed."""
    return _digest(GOLDEN_FONT) if GOLDEN_FONT.is_file() else None


@cache
def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def golden_font_problem(regenerate: str = REGENERATE) -> str | None:
    """Why the goldens cannot be checked on this machine, or None when they can.

    A missing or different golden font is a failure, not a skip: a Debian font update
    would otherwise leave the suite green while nothing is compared any more.
    """
    digest = golden_font_sha256()
    if digest is None:
        return (f"the goldens are drawn with {GOLDEN_FONT} (face {GOLDEN_FONT_INDEX}), which "
                f"is not installed: apt install {GOLDEN_FONT_PACKAGE} (./hcp test installs "
                "it)")
    if digest != GOLDEN_FONT_SHA256:
        return (f"the goldens are drawn with {GOLDEN_FONT} sha256 {GOLDEN_FONT_SHA256}, but "
                f"the installed file has sha256 {digest} (a new {GOLDEN_FONT_PACKAGE}?). "
                "If the new font is meant: set GOLDEN_FONT_SHA256 in tests/golden/cases.py to "
                f"{digest}, run {regenerate}, look at every changed picture and commit them")
    return None


CASES: dict[str, Screen] = {
    "idle": Screen("idle", window_name=WINDOW),
    "idle_staff": Screen("idle", window_name=WINDOW, staff_name="张晓明"),
    "idle_staff_offline": Screen("idle", window_name=WINDOW, staff_name="张晓明", offline=True),
    "idle_spontaneous": Screen("idle", window_name=WINDOW, staff_name="李娜", spontaneous=True),
    "idle_spontaneous_offline": Screen("idle", window_name=WINDOW, staff_name="李娜",
                                       spontaneous=True, offline=True),
    "idle_long_window_name": Screen(
        "idle", window_name="12号综合受理窗口 不动产登记与税费缴纳一窗办理", staff_name="欧阳明月",
        offline=True),
    "idle_window_name_fits_small": Screen("idle", window_name="03号窗口 不动产登记中心"),
    "prompt_60": Screen("prompt", window_name=WINDOW, service_name="不动产转移登记",
                        case_id="C1", remaining_s=60, options=PROMPT_OPTIONS),
    "prompt_5": Screen("prompt", window_name=WINDOW, service_name="不动产转移登记",
                       case_id="C1", remaining_s=5, options=PROMPT_OPTIONS),
    "prompt_long_service": Screen(
        "prompt", window_name=WINDOW,
        service_name="国有建设用地使用权及房屋所有权转移登记（买卖）",
        case_id="C2", remaining_s=42, options=PROMPT_OPTIONS),
    "prompt_spontaneous": Screen("prompt", window_name=WINDOW, remaining_s=30,
                                 options=PROMPT_OPTIONS, spontaneous=True),
    "reasons_default": Screen("reasons", window_name=WINDOW, case_id="C1", level=2,
                              remaining_s=30, options=DEFAULT_REASON_OPTIONS),
    "reasons_custom_two": Screen("reasons", window_name=WINDOW, case_id="C1", level=1,
                                 remaining_s=9, options=(Option(5, "等候太久", "X01"),
                                                         Option(4, "材料反复", "X02"),
                                                         Option(1, "跳过", None))),
    "reasons_custom_long": Screen("reasons", window_name=WINDOW, case_id="C1", level=1,
                                  remaining_s=25, options=(
                                      Option(5, "等候时间过长", "X01"),
                                      Option(4, "要求重复提交材料", "X02"),
                                      Option(3, "政策解释不清楚", "X03"),
                                      Option(2, "其他问题", "X04"),
                                      Option(1, "跳过", None))),
    "thanks_5": Screen("thanks", window_name=WINDOW, level=5),
    "thanks_1": Screen("thanks", window_name=WINDOW, level=1),
    "paused": Screen("paused", window_name=WINDOW),
    "paused_reason": Screen("paused", window_name=WINDOW, message="系统维护中"),
    "error": Screen("error", window_name=WINDOW, message="存储故障"),
}
