"""Retry timing for the platform (SPEC §9): exponential backoff with full jitter, and
the HTTP Retry-After header."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime

FIRST_RETRY_S = 0.2
CAP_S = 60.0
# A Retry-After longer than this is treated as this: honoured as asked up to an hour (a
# platform in maintenance may well ask for ten minutes), but a typo on the platform side
# ("Retry-After: 86400") must not park every rating for a day.
RETRY_AFTER_CAP_S = 3600.0


def full_jitter(attempt: int, first: float = FIRST_RETRY_S, cap: float = CAP_S,
                rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait before retry number `attempt` (0-based): uniform in
    [0, min(cap, first * 2**attempt)] — spread out so that many bridges (or many
    batches) do not hit a recovering platform in lock-step."""
    ceiling = cap if attempt >= 32 else min(cap, first * (2 ** attempt))
    return rand() * ceiling


def parse_retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), capped; None
    when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    # isascii() too: "²".isdigit() is true, and float("²") raises.
    if value.isascii() and value.isdigit():
        return min(float(value), RETRY_AFTER_CAP_S)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, min(when.timestamp() - now(), RETRY_AFTER_CAP_S))
