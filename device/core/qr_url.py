"""The URL a screen shows as a QR code (SPEC §10, 扫码评价): the `[ui] qr_url` template
filled in for the device and the case, or the case's own `eval_url`.

Pure functions over text: the config file, the retained config topic and the serial
codec check with the same rules, and the core fills in with `fill`. Neither URL is ever
stored in a rating.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from urllib.parse import quote

from common.urls import MAX_URL, url_problem

__all__ = ["MAX_URL", "PLACEHOLDERS", "fill", "needs_case", "template_problem", "url_problem"]

# What a template may name, and which of them only a case can give.
DEVICE_PLACEHOLDERS = ("device_id", "region_code", "hall_id", "window_id")
CASE_PLACEHOLDERS = ("case_id", "service_code")
PLACEHOLDERS = (*CASE_PLACEHOLDERS, *DEVICE_PLACEHOLDERS)


def _fields(template: str) -> list[str]:
    """The placeholder names of `template`; ValueError for a template str.format
    cannot read (a lone brace)."""
    names = []
    for _, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if spec or conversion:
            raise ValueError(f"placeholder {{{name}}} takes no format (write {{{name}}})")
        names.append(name)
    return names


def template_problem(template: str) -> str | None:
    """Why `template` is not a usable `qr_url`, or None ("" means no QR code)."""
    if template == "":
        return None
    try:
        names = _fields(template)
    except ValueError as e:
        text = str(e)
        if "placeholder" in text:
            return text
        return "has a lone { or }: write {{ or }} for a brace itself"
    unknown = [n for n in names if n not in PLACEHOLDERS]
    if unknown:
        shown = unknown[0] if len(unknown[0]) <= 40 else unknown[0][:40] + "…"
        return (f"unknown placeholder {{{shown}}}: use "
                + ", ".join(f"{{{p}}}" for p in PLACEHOLDERS))
    return url_problem(template.format_map({n: "x" for n in names}))


def needs_case(template: str) -> bool:
    """True when `template` names something only a case can give ({case_id}, …)."""
    try:
        return any(n in CASE_PLACEHOLDERS for n in _fields(template))
    except ValueError:
        return False


def fill(template: str, device: Mapping[str, str],
         case: Mapping[str, object] | None) -> str | None:
    """The URL to show: `template` with every placeholder URL-encoded from `device`
    (device_id, region_code, hall_id, window_id) and `case` (its fields); None without a
    template, or when it names a case and there is none. A case's `eval_url` wins."""
    if case is not None:
        own = case.get("eval_url")
        if isinstance(own, str) and own:
            return own
    if not template or (case is None and needs_case(template)):
        return None
    values: dict[str, str] = {}
    for name in _fields(template):
        source: Mapping[str, object] = device if name in DEVICE_PLACEHOLDERS else (case or {})
        value = source.get(name)
        values[name] = quote(value if isinstance(value, str) else "", safe="")
    return template.format_map(values)
