"""The rule for a rating link a screen shows as a QR code (SPEC §10): one check for a
`case_completed` frame's `eval_url` (common/serial_codec.py) and for the `[ui] qr_url`
template once filled in (device/core/qr_url.py)."""

from __future__ import annotations

from urllib.parse import urlsplit

from common.text import has_unshowable

# A QR code a phone still reads off a screen at arm's length; provinces' H5 links are
# far shorter. The same bound for a template and for a frame's eval_url.
MAX_URL = 512


def url_problem(url: str) -> str | None:
    """Why `url` cannot be shown as a rating link (in words that never repeat it), or
    None."""
    if len(url) > MAX_URL:
        return f"must be at most {MAX_URL} characters"
    if has_unshowable(url) or any(ch.isspace() for ch in url):
        return "must not contain spaces, line breaks or control characters"
    try:
        parts = urlsplit(url)
    except ValueError:
        return "is not a URL"
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return "must be an http:// or https:// URL"
    return None
