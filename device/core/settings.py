"""The settings the core works with: from the config file, replaced in part by the
retained `config` topic (device/remote_config.py)."""

from __future__ import annotations

from dataclasses import dataclass

# The national offline indicators for a bad rating (SPEC §5).
DEFAULT_REASONS: tuple[tuple[str, str], ...] = (
    ("R01", "服务态度"),
    ("R02", "服务效率"),
    ("R03", "服务水平"),
    ("R04", "其他"),
)


@dataclass(frozen=True)
class UiSettings:
    """The part of the config the core uses; the retained `config` topic may replace it."""

    window_name: str
    prompt_timeout_s: float = 60.0
    reasons_timeout_s: float = 30.0
    thanks_s: float = 3.0
    lockout_s: float = 1.0
    allow_spontaneous: bool = True
    spontaneous_min_interval_s: float = 60.0
    reasons: tuple[tuple[str, str], ...] = DEFAULT_REASONS
    # Voice (SPEC §10, the [voice] section): read the levels aloud after the prompt clip
    # (适老化), and how loud every clip plays, 0..100.
    read_levels: bool = False
    volume: int = 80
    # 扫码评价 (SPEC §10): a URL template (device/core/qr_url.py); "" shows no QR code.
    qr_url: str = ""
