"""Audit of the platform's config on broken input: what would make the running platform
do something else than the file says (a holiday that is silently ignored, a ratings path
no POST can reach, a token file that lets everyone in) is a ConfigError naming the key,
at start."""

from __future__ import annotations

import http.client
import json
from datetime import date
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from city_platform.config import load
from city_platform.run import build
from common.configschema import ConfigError


def config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "platform.toml"
    path.write_text(f'[store]\nurl = "sqlite:///{tmp_path / "r.db"}"\n' + text,
                    encoding="utf-8")
    return str(path)


def test_a_holiday_given_as_a_date_and_time_is_an_error_not_ignored(tmp_path: Path) -> None:
    """Found by the audit: TOML `2030-10-08T08:00:00` is a datetime, which is a date to
    isinstance but never equal to one: the holiday was accepted and then never matched,
    so Tuesday 2030-10-08 counted as a working day in every deadline."""
    text = "[calendar]\nextra_years = [2030]\nholidays = [2030-10-08T08:00:00]\n"
    with pytest.raises(ConfigError, match=r"\[calendar\] holidays: .*2030-10-08"):
        load(config(tmp_path, text))


def test_a_holiday_given_as_a_date_counts(tmp_path: Path) -> None:
    text = "[calendar]\nextra_years = [2030]\nholidays = [2030-10-08, \"2030-10-09\"]\n"
    calendar = load(config(tmp_path, text)).calendar
    assert not calendar.is_workday(date(2030, 10, 8))
    assert not calendar.is_workday(date(2030, 10, 9))
    assert calendar.is_workday(date(2030, 10, 10))


@pytest.mark.parametrize("path", ["/api/ratings?x=1", "/api/ratings#x", "/api/rat ings",
                                  "/api/followups/ratings", "/_chaos"])
def test_a_ratings_path_no_post_can_reach_is_an_error(tmp_path: Path, path: str) -> None:
    """Found by the audit: these were accepted, and then every POST of the bridge went
    elsewhere (a query or fragment is not part of the path the server compares; the
    follow-up API and the chaos controls answer their own paths first): 404 or 400, the
    bridge's "other 4xx", nothing stored."""
    with pytest.raises(ConfigError, match=r"\[http\] path"):
        load(config(tmp_path, f"[http]\npath = {json.dumps(path)}\n"))


def test_the_path_as_configured_takes_ratings(tmp_path: Path) -> None:
    from tests.support.mosquitto import free_port
    from tests.support.ratings import make_rating

    listen = f"127.0.0.1:{free_port()}"
    loaded = load(config(tmp_path, f'[http]\nlisten = "{listen}"\npath = "/city/in"\n'))
    platform = build(loaded)
    platform.server.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", platform.server.port, timeout=10)
        conn.request("POST", loaded.path, body=json.dumps({"ratings": [make_rating()]}),
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == 200, response.read()
        conn.close()
    finally:
        platform.server.shutdown()
        platform.close()


@pytest.mark.parametrize("content", ["", "\n", "   \n"])
def test_an_empty_token_file_is_an_error_not_an_open_door(tmp_path: Path,
                                                          content: str) -> None:
    """Found by the audit: an empty token file made the token "", which every request
    without a token matches: on a non-loopback address (where the config insists on a
    token) the API and the dashboard were open to anyone."""
    token = tmp_path / "token"
    token.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"\[http\] token_file: .*empty"):
        load(config(tmp_path, f'[http]\nlisten = "0.0.0.0:8080"\n'
                              f'token_file = "{token}"\n'))


def test_a_token_file_that_is_not_text_is_a_config_error(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match=r"\[http\] token_file: cannot read"):
        load(config(tmp_path, f'[http]\ntoken_file = "{token}"\n'))


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=30))
def test_any_path_text_loads_or_is_a_config_error(path: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        try:
            loaded = load(config(Path(directory), f"[http]\npath = {json.dumps(path)}\n"))
        except ConfigError as e:
            assert all("[http] path" in p or "TOML" in p for p in e.problems)
            return
        assert loaded.path.startswith("/")
        assert not any(c in loaded.path for c in "?# \t\x00")
