"""What the webhook POSTs, per `[watch] webhook_format`: the alert message itself
(`json`), or the markdown message of a 企业微信 (WeCom) or 钉钉 (DingTalk) group robot,
and how each robot says it refused one (`errcode` ≠ 0 in a 200 answer).

Shapes as documented by the vendors (docs/alerts.md cites what was relied on):
WeCom `{"msgtype": "markdown", "markdown": {"content": …}}`, content at most 4096 bytes
of UTF-8; DingTalk `{"msgtype": "markdown", "markdown": {"title": …, "text": …}}`,
optionally signed with `timestamp` (ms) and `sign` = base64(HMAC-SHA256(secret,
f"{timestamp}\\n{secret}")) in the query string.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from broker_bridge.watch.summary import KIND_LABELS

JSON, WECOM, DINGTALK = "json", "wecom", "dingtalk"
FORMATS = (JSON, WECOM, DINGTALK)
ROBOTS = (WECOM, DINGTALK)

WECOM_CONTENT_MAX = 4096  # bytes of UTF-8 (WeCom: 最长不超过4096个字节)
# DingTalk documents no byte limit for markdown text; we keep to WeCom's so that one
# rendering fits both and a hall moving between them sees the same message.
DINGTALK_TEXT_MAX = 4096
TITLE_MAX = 64  # characters; DingTalk shows the title in the chat list

# WeCom's markdown has three colours by name; DingTalk's ignores <font>.
_WECOM_COLOUR = {"critical": "warning", "warning": "warning", "info": "comment"}
# Markup characters in alert text become their full-width forms: neither robot documents
# a backslash escape, and the text stays readable. `_` stays (ids and kinds carry it;
# inside a word it is no emphasis).
_MARKUP = str.maketrans({"<": "＜", ">": "＞", "*": "＊", "[": "［", "]": "］", "`": "｀"})
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def render(fmt: str, document: dict[str, Any], raw: bytes) -> bytes:
    """The body to POST for one alert message (`raw` is its JSON, sent as is for json)."""
    if fmt == WECOM:
        content = _fit(_markdown(document, colour=True), WECOM_CONTENT_MAX)
        return _dumps({"msgtype": "markdown", "markdown": {"content": content}})
    if fmt == DINGTALK:
        text = _fit(_markdown(document, colour=False), DINGTALK_TEXT_MAX)
        return _dumps({"msgtype": "markdown",
                       "markdown": {"title": _title(document), "text": text}})
    return raw


def render_many(fmt: str, documents: Sequence[dict[str, Any]]) -> tuple[bytes, int]:
    """One robot message for alerts that waited together (a storm, or the robot's
    limit of 20 a minute): the first ones that fit the byte limit, one summary line
    each. Returns the body and how many it holds (at least one; a single alert gets the
    full message of `render`)."""
    if len(documents) == 1:
        return render(fmt, documents[0], b""), 1
    limit = WECOM_CONTENT_MAX if fmt == WECOM else DINGTALK_TEXT_MAX
    lines: list[str] = []
    for document in documents:
        line = f"- {_coloured(document, fmt == WECOM)}"
        text = _batch_text(lines + [line], len(documents))
        if lines and len(text.encode("utf-8")) > limit:
            break
        lines.append(line)
    text = _fit(_batch_text(lines, len(documents)), limit)
    if fmt == WECOM:
        return _dumps({"msgtype": "markdown", "markdown": {"content": text}}), len(lines)
    labels = list(dict.fromkeys(
        "已恢复" if d.get("resolved") else KIND_LABELS.get(str(d.get("kind")), "预警")
        for d in documents[:len(lines)]))
    title = (f"{len(lines)}条评价器预警：{'、'.join(labels[:3])}"
             f"{'等' if len(labels) > 3 else ''}")
    return _dumps({"msgtype": "markdown", "markdown": {"title": title, "text": text}}), \
        len(lines)


def _batch_text(lines: list[str], waiting: int) -> str:
    head = f"### {len(lines)}条评价器预警"
    more = (f"\n\n> 另有{waiting - len(lines)}条随后发送"
            if waiting > len(lines) else "")
    # Like every robot message, it says 预警: 钉钉's 自定义关键词 (docs/alerts.md).
    return "\n".join([head, *lines]) + more


def signed_url(url: str, secret: str, timestamp_ms: int) -> str:
    """DingTalk's 加签: `timestamp` and `sign` added to the webhook URL's query."""
    to_sign = f"{timestamp_ms}\n{secret}".encode()
    sign = base64.b64encode(hmac.new(secret.encode(), to_sign, hashlib.sha256).digest())
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
             if k not in ("timestamp", "sign")]
    query += [("timestamp", str(timestamp_ms)), ("sign", sign.decode("ascii"))]
    return urlunsplit(parts._replace(query=urlencode(query)))


def robot_refusal(fmt: str, status: int, body: bytes) -> str | None:
    """Why a robot refused a message it answered with HTTP 200, or None when it took it.
    Both robots answer `{"errcode": 0, "errmsg": "ok"}`; anything else is a failure
    (a wrong key, a bad signature, too many messages a minute, a proxy's error page)."""
    if fmt not in ROBOTS:
        return None
    try:
        answer = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return f"HTTP {status} without the robot's JSON answer"
    if not isinstance(answer, dict) or "errcode" not in answer:
        return f"HTTP {status} without an errcode"
    if answer["errcode"] == 0:
        return None
    errmsg = _CONTROL.sub(" ", str(answer.get("errmsg", "")))[:120]
    return f"the robot refused it: errcode {answer['errcode']!r} {errmsg}".rstrip()


# Rendering -----------------------------------------------------------------------------


def _markdown(document: dict[str, Any], colour: bool) -> str:
    severity = str(document.get("severity", ""))
    lines = [f"### {_plain(_title(document))}", _coloured(document, colour), ""]
    facts = [("设备", document.get("device_id")), ("大厅", document.get("hall_id")),
             ("窗口", document.get("window_id")), ("区划", document.get("region_code")),
             ("级别", severity), ("预警类型", document.get("kind")),
             ("预警编号", document.get("alert_id"))]
    lines += [f"> {name}：{_plain(value)}" for name, value in facts if value]
    return "\n".join(lines)


def _coloured(document: dict[str, Any], colour: bool) -> str:
    """The summary, in 企业微信 orange while raised and green once resolved."""
    text = _plain(document.get("summary") or document.get("kind", ""))
    if not colour:
        return text
    if document.get("resolved"):
        return f'<font color="info">{text}</font>'
    severity = str(document.get("severity", ""))
    return f'<font color="{_WECOM_COLOUR.get(severity, "warning")}">{text}</font>'


def _title(document: dict[str, Any]) -> str:
    summary = str(document.get("summary") or document.get("kind", ""))
    # The summary's 【…】 and the window, up to the first full stop or comma.
    head = re.split(r"[，。（]", summary, maxsplit=1)[0]
    return _plain(head)[:TITLE_MAX] or "评价器预警"


def _plain(value: Any) -> str:
    """Text from the alert safe inside markdown: one line, no markup characters."""
    return _CONTROL.sub(" ", str(value)).translate(_MARKUP)


def _fit(text: str, max_bytes: int) -> str:
    """Cut at a line (else a character) so the UTF-8 is at most `max_bytes`."""
    if len(text.encode("utf-8")) <= max_bytes:
        return text
    marker = "\n…"
    budget = max_bytes - len(marker.encode("utf-8"))
    cut = text.encode("utf-8")[:budget].decode("utf-8", errors="ignore")
    if "\n" in cut:
        cut = cut[:cut.rindex("\n")]
    return cut + marker


def _dumps(message: dict[str, Any]) -> bytes:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
