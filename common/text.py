"""Text from outside (window systems, the retained config, config files) made safe to show
and to log: one rule for the whole product, documented in docs/behaviour.md.

- Line and paragraph separators, tabs and every other control or format character
  (Unicode categories Cc, Cf, Zl, Zp, Cs, Co, Cn) become one space: a screen row has no
  line breaks, and a bidi override or a zero-width joiner must not reorder or hide what
  a citizen reads.
- Runs of white space fold to one space; the ends are trimmed.
- Nothing else changes: Chinese, punctuation and emoji stay as sent.
"""

from __future__ import annotations

import re
import unicodedata

_UNSHOWABLE = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})
_SPACES = re.compile(r"\s+")


def display_text(value: str) -> str:
    """`value` as one row of screen text (see the module docstring)."""
    if value.isprintable() and "  " not in value and value == value.strip():
        return value  # the common case, without a per-character pass
    cleaned = "".join(" " if unicodedata.category(ch) in _UNSHOWABLE else ch for ch in value)
    return _SPACES.sub(" ", cleaned).strip()


def is_utf8(value: str) -> bool:
    """False for a str that UTF-8 cannot hold: a lone surrogate ("\\ud800" is valid JSON,
    and what surrogateescape makes of undecodable bytes)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def has_unshowable(value: str) -> bool:
    """True when `value` holds a character display_text would replace (not an ordinary
    space): for fields that must be refused rather than changed, such as keys to another
    system or a name in a config file."""
    return not value.isprintable() and any(
        unicodedata.category(ch) in _UNSHOWABLE for ch in value)


def log_text(value: object, limit: int = 80) -> str:
    """`value` for a log line: quoted, escaped and cut, so a newline in a case id can
    never forge a line of the journal."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
