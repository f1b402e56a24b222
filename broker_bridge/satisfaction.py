"""The satisfaction rate, defined once: the watcher's low-satisfaction rule and
`hcp-bridge report` both use these functions, so an alert and a report never disagree.

Satisfaction rate = ratings of level 3, 4 or 5 (好评) / all ratings, as a percentage
rounded half-up to one decimal. Expired prompts are not ratings: they are in neither
count. With no ratings there is no rate (shown as "—").
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

GOOD_LEVELS = frozenset({3, 4, 5})
NO_RATE = "—"
_ONE_DECIMAL = Decimal("0.1")


def percent(part: int, whole: int) -> Decimal | None:
    """`part` of `whole` in percent, rounded half-up to one decimal; None when whole is 0.

    Decimal arithmetic, so 1 of 8 is exactly 12.5 and 1 of 16 rounds to 6.3 (binary
    floats would make such halves depend on representation error).
    """
    if whole <= 0:
        return None
    return (Decimal(part) * 100 / Decimal(whole)).quantize(_ONE_DECIMAL, ROUND_HALF_UP)


def satisfaction_rate(good: int, total: int) -> Decimal | None:
    """The satisfaction rate: `good` ratings (levels 3–5) of `total` ratings."""
    return percent(good, total)


def rate_of_levels(levels: list[int]) -> Decimal | None:
    """The satisfaction rate of a list of rating levels."""
    return satisfaction_rate(sum(1 for level in levels if level in GOOD_LEVELS), len(levels))


def format_rate(rate: Decimal | None) -> str:
    """"93.3" (no percent sign, for tables and CSV), or "—" when there is no rate."""
    return NO_RATE if rate is None else f"{rate:.1f}"
