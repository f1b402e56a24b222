"""The status socket and `hcp-device status` (SPEC §13): the server alone (modes, hostile
and silent clients, a failing provider), then the real daemon against a real mosquitto,
read through the real command line."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device import __version__
from device.control import (
    MAX_REQUEST,
    NoDaemon,
    OutboxGlance,
    StatusServer,
    answer,
    ask_status,
    status_socket_path,
)
from device.outbox import Outbox
from device.status_view import status_lines
from tests.support.device import ROOT, DeviceProcess
from tests.support.mosquitto import Mosquitto
from tests.support.ratings import make_rating
from tests.test_device_mqtt_support import Watcher, device_factory, press_rating, wait_until

__all__ = ["device_factory"]  # the fixture, used by name

STATUS = {"device_id": "D1", "backlog": 2, "serial_open": True, "broker": "offline"}


def exchange(path: Path, data: bytes, timeout: float = 5.0) -> dict[str, Any]:
    """Send raw bytes, half-close, read the one answer line."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        buf = b""
        while chunk := s.recv(65536):
            buf += chunk
    assert buf.endswith(b"\n") and buf.count(b"\n") == 1, buf
    reply: dict[str, Any] = json.loads(buf)
    return reply


@pytest.fixture
def server(tmp_path: Path) -> Iterator[StatusServer]:
    srv = StatusServer(status_socket_path(tmp_path), lambda: dict(STATUS), timeout_s=0.5)
    srv.open()
    yield srv
    srv.close()


# --- the server ------------------------------------------------------------------------


def test_answers_status_and_is_open_to_user_and_group_only(tmp_path: Path) -> None:
    old = os.umask(0)   # the widest umask a daemon could run under
    try:
        srv = StatusServer(tmp_path / "status.sock", lambda: dict(STATUS))
        srv.open()
    finally:
        os.umask(old)
    try:
        assert stat.S_IMODE(os.stat(srv.path).st_mode) == 0o660
        assert ask_status(srv.path) == STATUS
        assert exchange(srv.path, b'{"op": "status"}\n') == {"ok": True, "status": STATUS}
    finally:
        srv.close()
    assert not srv.path.exists()


def test_a_stale_socket_is_replaced_and_another_file_is_not(tmp_path: Path) -> None:
    path = tmp_path / "status.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()          # a daemon that died by SIGKILL leaves this behind
    with pytest.raises(NoDaemon, match="left over"):
        ask_status(path)
    srv = StatusServer(path, lambda: dict(STATUS))
    srv.open()
    try:
        assert ask_status(path)["device_id"] == "D1"
    finally:
        srv.close()
    path.write_text("precious")
    with pytest.raises(OSError, match="not a socket"):
        StatusServer(path, lambda: dict(STATUS)).open()
    assert path.read_text() == "precious"


def test_no_daemon_names_the_socket(tmp_path: Path) -> None:
    with pytest.raises(NoDaemon) as e:
        ask_status(tmp_path / "status.sock")
    assert str(tmp_path / "status.sock") in str(e.value)
    assert "does not exist" in str(e.value)


@pytest.mark.parametrize("data,error", [
    (b"hello\n", "not a JSON line"),
    (b'{"op": "reboot"}\n', "unknown request"),
    (b"[1, 2]\n", "unknown request"),
    (b"\xff\xfe\n", "not a JSON line"),
    (b"[" * 1000 + b"\n", "not a JSON line"),
    (b"x" * (MAX_REQUEST + 1), "no request line"),
    (b"", "no request line"),
])
def test_bad_requests_get_an_error_and_the_server_goes_on(
        server: StatusServer, data: bytes, error: str) -> None:
    reply = exchange(server.path, data)
    assert reply["ok"] is False and error in reply["error"]
    assert ask_status(server.path) == STATUS


def test_a_request_without_its_newline_is_answered_once_the_client_is_done(
        server: StatusServer) -> None:
    assert exchange(server.path, b'{"op": "status"}') == {"ok": True, "status": STATUS}


def test_silent_clients_neither_block_others_nor_stay_forever(tmp_path: Path) -> None:
    srv = StatusServer(tmp_path / "status.sock", lambda: dict(STATUS), timeout_s=0.5,
                       max_connections=3)
    srv.open()
    silent = []
    try:
        for _ in range(2):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(srv.path))
            silent.append(s)
        # Two slots taken by clients that say nothing: a third is still served.
        assert ask_status(srv.path) == STATUS
        # The server gives up on the silent ones: each gets an error line and EOF.
        for s in silent:
            s.settimeout(5)
            data = s.makefile("rb").read()
            assert json.loads(data)["ok"] is False
    finally:
        for s in silent:
            s.close()
        srv.close()


