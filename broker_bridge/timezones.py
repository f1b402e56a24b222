"""Time zones by name with one deliberate fallback: "Asia/Shanghai" (the default) is a
fixed UTC+08:00 when the machine has no tz database (no tzdata package). China has had
no daylight saving time since 1991, so the two agree for any date we handle."""

from __future__ import annotations

import logging
import zoneinfo
from datetime import timedelta, timezone, tzinfo

DEFAULT_TIMEZONE = "Asia/Shanghai"
BEIJING = timezone(timedelta(hours=8), "UTC+08:00")
_FIXED_FALLBACK = {"Asia/Shanghai", "Asia/Chongqing", "Asia/Harbin", "PRC"}

log = logging.getLogger("hcp.tz")


class UnknownTimezone(ValueError):
    """A time zone name that cannot be loaded here."""


def load_timezone(name: str) -> tzinfo:
    """The zone called `name`; raise UnknownTimezone."""
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        if name in _FIXED_FALLBACK:
            log.warning("no tz database entry for %s (is tzdata installed?); using a fixed "
                        "UTC+08:00, which is the same for China", name)
            return BEIJING
        raise UnknownTimezone(f"unknown time zone {name!r} (an IANA name such as "
                              f"{DEFAULT_TIMEZONE!r})") from None


def timezone_problem(name: str) -> str | None:
    """For config checks: None when `name` loads, else what is wrong."""
    try:
        load_timezone(name)
    except UnknownTimezone as e:
        return str(e)
    return None
