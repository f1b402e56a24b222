"""Follow-ups of bad ratings (差评整改, "3、5、15", SPEC §11): deadlines in PRC working
days (the §11 example), a year without calendar data is an error that says so, the
states and who moved them, the CLI and the HTTP API, and the due/overdue alerts, each
raised once."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from city_platform.alerts import FollowupAlerts
from city_platform.followups import FollowupError, Policy, deadlines
from city_platform.server import PlatformServer
from city_platform.store import Store
from city_platform.workdays import CalendarGap, WorkCalendar
from tests.support import postgres as pg
from tests.support.bridge import REPO
from tests.support.ratings import make_rating

FRIDAY_10_SHANGHAI = "2025-09-26T02:00:00.000Z"  # Fri 2025-09-26 10:00 in Asia/Shanghai
# fixtures
postgres_server, postgres_url, store_url, store = (
    pg.postgres_server, pg.postgres_url, pg.store_url, pg.store)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "city_platform", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)


def test_the_spec_example_through_the_cli_as_json(store: Store, store_url: str) -> None:
    bad = make_rating(level=2, rated_at=FRIDAY_10_SHANGHAI)
    spontaneous = make_rating(level=1, rated_at=FRIDAY_10_SHANGHAI, trigger="spontaneous",
                              case=None, reason=None)
    store.submit([bad, spontaneous, make_rating(level=3, rated_at=FRIDAY_10_SHANGHAI)])
    result = cli("followups", "--store", store_url, "list", "--json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 2  # levels 1 and 2 only
    by_id = {line["rating_id"]: line for line in lines}
    first = by_id[bad["rating_id"]]
    assert {k: first[k] for k in ("device_id", "case_id", "level", "state", "rated_at",
                                  "contact_due", "rectify_due", "complex_due")} == {
        "device_id": bad["device_id"], "case_id": bad["case"]["case_id"], "level": 2,
        "state": "open", "rated_at": FRIDAY_10_SHANGHAI, "contact_due": "2025-09-30",
        "rectify_due": "2025-10-10", "complex_due": "2025-10-23"}
    other = by_id[spontaneous["rating_id"]]
    assert other["case_id"] is None and other["spontaneous"] is True
    # No personal data: neither the clerk's name nor anything else of the record.
    assert "王晓红" not in result.stdout


def test_a_year_without_calendar_data_is_an_error_that_says_so(store: Store) -> None:
    calendar = WorkCalendar()
    with pytest.raises(CalendarGap, match="no PRC holiday data for 2027"):
        calendar.add_workdays(date(2026, 12, 30), 3)
    late = make_rating(level=1, rated_at="2027-03-01T02:00:00Z")
    assert store.submit([late])[0]["status"] == "accepted"   # the rating is kept
    (followup,) = store.followups()
    assert followup.contact_due is None and followup.rectify_due is None
    assert followup.deadline_error is not None and "2027" in followup.deadline_error
    # The config adds 2027 (the State Council's notice): the deadlines follow.
    store.calendar = WorkCalendar([2027], holidays=[date(2027, 1, 1)],
                                  workdays=[date(2027, 2, 20)])
    assert store.refresh_deadlines() == 1
    (followup,) = store.followups()
    assert (followup.contact_due, followup.deadline_error) == (date(2027, 3, 4), None)


def test_a_config_year_counts_its_holidays_and_adjusted_working_days() -> None:
    calendar = WorkCalendar([2027], holidays=[date(2027, 10, 1), date(2027, 10, 4)],
                            workdays=[date(2027, 10, 9)])
    # Thu 30 Sep: Fri 1 Oct off, weekend, Mon 4 off, then Tue 5, Wed 6, and Sat 9 works.
    assert calendar.add_workdays(date(2027, 9, 30), 3) == date(2027, 10, 7)
    assert calendar.add_workdays(date(2027, 10, 7), 2) == date(2027, 10, 9)
    with pytest.raises(ValueError, match="both a holiday and a working day"):
        WorkCalendar([2027], holidays=[date(2027, 1, 1)], workdays=[date(2027, 1, 1)])
    with pytest.raises(ValueError, match="neither in extra_years"):
        WorkCalendar([], holidays=[date(2031, 1, 1)])


@settings(max_examples=200, deadline=None)
@given(st.dates(date(2005, 1, 1), date(2025, 12, 1)), st.integers(1, 15))
def test_the_nth_working_day_after_is_a_working_day_with_n_before_it(
        day: date, n: int) -> None:
    calendar = WorkCalendar()
    due = calendar.add_workdays(day, n)
    assert due > day and calendar.is_workday(due)
    between = [day + timedelta(days=i) for i in range(1, (due - day).days + 1)]
    assert sum(calendar.is_workday(d) for d in between) == n


def test_moves_forward_with_who_and_a_note(store: Store) -> None:
    bad = make_rating(level=1, rated_at=FRIDAY_10_SHANGHAI)
    store.submit([bad])
    rid = bad["rating_id"]
    with pytest.raises(FollowupError, match="needs --note"):
        store.move_followup(rid, "closed", None, "李主任")
    with pytest.raises(FollowupError, match="phone or ID number"):
        store.move_followup(rid, "contacted", "回访 13812345678", "李主任")
    store.move_followup(rid, "contacted", "已电话回访，说明情况", "李主任")
    with pytest.raises(FollowupError, match="back"):
        store.move_followup(rid, "open", None, "李主任")
    moved = store.move_followup(rid, "contacted", None, "李主任", complex_case=True)
    assert moved.complex and moved.state == "contacted"
    store.move_followup(rid, "rectified", "窗口增配人员", "王科长")
    closed = store.move_followup(rid, "closed", "整改完成，已回复", "王科长")
    assert (closed.state, closed.note, closed.updated_by) == ("closed", "整改完成，已回复",
                                                               "王科长")
    log = store.db.execute("SELECT from_state, to_state, by_whom FROM followup_log "
                           "ORDER BY id").fetchall()
    assert [tuple(r) for r in log] == [("open", "contacted", "李主任"),
                                      ("contacted", "contacted", "李主任"),
                                      ("contacted", "rectified", "王科长"),
                                      ("rectified", "closed", "王科长")]
    with pytest.raises(FollowupError, match="closed already"):
        store.move_followup(rid, "closed", "again", "王科长")


def test_cli_set_moves_one_and_refuses_a_bad_move(store: Store, store_url: str) -> None:
    bad = make_rating(level=2, rated_at=FRIDAY_10_SHANGHAI)
    store.submit([bad])
    ok = cli("followups", "--store", store_url, "set", bad["rating_id"], "contacted",
             "--note", "已回访", "--by", "李主任")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["state"] == "contacted"
    refused = cli("followups", "--store", store_url, "set", bad["rating_id"], "closed",
                  "--by", "李主任")
    assert refused.returncode == 1 and "needs --note" in refused.stderr
    missing = cli("followups", "--store", store_url, "set", "0" * 32, "closed",
                  "--note", "x", "--by", "李主任")
    assert missing.returncode == 1 and "no follow-up" in missing.stderr


def test_http_api_moves_one(store: Store) -> None:
    bad = make_rating(level=2, rated_at=FRIDAY_10_SHANGHAI)
    store.submit([bad])
    server = PlatformServer("127.0.0.1", 0, store).start()

    def post(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        answer = json.loads(response.read())
        conn.close()
        return response.status, answer

    try:
        path = f"/api/followups/{bad['rating_id']}"
        assert post(path, {"state": "contacted", "by": "李主任", "note": "已回访"})[0] == 200
        status, answer = post(path, {"state": "open", "by": "李主任"})
        assert status == 409 and "back" in answer["error"]
        assert post("/api/followups/" + "0" * 32, {"state": "closed", "by": "x",
                                                   "note": "y"})[0] == 404
        assert post(path, {"state": 5})[0] == 400
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", "/api/followups?state=contacted")
        listed = json.loads(conn.getresponse().read())["followups"]
        conn.close()
        assert [f["rating_id"] for f in listed] == [bad["rating_id"]]
    finally:
        server.shutdown()
        server.close()


def at_shanghai(day: str, hour: int = 9) -> datetime:
    return datetime.fromisoformat(f"{day}T{hour:02d}:00:00+08:00").astimezone(UTC)


def test_due_then_overdue_each_raised_once_even_after_a_restart(
        store: Store, store_url: str) -> None:
    bad = make_rating(level=2, rated_at=FRIDAY_10_SHANGHAI)
    store.submit([bad])
    published: list[tuple[str, dict[str, Any]]] = []
    alerts = FollowupAlerts(store, "hcp/v1", lambda t, p: published.append((t, json.loads(p))))
    assert alerts.check(at_shanghai("2025-09-28")) == []          # two working days left
    assert len(alerts.check(at_shanghai("2025-09-29"))) == 1      # the eve: due
    assert alerts.check(at_shanghai("2025-09-30", 23)) == []      # still the deadline day
    assert len(alerts.check(at_shanghai("2025-10-01", 0))) == 1   # overdue
    assert alerts.check(at_shanghai("2025-10-02")) == []          # once
    restarted = FollowupAlerts(Store.open(store_url), "hcp/v1",
                               lambda t, p: published.append((t, json.loads(p))))
    assert restarted.check(at_shanghai("2025-10-03")) == []
    restarted.store.close()
    assert [(t, p["alert"], p["evidence"]["deadline"], p["evidence"]["due"])
            for t, p in published] == [
        ("hcp/v1/alerts", "followup_due", "contact", "2025-09-30"),
        ("hcp/v1/alerts", "followup_overdue", "contact", "2025-09-30")]
    due = published[0][1]
    # The watcher's payload shape (docs/alerts.md), no personal data.
    assert set(due) == {"alert", "kind", "alert_id", "resolved", "severity", "device_id",
                        "hall_id", "window_id", "region_code", "evidence", "first_seen",
                        "raised_at", "resolved_at", "at", "watcher"}
    assert (due["severity"], published[1][1]["severity"]) == ("warning", "critical")
    assert due["evidence"]["case_id"] == bad["case"]["case_id"]
    assert "王晓红" not in json.dumps(published, ensure_ascii=False)
    # Contacted: both contact alerts are resolved (same alert_id, resolved: true), and
    # the next deadline (rectify, 10 Oct) gets its own alert on its eve.
    store.move_followup(bad["rating_id"], "contacted", "已回访", "李主任",
                        now=at_shanghai("2025-10-03"))
    sent = alerts.check(at_shanghai("2025-10-09"))
    assert [(d["alert"], d["evidence"]["deadline"], d["resolved"]) for d in sent] == [
        ("followup_due", "contact", True), ("followup_overdue", "contact", True),
        ("followup_due", "rectify", False)]
    assert sent[0]["alert_id"] == due["alert_id"] and sent[0]["raised_at"] == due["raised_at"]
    assert sent[0]["resolved_at"] is not None
    # Closed: the rectify alert is resolved, once; nothing more after that.
    store.move_followup(bad["rating_id"], "closed", "已整改并回复", "王科长",
                        now=at_shanghai("2025-10-09", 15))
    sent = alerts.check(at_shanghai("2025-10-20"))
    assert [(d["alert"], d["evidence"]["deadline"], d["resolved"]) for d in sent] == [
        ("followup_due", "rectify", True)]
    assert alerts.check(at_shanghai("2025-10-21")) == []
    assert store.followups_to_settle() == []


def test_deadlines_follow_the_configured_policy() -> None:
    due = deadlines(date(2025, 9, 26), WorkCalendar(), Policy(1, 2, 3))
    assert (due.contact, due.rectify, due.complex) == (
        date(2025, 9, 28), date(2025, 9, 29), date(2025, 9, 30))
