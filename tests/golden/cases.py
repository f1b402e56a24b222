"""The screens the goldens cover, and the exact font file the goldens were drawn with.

Shared by tests/test_render.py (compares) and `python -m tests.golden` (rewrites).
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

from device.core import screens
from device.core.model import Option, Screen, Staff
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


# A window's rating link (no case in it), the length a province's H5 page has.
QR_WINDOW = "https://pj.example.gov.cn/h5?deviceCode=421100-HG01-W03"
QR_CASE = "https://pj.example.gov.cn/h5?projectNo=2026112500017&deviceCode=421100-HG01-W03"

ZHANG = Staff("S0231", "张晓明")
LI = Staff("S0107", "李娜")

CASES: dict[str, Screen] = {
    "idle": screens.idle(WINDOW, None, offline=False, spontaneous=False),
    "idle_staff": screens.idle(WINDOW, ZHANG, offline=False, spontaneous=False),
    "idle_staff_offline": screens.idle(WINDOW, ZHANG, offline=True, spontaneous=False),
    "idle_spontaneous": screens.idle(WINDOW, LI, offline=False, spontaneous=True),
    "idle_spontaneous_offline": screens.idle(WINDOW, LI, offline=True, spontaneous=True),
    "idle_staff_name_only": screens.idle(WINDOW, Staff("", "张晓明"), offline=False,
                                         spontaneous=False),
    "idle_staff_id_only": screens.idle(WINDOW, Staff("S0231", ""), offline=False,
                                       spontaneous=False),
    "idle_staff_long": screens.idle(WINDOW, Staff("421100-HG01-W03-00231", "司马欧阳明月晓"),
                                    offline=False, spontaneous=True),
    "idle_long_window_name": screens.idle(
        "12号综合受理窗口 不动产登记与税费缴纳一窗办理", Staff("S1024", "欧阳明月"),
        offline=True, spontaneous=False),
    "idle_window_name_fits_small": screens.idle("03号窗口 不动产登记中心", None,
                                                offline=False, spontaneous=False),
    "prompt_60": screens.prompt(WINDOW, None, case_id="C1", service_name="不动产转移登记",
                                remaining_s=60),
    "prompt_5": screens.prompt(WINDOW, None, case_id="C1", service_name="不动产转移登记",
                               remaining_s=5),
    "prompt_long_service": screens.prompt(
        WINDOW, None, case_id="C2",
        service_name="国有建设用地使用权及房屋所有权转移登记（买卖）", remaining_s=42),
    "prompt_spontaneous": screens.prompt(WINDOW, None, case_id=None, service_name=None,
                                         remaining_s=30),
    "reasons_default": screens.reasons(WINDOW, None, case_id="C1", service_name=None,
                                       remaining_s=30, level=2,
                                       choices=DEFAULT_REASON_OPTIONS),
    "reasons_custom_two": screens.reasons(WINDOW, None, case_id="C1", service_name=None,
                                          remaining_s=9, level=1, choices=(
                                              Option(5, "等候太久", "X01"),
                                              Option(4, "材料反复", "X02"),
                                              Option(1, "跳过", None))),
    "reasons_custom_long": screens.reasons(WINDOW, None, case_id="C1", service_name=None,
                                           remaining_s=25, level=1, choices=(
                                               Option(5, "等候时间过长", "X01"),
                                               Option(4, "要求重复提交材料", "X02"),
                                               Option(3, "政策解释不清楚", "X03"),
                                               Option(2, "其他问题", "X04"),
                                               Option(1, "跳过", None))),
    "thanks_5": screens.thanks(WINDOW, None, level=5),
    "thanks_1": screens.thanks(WINDOW, None, level=1),
    "paused": screens.paused(WINDOW, None, reason=None),
    "paused_reason": screens.paused(WINDOW, None, reason="系统维护中"),
    "error": screens.error(WINDOW, None, message="存储故障"),
    # 扫码评价 (SPEC §10): on this panel the QR code shows on idle only.
    "idle_qr": screens.idle(WINDOW, None, offline=False, spontaneous=False, qr_url=QR_WINDOW),
    "idle_qr_staff": screens.idle(WINDOW, ZHANG, offline=False, spontaneous=True,
                                  qr_url=QR_WINDOW),
    "idle_qr_offline_long": screens.idle(WINDOW, LI, offline=True, spontaneous=False,
                                         qr_url=QR_WINDOW + "&from=evaluator&lang=zh-CN"),
}
