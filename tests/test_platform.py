"""`hcp-sim platform` (hcp-platform on SQLite, chaos on): SPEC §9 answers, de-duplication by
rating_id, SQLite storage, counts, bearer token and the chaos controls."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from simulator.platform import PlatformControl, main
from tests.support.bridge import REPO
from tests.support.mosquitto import free_port, wait_for_port
from tests.support.platform import RunningPlatform, running_platform
from tests.support.ratings import make_rating


def post(platform: RunningPlatform, body: bytes | dict[str, Any], token: str | None = None,
         content_type: str = "application/json") -> tuple[int, dict[str, Any], dict[str, str]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn = http.client.HTTPConnection("127.0.0.1", platform.server.port, timeout=10)
    headers = {"Content-Type": content_type}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    conn.request("POST", platform.server.path, body=data, headers=headers)
    response = conn.getresponse()
    answer = json.loads(response.read() or b"{}")
    conn.close()
    return response.status, answer, dict(response.headers)


def test_one_result_per_record_in_order_and_duplicates_stored_once(
        platform: RunningPlatform) -> None:
    a, b = make_rating("dev-1", level=5), make_rating("dev-2", level=1)
    bad = make_rating("dev-1", level=9)
    status, answer, _ = post(platform, {"ratings": [a, b, bad, a]})
    assert status == 200
    assert [(r["rating_id"], r["status"]) for r in answer["results"]] == [
        (a["rating_id"], "accepted"), (b["rating_id"], "accepted"),
        (bad["rating_id"], "rejected"), (a["rating_id"], "duplicate")]
    assert "level" in answer["results"][2]["error"]
    status, answer, _ = post(platform, {"ratings": [b]})
    assert answer["results"][0]["status"] == "duplicate"

    counts = platform.control.counts()
    assert counts["total"] == 2 and counts["duplicates"] == 2 and counts["rejected"] == 1
    assert counts["by_device"] == {"dev-1": 1, "dev-2": 1}
    assert counts["by_level"] == {"5": 1, "1": 1}
    assert (counts["good"], counts["bad"]) == (1, 1)
    assert platform.control.rating_ids() == [a["rating_id"], b["rating_id"]]
    assert platform.control.rating_ids("dev-2") == [b["rating_id"]]
    assert platform.control.times_seen() == {"dev-1": {a["rating_id"]: 2},
                                             "dev-2": {b["rating_id"]: 2}}


@pytest.mark.parametrize(("body", "status"), [
    (b"not json", 400),
    ({"ratings": []}, 400),
    ({"ratings": "x"}, 400),
    ({"records": [make_rating()]}, 400),
    ({"ratings": [make_rating() for _ in range(3)]}, 413),
])
def test_malformed_requests_are_refused_whole(tmp_path: Path, body: bytes | dict[str, Any],
                                              status: int) -> None:
    with running_platform(tmp_path, max_batch=2) as platform:
        assert post(platform, body)[0] == status
        assert platform.control.counts()["total"] == 0


def test_content_type_must_be_json(platform: RunningPlatform) -> None:
    assert post(platform, {"ratings": [make_rating()]}, content_type="text/plain")[0] == 415


def test_ratings_survive_a_restart_in_the_sqlite_file(tmp_path: Path) -> None:
    record = make_rating()
    with running_platform(tmp_path) as platform:
        post(platform, {"ratings": [record]})
    with running_platform(tmp_path) as platform:
        assert platform.control.rating_ids() == [record["rating_id"]]
        assert post(platform, {"ratings": [record]})[1]["results"][0]["status"] == "duplicate"


def test_bearer_token_is_required_when_configured(tmp_path: Path) -> None:
    with running_platform(tmp_path, token="t0ken") as platform:
        status, _, headers = post(platform, {"ratings": [make_rating()]}, token="wrong")
        assert status == 401 and headers["WWW-Authenticate"] == "Bearer"
        assert post(platform, {"ratings": [make_rating()]})[0] == 401
        assert post(platform, {"ratings": [make_rating()]}, token="t0ken")[0] == 200
        with pytest.raises(Exception, match="401"):
            PlatformControl(platform.base_url).counts()
        assert platform.control.counts()["total"] == 1


def test_chaos_error_with_retry_after_for_a_number_of_requests(
        platform: RunningPlatform) -> None:
    platform.control.chaos("error", status=429, retry_after="5", requests=2)
    for _ in range(2):
        status, _, headers = post(platform, {"ratings": [make_rating()]})
        assert status == 429 and headers["Retry-After"] == "5"
    assert post(platform, {"ratings": [make_rating()]})[0] == 200
    assert platform.control.counts()["total"] == 1


def test_chaos_error_for_a_while(platform: RunningPlatform) -> None:
    state = platform.control.chaos("error", status=503, for_s=0.5)
    assert state["mode"] == "error" and 0 < state["remaining_s"] <= 0.5
    assert post(platform, {"ratings": [make_rating()]})[0] == 503
    time.sleep(0.6)
    assert post(platform, {"ratings": [make_rating()]})[0] == 200


def test_chaos_slow_stores_first_then_answers_late(platform: RunningPlatform) -> None:
    platform.control.chaos("slow", delay_s=0.5)
    started = time.monotonic()
    assert post(platform, {"ratings": [make_rating()]})[0] == 200
    assert time.monotonic() - started >= 0.5


def test_chaos_hang_until_changed_and_drop_answer(platform: RunningPlatform) -> None:
    platform.control.chaos("hang")
    conn = http.client.HTTPConnection("127.0.0.1", platform.server.port, timeout=0.5)
    conn.request("POST", platform.server.path, body=json.dumps({"ratings": [make_rating()]}),
                 headers={"Content-Type": "application/json"})
    with pytest.raises(TimeoutError):
        conn.getresponse()
    conn.close()
    platform.control.chaos("drop", requests=1)
    conn = http.client.HTTPConnection("127.0.0.1", platform.server.port, timeout=5)
    conn.request("POST", platform.server.path, body=json.dumps({"ratings": [make_rating()]}),
                 headers={"Content-Type": "application/json"})
    with pytest.raises(http.client.RemoteDisconnected):
        conn.getresponse()
    assert platform.control.counts()["total"] == 1  # the hung one was never stored


def test_chaos_rejects_bad_specs(platform: RunningPlatform) -> None:
    with pytest.raises(Exception, match="400"):
        platform.control.chaos("explode")
    with pytest.raises(Exception, match="400"):
        platform.control.chaos("error", colour="red")


def test_cli_serves_counts_and_chaos(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                     ) -> None:
    port = free_port()
    token_file = tmp_path / "token"
    token_file.write_text("abc\n")
    server = subprocess.Popen(
        [sys.executable, "-m", "simulator.cli", "platform", "--listen", f"127.0.0.1:{port}",
         "--db", str(tmp_path / "p.db"), "--token-file", str(token_file)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stderr=subprocess.PIPE)
    try:
        assert wait_for_port("127.0.0.1", port, 10)
        url = f"http://127.0.0.1:{port}"
        control = PlatformControl(url, "abc")
        record = make_rating("421100-HG01-W03", level=2)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("POST", "/api/ratings", body=json.dumps({"ratings": [record]}),
                     headers={"Content-Type": "application/json",
                              "Authorization": "Bearer abc"})
        assert conn.getresponse().status == 200
        assert control.counts()["by_device"] == {"421100-HG01-W03": 1}

        assert main(["counts", "--url", url, "--token-file", str(token_file)]) == 0
        out = capsys.readouterr().out
        assert "ratings: 1" in out and "差评 1" in out and "421100-HG01-W03: 1" in out
        assert main(["chaos", "error", "--status", "500", "--for", "30", "--url", url,
                     "--token-file", str(token_file)]) == 0
        assert control.chaos_state()["status"] == 500
        assert main(["counts", "--url", "http://127.0.0.1:9"]) == 1
    finally:
        server.terminate()
        assert server.wait(5) == 0
        assert server.stderr is not None
        assert b"development mode, chaos controls on" in server.stderr.read()


def test_it_is_the_city_platform_bad_ratings_open_follow_ups(
        platform: RunningPlatform) -> None:
    bad, good = make_rating("dev-1", level=1), make_rating("dev-1", level=4)
    assert post(platform, {"ratings": [bad, good]})[0] == 200
    conn = http.client.HTTPConnection("127.0.0.1", platform.server.port, timeout=10)
    conn.request("GET", "/api/followups")
    followups = json.loads(conn.getresponse().read())["followups"]
    conn.close()
    assert [(f["rating_id"], f["state"]) for f in followups] == [(bad["rating_id"], "open")]