def test_more_clients_than_slots_are_told_busy(tmp_path: Path) -> None:
    srv = StatusServer(tmp_path / "status.sock", lambda: dict(STATUS), timeout_s=2.0,
                       max_connections=1)
    srv.open()
    hog = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        hog.connect(str(srv.path))
        assert wait_until(lambda: srv._slots._value == 0, 5)  # the hog holds the slot
        with pytest.raises(NoDaemon, match="busy"):
            ask_status(srv.path)
        hog.close()
        assert wait_until(lambda: _answers(srv.path), 5)
    finally:
        hog.close()
        srv.close()


def _answers(path: Path) -> bool:
    try:
        return ask_status(path) == STATUS
    except NoDaemon:
        return False


def test_a_failing_provider_is_an_error_answer_not_a_dead_server(tmp_path: Path) -> None:
    calls: list[int] = []

    def provider() -> dict[str, Any]:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("dictionary changed size during iteration")
        if len(calls) == 2:
            return {"not json": object()}
        return dict(STATUS)

    srv = StatusServer(tmp_path / "status.sock", provider)
    srv.open()
    try:
        with pytest.raises(NoDaemon, match="status unavailable"):
            ask_status(srv.path)
        with pytest.raises(NoDaemon, match="status unavailable"):
            ask_status(srv.path)
        assert ask_status(srv.path) == STATUS
    finally:
        srv.close()


def test_the_provider_runs_on_the_servers_own_thread(tmp_path: Path) -> None:
    # The daemon's loop may be busy (an fsync, a long redraw): the server does not wait
    # for it, it reads what the provider gives from its own thread.
    seen_threads: list[str] = []

    def provider() -> dict[str, Any]:
        seen_threads.append(threading.current_thread().name)
        return dict(STATUS)

    srv = StatusServer(tmp_path / "status.sock", provider)
    srv.open()
    try:
        assert ask_status(srv.path) == STATUS
        assert seen_threads == ["status-client"]
    finally:
        srv.close()


@given(st.binary(max_size=2 * MAX_REQUEST))
def test_any_request_line_gets_an_answer(line: bytes) -> None:
    reply = answer(line, lambda: dict(STATUS))
    assert set(reply) in ({"ok", "status"}, {"ok", "error"})
    if reply["ok"]:
        assert json.loads(line)["op"] == "status"
    json.dumps(reply)


@given(st.one_of(
    st.binary(max_size=3 * MAX_REQUEST),
    st.lists(st.text(max_size=40), max_size=5).map(lambda parts: "\n".join(parts).encode()),
    st.dictionaries(st.text(max_size=8), st.none() | st.integers() | st.text(max_size=8),
                    max_size=4).map(lambda d: json.dumps(d).encode() + b"\n"),
))
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_bytes_from_a_client_leave_the_server_answering(
        server: StatusServer, data: bytes) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(server.path))
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            reply = s.makefile("rb").read()
        except (BrokenPipeError, ConnectionResetError):
            reply = None   # it hung up on a request too long to read: fine
    if reply is not None:
        assert reply.count(b"\n") == 1
        assert isinstance(json.loads(reply)["ok"], bool)
    assert ask_status(server.path) == STATUS


def test_the_outbox_glance_says_oldest_last_and_last_rejected_without_personal_data(
        tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    outbox.open()
    now = [datetime(2026, 12, 2, 8, 0, tzinfo=UTC).timestamp()]
    glance = OutboxGlance(outbox, lambda: now[0])
    try:
        glance.refresh()
        empty = glance.status({"broker": "offline"}, broker_connects=0, clock_synced=False)
        assert empty["oldest_pending_s"] is None and empty["last_rating"] is None
        assert empty["last_rejected"] is None and empty["backlog"] == 0

        first = make_rating(level=2, rated_at="2026-12-02T15:50:00+08:00")
        outbox.store(first, case_id="C-1")
        glance.stored(first)
        second = make_rating(level=5, rated_at="2026-12-02T15:59:00+08:00")
        outbox.store(second)
        glance.stored(second)
        s = glance.status({"broker": "connected", "backlog": 2}, broker_connects=3,
                          clock_synced=True)
        assert s["oldest_pending_s"] == 600 and s["mqtt_connected"] is True
        assert s["last_rating"] == {"rated_at": "2026-12-02T15:59:00+08:00", "level": 5}

        outbox.record_rejected(first, "level out of range\nforged line")
        outbox.remove([first["rating_id"]])
        glance.receipted({first["rating_id"]: "rejected"})
        s = glance.status({}, broker_connects=3, clock_synced=True)
        assert s["oldest_pending_s"] == 60
        assert s["last_rejected"]["rating_id"] == first["rating_id"]
        assert s["last_rejected"]["reason"] == "level out of range forged line"
        text = json.dumps(s, ensure_ascii=False)
        for personal in ("staff", "case_id", "C-1", "service_name"):
            assert personal not in text
    finally:
        outbox.close()


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=12), inner, max_size=3), max_leaves=8)
KEYS = st.sampled_from(["device_id", "version", "uptime_s", "broker", "broker_connects",
                        "serial_open", "serial_errors", "last_frame", "backlog",
                        "oldest_pending_s", "last_rating", "last_rejected", "receipts",
                        "rejected", "pending_cases", "clock_synced", "faults",
                        "mqtt_connected"])


