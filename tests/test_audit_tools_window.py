"""Audit of `hcp-sim window` with odd input: every mistake is one line naming the input
and the reason (exit 2), never a traceback, a meaningless message or a silent no-op."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator import window
from simulator.window_request import UsageError, build_request, interactive_request
from simulator.windowlink import LinkError, WindowLink

# --- socket:// URLs that pyserial cannot parse -----------------------------------------

@pytest.mark.parametrize("url", ["socket://127.0.0.1:99999", "socket://127.0.0.1",
                                 "socket://127.0.0.1:-1", "socket://:80x"])
def test_a_bad_socket_url_names_the_form_expected(url: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    # pyserial's own message for these is "'debug|info|warning|error'" or
    # "'<=' not supported between instances of 'int' and 'NoneType'".
    assert window.main(["--port", url, "ping"]) == 2
    [message] = capsys.readouterr().err.splitlines()
    assert message.startswith(f"hcp-sim window: cannot open {url}: ")
    assert "socket://HOST:PORT" in message
    assert "debug|info" not in message and "NoneType" not in message


def test_an_empty_port_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert window.main(["--port", "", "ping"]) == 2
    [message] = capsys.readouterr().err.splitlines()
    assert "the port is empty" in message


def test_windowlink_raises_linkerror_for_a_bad_socket_url() -> None:
    with pytest.raises(LinkError, match="socket://HOST:PORT"):
        WindowLink("socket://localhost:70000")


# --- numbers that are not numbers ------------------------------------------------------

@pytest.mark.parametrize("args, says", [
    (["--timeout", "nan", "ping"], "--timeout"),
    (["--timeout", "inf", "ping"], "--timeout"),
    (["--wait", "nan", "ping"], "--wait"),
    (["--wait", "inf", "ping"], "--wait"),
    (["--listen", "--duration", "nan"], "--duration"),
    (["--listen", "--duration", "-1"], "--duration"),
    (["--listen", "--duration", "0"], "--duration"),
    (["--listen", "--duration", "inf"], "--duration"),
])
def test_odd_durations_are_refused(args: list[str], says: str,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    # Before: --timeout nan printed "no answer … within nan s", --timeout inf waited for
    # ever, --duration nan listened for ever and --duration -1 stopped at once, exit 0.
    assert window.main(["--port", "loop://", *args]) == 2
    [message] = capsys.readouterr().err.splitlines()
    assert message.startswith("hcp-sim window: ") and says in message


# --- bytes that are not UTF-8 (a shell passes them to argv as surrogates) ----------------

def test_a_raw_line_with_bytes_that_are_not_utf8_is_sent_as_typed() -> None:
    request = build_request("raw", ["{\"type\":\"ping\",\"seq\":1,\"x\":\"\udcff\"}"])
    assert request.encoded().line == b'{"type":"ping","seq":1,"x":"\xff"}\n'


def test_a_field_with_bytes_that_are_not_utf8_is_a_usage_error(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert window.main(["--port", "loop://", "ping", "staff_name=\udcff"]) == 2
    [message] = capsys.readouterr().err.splitlines()
    assert "staff_name" in message and "UTF-8" in message


@settings(max_examples=300, deadline=None)
@given(st.text(), st.sampled_from(["ping", "case_completed", "raw", "pause"]))
def test_any_prompt_line_is_a_request_or_a_usage_error(text: str, kind: str) -> None:
    try:
        request = interactive_request(f"{kind} {text}")
    except UsageError as e:
        assert str(e) and "\n" not in str(e)
        return
    if request is not None:
        assert request.encoded().line.endswith(b"\n")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(min_size=1), max_size=4))
def test_any_field_tokens_build_a_frame_or_a_usage_error(tokens: list[str]) -> None:
    try:
        request = build_request("staff_login", tokens, seq=1)
    except UsageError:
        return
    assert request.encoded().line.endswith(b"\n")
