"""The one line of Chinese that tells a hall manager what an alert means: which window,
what happened, since when (the hall's local time) and what to do. It goes into every
alert message (`summary`) and heads the 企业微信 / 钉钉 robot messages."""

from __future__ import annotations

import re
from datetime import datetime, tzinfo
from typing import Any

from broker_bridge.watch.model import (
    BACKLOG,
    BAD_BURST,
    CLOCK_UNSYNCED,
    DEVICE_SILENT,
    LOW_SATISFACTION,
    POSSIBLE_GAMING,
    SPONTANEOUS_SHARE,
    Alert,
)

# What each kind is called in a title and in "… 已解除".
KIND_LABELS = {
    BAD_BURST: "差评集中",
    LOW_SATISFACTION: "满意度偏低",
    DEVICE_SILENT: "评价器失联",
    BACKLOG: "评价积压",
    POSSIBLE_GAMING: "疑似刷评",
    CLOCK_UNSYNCED: "时钟未同步",
}
SEVERITY_LABELS = {"info": "提示", "warning": "预警", "critical": "紧急"}
ASK_SUPPORT = "仍未恢复请联系运维"
# A summary is one line whatever a name holds (the config refuses these; this is the
# guarantee for every other caller).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def window_label(alert: Alert, window_name: str | None) -> str:
    """The window as the hall knows it: its configured name, else its window id, else
    (a device that has not rated since the watcher's state began) the device id."""
    name = " ".join(_CONTROL.sub(" ", window_name or "").split())
    if name:
        return name
    if alert.window_id:
        return f"窗口 {alert.window_id}"
    return f"设备 {alert.device_id}"


def local_time(t: float, tz: tzinfo, now: float) -> str:
    """`t` in the hall's time, as short as is unambiguous next to `now`: 10:31 today,
    11月25日 10:31 this year, 2025年11月25日 10:31 before."""
    at, today = datetime.fromtimestamp(t, tz), datetime.fromtimestamp(now, tz)
    if at.date() == today.date():
        return f"{at:%H:%M}"
    if at.year == today.year:
        return f"{at.month}月{at.day}日 {at:%H:%M}"
    return f"{at.year}年{at.month}月{at.day}日 {at:%H:%M}"


def summary(alert: Alert, tz: tzinfo, now: float, window_name: str | None = None) -> str:
    """One line: 【what】which window, what, since when, what to do."""
    where = window_label(alert, window_name)
    if alert.resolved:
        assert alert.resolved_at is not None
        at = local_time(alert.resolved_at, tz, now)
        if "removed" in str(alert.evidence.get("reason", "")):
            return (f"【已移除】{where}：评价器已从设备清单中移除，"
                    f"相关预警随之解除（{at}），无需处理。")
        label = KIND_LABELS.get(alert.kind, alert.kind)
        return f"【已恢复】{where}：{label}已解除（{at}），无需处理。"
    e = alert.evidence
    since = local_time(_since(alert), tz, now)
    if alert.kind == BAD_BURST:
        return (f"【差评预警】{where}：{_num(e['within_min'])}分钟内收到"
                f"{e['bad_ratings']}条差评（{since}起），请值班负责人尽快到窗口了解情况，"
                "做好解释和安抚。")
    if alert.kind == LOW_SATISFACTION:
        return (f"【满意度预警】{where}：最近{e['ratings']}条评价满意率"
                f"{e['satisfaction_pct']}%，低于{_num(e['below_pct'])}%（{since}起），"
                "请调阅差评记录，督促窗口改进服务。")
    if alert.kind == DEVICE_SILENT:
        state = "离线" if e.get("online") is False else "无响应"
        return (f"【评价器失联】{where}：评价器自{since}起{state}，"
                f"营业时间内已超过{_num(e['after_min'])}分钟，"
                f"请检查设备电源和网线，{ASK_SUPPORT}。")
    if alert.kind == BACKLOG:
        parts = []
        if e.get("backlog") is not None:
            parts.append(f"有{e['backlog']}条评价未上传")
        if e.get("oldest_pending_min") is not None:
            parts.append(f"最早一条已等待{_num(e['oldest_pending_min'])}分钟")
        what = "，".join(parts) or "评价上传受阻"
        return (f"【评价积压】{where}：评价器{what}（{since}起），"
                f"请检查设备网络，{ASK_SUPPORT}。")
    if alert.kind == POSSIBLE_GAMING:
        if alert.condition == SPONTANEOUS_SHARE:
            return (f"【疑似刷评】{where}：最近{e['ratings']}条评价中有{e['spontaneous']}条"
                    f"未关联办件（占{e['spontaneous_pct']}%，{since}起），"
                    "请核查是否有人代评或刷评。")
        return (f"【疑似刷评】{where}：{_num(e['within_s'])}秒内收到{e['ratings']}条评价"
                f"（{since}起），请查看现场情况，核查是否有人反复评价。")
    if alert.kind == CLOCK_UNSYNCED:
        return (f"【时钟未同步】{where}：评价器时钟自{since}起未校准，评价时间可能不准，"
                f"请检查设备网络，{ASK_SUPPORT}。")
    return f"【{SEVERITY_LABELS.get(alert.severity, '预警')}】{where}：{alert.kind}（{since}起）。"


def title(alert: Alert, window_name: str | None = None) -> str:
    """A short title (钉钉's `title`, the chat list's preview): state, kind, window."""
    where = window_label(alert, window_name)
    if alert.resolved:
        return f"已恢复：{where} {KIND_LABELS.get(alert.kind, alert.kind)}"
    return (f"{SEVERITY_LABELS.get(alert.severity, '预警')}："
            f"{where} {KIND_LABELS.get(alert.kind, alert.kind)}")


def _since(alert: Alert) -> float:
    """When the trouble began, as far as the watcher knows: for silence, the device's
    last sign of life; for the clock, when it was first reported unsynced; otherwise
    when the watcher first saw the condition hold."""
    e = alert.evidence
    candidates: list[Any] = []
    if alert.kind == DEVICE_SILENT:
        candidates = [e.get("offline_since") if e.get("online") is False else None,
                      e.get("last_telemetry")]
    elif alert.kind == CLOCK_UNSYNCED:
        candidates = [e.get("unsynced_since")]
    for value in candidates:
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value).timestamp()
            except ValueError:
                continue
    return alert.first_seen or alert.raised_at


def _num(value: Any) -> str:
    """10.0 as 10, 0.5 as 0.5: minutes and percentages as a person writes them."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
