"""Alert channels: every alert's one-line Chinese summary, and the 企业微信 / 钉钉 group
robots' markdown messages, posted to loopback servers that check each robot's documented
shape (msgtype, markdown fields, WeCom's 4096-byte content, DingTalk's signature) and
answer like the robots do (`errcode`), including refusals that must be retried."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from broker_bridge.watch import webhook as webhook_module
from broker_bridge.watch.alerts import alert_document, alert_payload
from broker_bridge.watch.channels import WECOM_CONTENT_MAX, render, signed_url
from broker_bridge.watch.config import load_watch_config
from broker_bridge.watch.model import (
    BACKLOG,
    BAD_BURST,
    CLOCK_UNSYNCED,
    DEVICE_SILENT,
    LOW_SATISFACTION,
    POSSIBLE_GAMING,
    RATING_RATE,
    SPONTANEOUS_SHARE,
    Alert,
)
from broker_bridge.watch.webhook import Webhook
from common.configschema import ConfigError
from tests.support.mosquitto import Mosquitto
from tests.test_watch_mqtt import Devices, RunningWatcher, VirtualClock, wait_for, watch_config

SHANGHAI = ZoneInfo("Asia/Shanghai")
# 2026-11-25 02:31:07Z is 10:31 in the hall.
RAISED = datetime(2026, 11, 25, 10, 31, 7, tzinfo=SHANGHAI).timestamp()
SECRET = "SECc0ffee0123456789abcdef"

EVIDENCE: dict[tuple[str, str], dict[str, Any]] = {
    (BAD_BURST, ""): {"bad_ratings": 3, "threshold": 3, "within_min": 10.0,
                      "levels": {"1": 2, "2": 1}, "reasons": {"R02": 3}, "rating_ids": []},
    (LOW_SATISFACTION, ""): {"satisfaction_pct": "65.0", "below_pct": 80.0, "ratings": 20,
                             "good": 13, "bad": 7, "last_n": 20},
    (DEVICE_SILENT, ""): {"online": False, "offline_since": "2026-11-25T02:10:00.000Z",
                          "last_telemetry": "2026-11-25T02:09:30.000Z",
                          "silent_open_min": 21.1, "after_min": 15.0},
    (BACKLOG, ""): {"backlog": 120, "max_backlog": 50, "oldest_pending_min": 45.5,
                    "max_oldest_min": 30.0},
    (POSSIBLE_GAMING, RATING_RATE): {"condition": RATING_RATE, "ratings": 8,
                                     "max_ratings": 5, "within_s": 60.0, "rating_ids": []},
    (POSSIBLE_GAMING, SPONTANEOUS_SHARE): {"condition": SPONTANEOUS_SHARE, "spontaneous": 15,
                                           "ratings": 20, "spontaneous_pct": "75.0",
                                           "threshold_pct": 60.0},
    (CLOCK_UNSYNCED, ""): {"unsynced_since": "2026-11-24T23:55:00.000Z", "after_min": 30.0},
}


def make_alert(kind: str, condition: str = "", window_id: str | None = "W03",
               resolved_at: float | None = None, **evidence: Any) -> Alert:
    return Alert(alert_id="0b6e3f0c5a2d4e1f9a8b7c6d5e4f3a2b", kind=kind, condition=condition,
                 severity="critical" if kind == DEVICE_SILENT else "warning",
                 device_id="421100-HG01-W03", hall_id="HG01" if window_id else None,
                 window_id=window_id, region_code="421100" if window_id else None,
                 evidence=evidence or EVIDENCE[(kind, condition)],
                 first_seen=RAISED, raised_at=RAISED, resolved_at=resolved_at)


# The summary -------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "condition", "expected"), [
    (BAD_BURST, "", "【差评预警】03号窗口 不动产登记：10分钟内收到3条差评（10:31起），"
                    "请值班负责人尽快到窗口了解情况，做好解释和安抚。"),
    (LOW_SATISFACTION, "", "【满意度预警】03号窗口 不动产登记：最近20条评价满意率65.0%，"
                           "低于80%（10:31起），请调阅差评记录，督促窗口改进服务。"),
    (DEVICE_SILENT, "", "【评价器失联】03号窗口 不动产登记：评价器自10:10起离线，"
                        "营业时间内已超过15分钟，请检查设备电源和网线，仍未恢复请联系运维。"),
    (BACKLOG, "", "【评价积压】03号窗口 不动产登记：评价器有120条评价未上传，"
                  "最早一条已等待45.5分钟（10:31起），请检查设备网络，仍未恢复请联系运维。"),
    (POSSIBLE_GAMING, RATING_RATE, "【疑似刷评】03号窗口 不动产登记：60秒内收到8条评价"
                                   "（10:31起），请查看现场情况，核查是否有人反复评价。"),
    (POSSIBLE_GAMING, SPONTANEOUS_SHARE, "【疑似刷评】03号窗口 不动产登记：最近20条评价中"
                                         "有15条未关联办件（占75.0%，10:31起），"
                                         "请核查是否有人代评或刷评。"),
    (CLOCK_UNSYNCED, "", "【时钟未同步】03号窗口 不动产登记：评价器时钟自07:55起未校准，"
                         "评价时间可能不准，请检查设备网络，仍未恢复请联系运维。"),
])
def test_each_kind_has_a_summary_naming_window_what_since_and_what_to_do(
        kind: str, condition: str, expected: str) -> None:
    document = alert_document(make_alert(kind, condition), "w", RAISED + 60, SHANGHAI,
                              "03号窗口 不动产登记")
    assert document["summary"] == expected
    assert document["window_name"] == "03号窗口 不动产登记"


def test_summary_falls_back_to_window_id_then_device_and_dates_other_days() -> None:
    next_day = RAISED + 86_400
    by_id = alert_document(make_alert(BAD_BURST), "w", next_day, SHANGHAI)
    assert by_id["summary"].startswith(
        "【差评预警】窗口 W03：10分钟内收到3条差评（11月25日 10:31起）")
    assert by_id["window_name"] is None
    unknown = alert_document(make_alert(DEVICE_SILENT, window_id=None,
                                        online=None, offline_since=None,
                                        last_telemetry="2026-11-25T02:20:00.000Z",
                                        after_min=15.0),
                             "w", RAISED + 400 * 86_400, SHANGHAI)
    assert unknown["summary"].startswith(
        "【评价器失联】设备 421100-HG01-W03：评价器自2026年11月25日 10:20起无响应")
    # The hall's zone, not the machine's: the same instant in UTC is 02:31.
    utc = alert_document(make_alert(BAD_BURST), "w", RAISED, ZoneInfo("UTC"))
    assert "（02:31起）" in utc["summary"]


def test_resolved_and_removed_summaries() -> None:
    resolved = make_alert(DEVICE_SILENT, resolved_at=RAISED + 3600)
    assert alert_document(resolved, "w", RAISED + 3600, SHANGHAI)["summary"] == (
        "【已恢复】窗口 W03：评价器失联已解除（11:31），无需处理。")
    removed = make_alert(BAD_BURST, resolved_at=RAISED + 60, reason=(
        "device removed from the fleet (retained status cleared)"))
    assert alert_document(removed, "w", RAISED + 60, SHANGHAI)["summary"].startswith(
        "【已移除】窗口 W03：评价器已从设备清单中移除")


@settings(max_examples=200, deadline=None)
@example(kind=(BACKLOG, ""), name="\n", window_id=None, resolved=False, now=0.0)
@given(kind=st.sampled_from(sorted(EVIDENCE)), name=st.one_of(st.none(), st.text(max_size=40)),
       window_id=st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)),
       resolved=st.booleans(), now=st.floats(0, 4e9))
def test_any_summary_is_one_line_and_any_robot_message_fits(
        kind: tuple[str, str], name: str | None, window_id: str | None, resolved: bool,
        now: float) -> None:
    alert = make_alert(kind[0], kind[1], window_id=window_id,
                       resolved_at=now if resolved else None)
    raw = alert_payload(alert, "w", now, SHANGHAI, name)
    document = json.loads(raw)
    assert "\n" not in document["summary"] and document["summary"].startswith("【")
    wecom = json.loads(render("wecom", document, raw))
    assert set(wecom) == {"msgtype", "markdown"} and wecom["msgtype"] == "markdown"
    assert len(wecom["markdown"]["content"].encode("utf-8")) <= WECOM_CONTENT_MAX
    ding = json.loads(render("dingtalk", document, raw))
    assert set(ding["markdown"]) == {"title", "text"} and ding["markdown"]["title"]
    for text in (wecom["markdown"]["content"], ding["markdown"]["text"]):
        assert "\n> 设备：421100-HG01-W03" in text
        assert "预警" in text  # 钉钉's 自定义关键词 (docs/alerts.md)
        # Alert text never opens markup of its own (only our <font> tags).
        assert text.replace('<font color="warning">', "").replace(
            '<font color="comment">', "").replace('<font color="info">', "").replace(
            "</font>", "").count("<") == 0
    assert render("json", document, raw) == raw


def test_an_oversized_message_is_cut_to_wecoms_limit() -> None:
    alert = make_alert(BAD_BURST)
    document = alert_document(alert, "w", RAISED, SHANGHAI)
    document["summary"] = "差" * 3000   # 9000 bytes of UTF-8
    content = json.loads(render("wecom", document, b""))["markdown"]["content"]
    assert len(content.encode("utf-8")) <= WECOM_CONTENT_MAX and content.endswith("…")


# Robots on loopback ------------------------------------------------------------------


class Robot:
    """A loopback group robot: checks a message against the vendor's documented shape and
    answers `{"errcode": …, "errmsg": …}` with HTTP 200, as both robots do."""

    def __init__(self, kind: str, secret: str = "",
                 refuse_first: int = 0) -> None:
        self.kind = kind
        self.accepted: list[dict[str, Any]] = []
        self.refused: list[str] = []
        self.arrivals: list[float] = []
        self._refuse_first = refuse_first
        robot = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                robot.arrivals.append(time.monotonic())
                errcode, errmsg = robot.check(self.path, self.headers.get("Content-Type", ""),
                                              body)
                if errcode:
                    robot.refused.append(errmsg)
                answer = json.dumps({"errcode": errcode, "errmsg": errmsg}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        port = self.server.server_address[1]
        self.secret = secret
        self.url = (f"http://127.0.0.1:{port}/cgi-bin/webhook/send?key=robot-key-123"
                    if kind == "wecom" else
                    f"http://127.0.0.1:{port}/robot/send?access_token=robot-token-456")

    def check(self, path: str, content_type: str, body: bytes) -> tuple[int, str]:
        if self._refuse_first > 0:
            self._refuse_first -= 1
            return (45009 if self.kind == "wecom" else 130101), "send too fast"
        if not content_type.startswith("application/json"):
            return 40008, f"content type {content_type}"
        try:
            message = json.loads(body.decode("utf-8"))
        except ValueError:
            return 40008, "not utf-8 json"
        query = parse_qs(urlsplit(path).query)
        markdown = message.get("markdown")
        if message.get("msgtype") != "markdown" or not isinstance(markdown, dict):
            return 40008, "msgtype/markdown"
        if self.kind == "wecom":
            if query.get("key") != ["robot-key-123"]:
                return 93000, "invalid webhook url"
            content = markdown.get("content")
            if set(message) != {"msgtype", "markdown"} or set(markdown) != {"content"}:
                return 40008, "unexpected fields"
            if not isinstance(content, str) or not content:
                return 44004, "empty content"
            if len(content.encode("utf-8")) > 4096:
                return 40058, "content exceed max length"
        else:
            if query.get("access_token") != ["robot-token-456"]:
                return 300001, "token is not exist"
            if set(markdown) != {"title", "text"} or not all(
                    isinstance(markdown[k], str) and markdown[k] for k in ("title", "text")):
                return 40035, "markdown needs title and text"
            if self.secret:
                problem = self._signature_problem(query)
                if problem:
                    return 310000, problem
        self.accepted.append(message)
        return 0, "ok"

    def _signature_problem(self, query: dict[str, list[str]]) -> str | None:
        timestamp, sign = query.get("timestamp", [""])[0], query.get("sign", [""])[0]
        if not timestamp.isdigit() or abs(int(timestamp) - time.time() * 1000) > 3600_000:
            return "timestamp missing or more than an hour off"
        expected = base64.b64encode(hmac.new(
            self.secret.encode(), f"{timestamp}\n{self.secret}".encode(),
            hashlib.sha256).digest()).decode()
        return None if hmac.compare_digest(sign, expected) else "sign not match"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def robots() -> Iterator[Callable[..., Robot]]:
    started: list[Robot] = []

    def start(kind: str, **options: Any) -> Robot:
        robot = Robot(kind, **options)
        started.append(robot)
        return robot

    yield start
    for robot in started:
        robot.close()


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(webhook_module, "RETRY_DELAYS_S", (0.05, 0.05, 0.05))


def alert_bytes(kind: str = BAD_BURST) -> bytes:
    return alert_payload(make_alert(kind), "w", RAISED, SHANGHAI, "03号窗口 不动产登记")


def run_webhook(hook: Webhook, payloads: list[bytes], until: Callable[[], bool]) -> None:
    hook.start()
    for payload in payloads:
        hook.send(payload)
    wait_for(until, timeout=10, what="webhook done")
    hook.stop()


def test_wecom_robot_gets_its_markdown_message(robots: Callable[..., Robot]) -> None:
    robot = robots("wecom")
    hook = Webhook(robot.url, 2.0, fmt="wecom")
    run_webhook(hook, [alert_bytes(DEVICE_SILENT)], lambda: hook.delivered == 1)
    [message] = robot.accepted
    content = message["markdown"]["content"]
    assert content.startswith("### 【评价器失联】03号窗口 不动产登记：评价器自10:10起离线")
    assert '<font color="warning">【评价器失联】' in content
    assert "> 设备：421100-HG01-W03" in content and robot.refused == []


def test_dingtalk_signed_message_is_verified_by_the_robot(
        tmp_path: Path, robots: Callable[..., Robot]) -> None:
    robot = robots("dingtalk", secret=SECRET)
    secret_file = tmp_path / "dingtalk.secret"
    secret_file.write_text(SECRET + "\n")
    hook = Webhook(robot.url, 2.0, fmt="dingtalk", secret_file=str(secret_file))
    hook.start()
    for number, payload in enumerate([alert_bytes(), alert_bytes(BACKLOG)], 1):
        hook.send(payload)   # one at a time: each gets a message of its own
        wait_for(functools.partial(lambda n: hook.delivered == n, number),
                 what=f"alert {number}")
    hook.stop()
    assert [m["markdown"]["title"] for m in robot.accepted] == [
        "【差评预警】03号窗口 不动产登记：10分钟内收到3条差评",
        "【评价积压】03号窗口 不动产登记：评价器有120条评价未上传"]
    assert robot.accepted[0]["markdown"]["text"].splitlines()[1].startswith("【差评预警】")


def test_signature_matches_dingtalks_documented_example() -> None:
    # Independent of our code: the documented recipe, computed here by hand.
    url = signed_url("https://oapi.dingtalk.com/robot/send?access_token=abc", "this is secret",
                     1_700_000_000_000)
    query = parse_qs(urlsplit(url).query)
    digest = hmac.new(b"this is secret", b"1700000000000\nthis is secret",
                      hashlib.sha256).digest()
    assert query == {"access_token": ["abc"], "timestamp": ["1700000000000"],
                     "sign": [base64.b64encode(digest).decode()]}


def test_robot_refusals_are_retried_then_dropped_with_the_errcode_logged(
        tmp_path: Path, robots: Callable[..., Robot], fast_retries: None,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="hcp.watch.webhook")
    busy = robots("wecom", refuse_first=2)
    hook = Webhook(busy.url, 2.0, fmt="wecom")
    run_webhook(hook, [alert_bytes()], lambda: hook.delivered == 1)
    assert len(busy.refused) == 2 and len(busy.accepted) == 1 and hook.dropped == 0

    wrong = robots("dingtalk", secret=SECRET)
    secret_file = tmp_path / "wrong.secret"
    secret_file.write_text("SECnot-the-robots-secret")
    hook = Webhook(wrong.url, 2.0, fmt="dingtalk", secret_file=str(secret_file))
    run_webhook(hook, [alert_bytes()], lambda: hook.dropped == 1)
    assert wrong.accepted == [] and wrong.refused == ["sign not match"] * 4
    log = caplog.text
    assert "errcode 310000 sign not match" in log and "giving up" in log
    assert "robot-token-456" not in log and "robot-key-123" not in log  # keys stay out


def test_posts_to_a_robot_are_paced(robots: Callable[..., Robot],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(webhook_module, "ROBOT_POSTS_PER_MINUTE", 3)
    monkeypatch.setattr(webhook_module, "PACE_WINDOW_S", 0.5)
    monkeypatch.setattr(webhook_module, "ROBOT_BATCH_MAX", 1)
    robot = robots("wecom")
    hook = Webhook(robot.url, 2.0, fmt="wecom")
    run_webhook(hook, [alert_bytes()] * 5, lambda: hook.delivered == 5)
    first, fourth = robot.arrivals[0], robot.arrivals[3]
    # The 4th waited for the window to pass the 1st (as the webhook timed it, a moment
    # before the robot saw it: hence the margin). Unpaced, all five take milliseconds.
    assert fourth - first >= 0.4


# Config and the whole watcher ----------------------------------------------------------


def test_config_refuses_what_does_not_fit_the_format(tmp_path: Path,
                                                     mosquitto: Mosquitto) -> None:
    token = tmp_path / "token"
    token.write_text("t")
    config = watch_config(tmp_path, mosquitto, watch={
        "webhook_url": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k",
        "webhook_format": "wechat", "webhook_token_file": str(token),
        "webhook_secret_file": str(tmp_path / "missing"),
        "window_names": {"421100-HG01-W03": "03号<b>窗口", "bad id!": "x"}})
    with pytest.raises(ConfigError) as refused:
        load_watch_config(config)
    text = "\n".join(refused.value.problems)
    assert "[watch] webhook_format: must be one of" in text
    assert "[watch] window_names:" in text
    config = watch_config(tmp_path, mosquitto, watch={
        "webhook_url": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k",
        "webhook_format": "wecom", "webhook_token_file": str(token),
        "webhook_secret_file": str(token)})
    with pytest.raises(ConfigError) as refused:
        load_watch_config(config)
    problems = refused.value.problems
    assert any("webhook_token_file: only for webhook_format = \"json\"" in p for p in problems)
    assert any("webhook_secret_file: only for webhook_format = \"dingtalk\"" in p
               for p in problems)


@pytest.fixture
def devices(mosquitto: Mosquitto) -> Iterator[Devices]:
    d = Devices(mosquitto)
    yield d
    d.close()


def test_watcher_posts_signed_dingtalk_alerts_with_window_names(
        tmp_path: Path, mosquitto: Mosquitto, devices: Devices,
        robots: Callable[..., Robot]) -> None:
    robot = robots("dingtalk", secret=SECRET)
    secret_file = tmp_path / "dingtalk.secret"
    secret_file.write_text(SECRET)
    config = watch_config(tmp_path, mosquitto, watch={
        "webhook_url": robot.url, "webhook_format": "dingtalk",
        "webhook_secret_file": str(secret_file),
        "window_names": {"421100-HG01-W03": "03号窗口 不动产登记"}})
    # Real time for the robot's one-hour timestamp check; a burst needs no hours.
    watcher = RunningWatcher(config, VirtualClock(time.time()))
    try:
        now = time.time()
        for _ in range(3):
            devices.rating("421100-HG01-W03", 1, now)
        wait_for(lambda: devices.of("bad_rating_burst"), what="the alert on MQTT")
        on_mqtt = devices.of("bad_rating_burst")[0]
        assert on_mqtt["summary"].startswith("【差评预警】03号窗口 不动产登记：10分钟内收到3条差评")
        assert on_mqtt["window_name"] == "03号窗口 不动产登记"
        wait_for(lambda: robot.accepted, timeout=10, what="the robot's message")
        assert robot.accepted[0]["markdown"]["text"].splitlines()[1] == on_mqtt["summary"]
        assert robot.refused == []
    finally:
        watcher.stop()


def test_json_format_posts_the_alert_message_itself(tmp_path: Path) -> None:
    seen: list[tuple[str, str, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.append((self.headers["Content-Type"], self.headers["Authorization"], body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    try:
        hook = Webhook(f"http://127.0.0.1:{server.server_address[1]}/hook", 2.0,
                       token_file=str(token))
        run_webhook(hook, [alert_bytes()], lambda: hook.delivered == 1)
    finally:
        server.shutdown()
        server.server_close()
    assert seen == [("application/json", "Bearer s3cret", alert_bytes())]
    assert json.loads(seen[0][2])["summary"].startswith("【差评预警】03号窗口 不动产登记：")


@pytest.mark.parametrize("kind", ["wecom", "dingtalk"])
def test_alerts_that_wait_for_the_robot_go_out_together(
        kind: str, robots: Callable[..., Robot], monkeypatch: pytest.MonkeyPatch) -> None:
    """A storm (50 windows falling silent at once) is a few messages, each within the
    byte limit, every alert in exactly one of them: not 50 posts, 30 of them refused."""
    monkeypatch.setattr(webhook_module, "ROBOT_POSTS_PER_MINUTE", 1)
    monkeypatch.setattr(webhook_module, "PACE_WINDOW_S", 0.3)
    robot = robots(kind)
    hook = Webhook(robot.url, 2.0, fmt=kind)
    storm = [alert_payload(make_alert(DEVICE_SILENT), "w", RAISED, SHANGHAI,
                           f"{i:02d}号窗口 不动产登记与税务综合受理专窗") for i in range(50)]
    run_webhook(hook, [alert_bytes(), *storm], lambda: hook.delivered == 51)
    assert hook.dropped == 0 and robot.refused == []
    texts = [m["markdown"]["content" if kind == "wecom" else "text"] for m in robot.accepted]
    assert 2 < len(texts) < 20
    assert all(len(t.encode("utf-8")) <= WECOM_CONTENT_MAX for t in texts)
    for i in range(50):
        name = f"{i:02d}号窗口 不动产登记与税务综合受理专窗："
        assert sum(t.count(name) for t in texts) == 1, name
    batch = texts[-1]
    assert batch.startswith("### ") and "条评价器预警" in batch.splitlines()[0]
    if kind == "dingtalk":
        assert robot.accepted[-1]["markdown"]["title"].endswith("评价器失联")
