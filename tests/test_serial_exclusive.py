"""One program at a time on a serial port: the evaluator's daemon and `hcp-sim window`
both open it exclusively (an advisory lock), so a technician who runs the window tool on
the port a running daemon reads gets a clear refusal instead of the two silently
splitting the bytes, and a daemon that finds the tool on its port says so and opens the
port as soon as the tool lets go."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest

from drivers.serial_link import PySerialLink
from simulator.windowlink import LinkError, WindowLink
from tests.serial_helpers import Recorder, wait_until


@pytest.fixture
def pty_path() -> Iterator[str]:
    master, slave = os.openpty()
    try:
        yield os.ttyname(slave)
    finally:
        os.close(slave)
        os.close(master)


def test_the_window_tool_is_refused_a_port_the_daemon_reads(pty_path: str) -> None:
    link = PySerialLink(pty_path, 115200, reopen_s=0.1)
    rec = Recorder()
    link.start(rec.on_line, rec.on_open)
    try:
        assert wait_until(lambda: rec.opens == [True])
        with pytest.raises(LinkError) as caught:
            WindowLink(pty_path)
        assert "another program has it open" in str(caught.value)
        assert "systemctl stop hcp-device" in str(caught.value)
    finally:
        link.close()
    WindowLink(pty_path).close()          # and once the daemon let go, it opens


def test_the_daemon_waits_for_the_window_tool_to_let_go(
        pty_path: str, caplog: pytest.LogCaptureFixture) -> None:
    tool = WindowLink(pty_path)
    link = PySerialLink(pty_path, 115200, reopen_s=0.1,
                        log=logging.getLogger("test.serial"))
    rec = Recorder()
    with caplog.at_level(logging.WARNING, logger="test.serial"):
        link.start(rec.on_line, rec.on_open)
        try:
            assert wait_until(lambda: rec.opens == [False])
            assert "another program on this machine has the port open" in caplog.text
            tool.close()
            assert wait_until(lambda: rec.opens == [False, True])
        finally:
            link.close()
            tool.close()