@given(st.dictionaries(KEYS, JSON))
def test_status_lines_never_fail_on_an_answer_of_another_version(
        answer_: dict[str, Any]) -> None:
    lines = status_lines(answer_)
    assert all(isinstance(line, str) and "\n" not in line for line in lines)


def test_status_lines_read_any_answer() -> None:
    lines = status_lines({"device_id": "D1", "version": "1.0", "uptime_s": 4000,
                          "broker": "offline", "broker_connects": 2, "serial_open": False,
                          "serial_errors": 3, "backlog": 4, "oldest_pending_s": 130,
                          "last_rating": {"rated_at": "2026-12-02T07:00:00+08:00",
                                          "level": 2},
                          "last_rejected": {"rating_id": "ab" * 16, "at": "x",
                                            "reason": "level out of range"},
                          "faults": {"display": "I2C write failed"},
                          "clock_synced": False})
    text = "\n".join(lines)
    assert "offline (2 connection(s) since start)" in text
    assert "4 pending, oldest 2 min old" in text
    assert "level 2 at 2026-12-02T07:00:00+08:00" in text
    assert "level out of range" in text and "display: I2C write failed" in text
    assert "not synchronised" in text and "66 min" in text
    assert status_lines({})  # an answer with nothing in it still prints


# --- the real daemon, through the real command line ---------------------------------


def hcp_device(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "device.cli", *args], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=60)


def status_json(device: DeviceProcess) -> dict[str, Any]:
    done = hcp_device("status", "--config", str(device.config_path), "--json")
    assert done.returncode == 0, done.stderr
    status: dict[str, Any] = json.loads(done.stdout)
    return status


DeviceFactory = Callable[..., DeviceProcess]


def test_status_json_shows_the_backlog_grow_while_the_broker_is_down_and_drain(
        mosquitto: Mosquitto, device_factory: DeviceFactory) -> None:
    bridge = Watcher(mosquitto, auto_receipt=True)
    device = device_factory(mosquitto.port, mqtt={"resend_after_s": 600}).start()
    try:
        first = wait_until(lambda: (s := status_json(device))["mqtt_connected"] and s, 15,
                           0.2)
        assert first, device.log()
        sock_mode = os.stat(status_socket_path(device.data_dir)).st_mode
        assert stat.S_ISSOCK(sock_mode) and stat.S_IMODE(sock_mode) == 0o660
        assert first["backlog"] == 0 and first["oldest_pending_s"] is None
        assert first["serial_open"] is True and first["version"] == __version__
        assert first["last_rating"] is None and first["broker_connects"] == 1

        mosquitto.stop()
        assert wait_until(lambda: not status_json(device)["mqtt_connected"], 15, 0.2)
        for n, level in enumerate((5, 4, 1), 1):
            press_rating(device, level)
            s = status_json(device)
            assert s["backlog"] == n, s
            assert isinstance(s["oldest_pending_s"], int) and s["oldest_pending_s"] >= 0
            assert s["last_rating"]["level"] == level
            assert set(s["last_rating"]) == {"rated_at", "level"}   # no personal data

        mosquitto.start()
        drained = wait_until(lambda: (s := status_json(device))["backlog"] == 0 and s, 30,
                             0.3)
        assert drained, device.log()
        assert drained["mqtt_connected"] is True and drained["oldest_pending_s"] is None
        assert drained["broker_connects"] == 2

        human = hcp_device("status", "--config", str(device.config_path))
        assert human.returncode == 0
        assert "broker:        connected" in human.stdout
        assert "outbox:        0 pending" in human.stdout
    finally:
        bridge.close()
    assert device.stop(timeout=20) == 0
    assert not status_socket_path(device.data_dir).exists()
    gone = hcp_device("status", "--config", str(device.config_path), "--json")
    assert gone.returncode == 3
    assert str(status_socket_path(device.data_dir)) in gone.stderr
    assert gone.stdout == ""


def test_status_after_a_sigkill_says_the_daemon_is_gone(
        device_factory: DeviceFactory) -> None:
    device = device_factory(1).start()   # no broker: the device works offline
    assert status_json(device)["mqtt_connected"] is False
    device.kill()
    gone = hcp_device("status", "--config", str(device.config_path))
    assert gone.returncode == 3 and "not running any more" in gone.stderr, gone.stderr


def test_a_status_socket_that_cannot_be_made_never_stops_rating(
        device_factory: DeviceFactory) -> None:
    device = device_factory(1)
    device.data_dir.mkdir(parents=True)
    in_the_way = status_socket_path(device.data_dir)
    in_the_way.write_text("someone's notes")
    device.start()
    press_rating(device, 5)   # the device rates on
    assert "status socket" in device.log() and "not a socket" in device.log()
    assert in_the_way.read_text() == "someone's notes"
    done = hcp_device("status", "--config", str(device.config_path))
    assert done.returncode == 3, done.stdout
    assert "not a socket but another file" in done.stderr
