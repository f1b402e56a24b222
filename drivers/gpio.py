"""gpiozero's pin factory, opened quietly: when it falls back from one factory to the
next it warns once per factory (eight lines before our own error on a machine without
GPIO). We collect those reasons and name them in our one line instead."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from gpiozero.exc import PinFactoryFallback


@contextmanager
def factory_fallbacks() -> Iterator[list[str]]:
    """Within the block, gpiozero's factory fallbacks are kept in the yielded list
    ("lgpio: No module named 'lgpio'", …) rather than printed."""
    tried: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PinFactoryFallback)
        try:
            yield tried
        finally:
            for warning in caught:
                if issubclass(warning.category, PinFactoryFallback):
                    tried.append(str(warning.message).removeprefix("Falling back from "))
                else:  # not ours to swallow
                    warnings.warn_explicit(warning.message, warning.category,
                                           warning.filename, warning.lineno)


def tried_text(tried: list[str]) -> str:
    return f" (pin factories tried: {'; '.join(tried)})" if tried else ""
