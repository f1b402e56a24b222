"""JSON nested too deeply for the parser, sent to the device's sockets: the sim socket
(SPEC §8), the status socket (SPEC §13) and the simulator's web view each answer with an
error naming the reason, and the connection goes on (or ends) as for any bad request."""

from __future__ import annotations

import errno
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import drivers.sim
from device import control
from drivers.sim import BUSY, MAX_CLIENTS, MAX_REQUEST, SimServer
from simulator.simclient import SimClient
from simulator.web_view import MAX_BODY, WebView
from tests.support.device import DeviceProcess

# Past the parser's recursion limit (1000 frames) and within every request limit.
NESTED = b"[" * 1000


@pytest.fixture
def server(tmp_path: Path) -> Iterator[SimServer]:
    s = SimServer(tmp_path / "sim.sock")
    s.status_provider = lambda: {"backlog": 0}
    s.open()
    yield s
    s.close()


def _connect(path: Path) -> socket.socket:
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect(str(path))
    c.settimeout(5)
    return c


def _read_events(c: socket.socket, n: int,
                 skip_screens: bool = False) -> list[dict[str, Any]]:
    """The next n events (screen events left out when asked: a running device sends them
    at its own pace)."""
    got: list[dict[str, Any]] = []
    buf = b""
    while len(got) < n:
        try:
            chunk = c.recv(65536)
        except TimeoutError:
            pytest.fail(f"no answer after {got}")
        assert chunk, f"socket closed after {got}"
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            ev = json.loads(line)
            if not (skip_screens and ev.get("ev") in ("screen", "voice")):
                got.append(ev)
    return got[:n]


def test_sim_socket_answers_deep_nesting_and_serves_the_next_request(
        server: SimServer) -> None:
    c = _connect(server.path)
    c.sendall(NESTED + b"\n" + b'{"op": "status"}\n')
    error, status = _read_events(c, 2)
    assert error["ev"] == "error"
    assert "bad request" in error["error"] and "nested too deeply" in error["error"]
    assert status == {"ev": "status", "backlog": 0}
    c.close()


@pytest.mark.parametrize("size", [MAX_REQUEST + 1, 3 * MAX_REQUEST + 5, 100_000])
def test_sim_socket_skips_the_whole_of_an_overlong_line(
        server: SimServer, size: int) -> None:
    """One error for the whole line: its tail past the limit is not taken for a request
    of its own (the tail of "[" * 100000 used to be parsed, and died in the parser)."""
    c = _connect(server.path)
    c.sendall(b"[" * size + b"\n" + b'{"op": "status"}\n')
    error, status = _read_events(c, 2)
    assert error == {"ev": "error", "error": "request too long"}
    assert status == {"ev": "status", "backlog": 0}
    c.close()


def test_running_device_answers_deep_nesting_on_its_sim_socket(tmp_path: Path) -> None:
    device = DeviceProcess(tmp_path).start(wait_hello=False)
    try:
        c = _connect(device.sock_path)
        c.sendall(b"[" * 100_000 + b"\n" + NESTED + b"\n" + b'{"op": "status"}\n')
        too_long, nested, status = _read_events(c, 3, skip_screens=True)
        assert too_long["error"] == "request too long"
        assert "nested too deeply" in nested["error"]
        assert status["ev"] == "status" and "backlog" in status
        c.close()
        assert device.proc is not None and device.proc.poll() is None
        assert "Traceback" not in device.log()
        assert "RecursionError" not in device.log()
    finally:
        device.close()


def test_status_socket_names_deep_nesting_as_the_reason() -> None:
    line = b"[" * (control.MAX_REQUEST - 1)
    reply = control.answer(line, lambda: {"backlog": 0})
    assert reply["ok"] is False
    assert "nested too deeply" in reply["error"]


def test_status_server_answers_deep_nesting(tmp_path: Path) -> None:
    srv = control.StatusServer(tmp_path / "status.sock", lambda: {"backlog": 0})
    srv.open()
    try:
        c = _connect(srv.path)
        c.sendall(b"[" * (control.MAX_REQUEST - 1) + b"\n")
        reply = _read_events(c, 1)[0]
        assert reply["ok"] is False and "nested too deeply" in reply["error"]
        c.close()
    finally:
        srv.close()


def test_web_view_answers_deep_nesting_with_400() -> None:
    web = WebView(lambda: None)
    url = web.start()
    try:
        body = b"[" * MAX_BODY
        req = urllib.request.Request(url + "press", data=body, method="POST")
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=5)
        assert e.value.code == 400
        assert b"nested too deeply" in e.value.read()
    finally:
        web.close()


def test_web_view_answers_a_bad_content_length_with_400() -> None:
    web = WebView(lambda: None)
    web.start()
    try:
        host, port = web.server.server_address[:2]
        with socket.create_connection((str(host), port), timeout=5) as c:
            c.sendall(b"POST /press HTTP/1.1\r\nHost: x\r\nContent-Length: many\r\n\r\n")
            c.settimeout(5)
            head = c.recv(4096)
        assert head.startswith(b"HTTP/1.0 400") or head.startswith(b"HTTP/1.1 400"), head
    finally:
        web.close()


def test_sim_socket_takes_at_most_max_clients_and_says_so_to_one_more(
        server: SimServer) -> None:
    """Each client holds a descriptor and two threads: one more than MAX_CLIENTS gets
    the reason and is closed; when one leaves, a new one is served."""
    clients = [_connect(server.path) for _ in range(MAX_CLIENTS)]
    for c in clients:   # every one attached and served
        c.sendall(b'{"op": "status"}\n')
        assert _read_events(c, 1) == [{"ev": "status", "backlog": 0}]
    extra = _connect(server.path)
    assert _read_events(extra, 1) == [{"ev": "error", "error": BUSY}]
    assert extra.recv(100) == b""   # closed
    extra.close()
    clients.pop().close()
    deadline = time.monotonic() + 5
    while True:   # the server notices the close in the client's own thread
        again = _connect(server.path)
        try:
            again.sendall(b'{"op": "status"}\n')
            answer = _read_events(again, 1)
        except (BrokenPipeError, ConnectionResetError):
            # still full: the server said busy and closed before our request was in
            answer = []
        if answer == [{"ev": "status", "backlog": 0}] or time.monotonic() > deadline:
            break
        again.close()
        time.sleep(0.05)
    assert answer == [{"ev": "status", "backlog": 0}]
    for c in [*clients, again]:
        c.close()


def test_sim_socket_accepts_again_after_accept_fails(
        server: SimServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """accept() failing (no descriptor left: EMFILE) used to end the accept loop for
    good: the socket stayed open and no technician could attach again."""
    assert server._sock is not None
    real = socket.socket.accept
    failures = [OSError(errno.EMFILE, "Too many open files")] * 3

    def accept(sock: socket.socket) -> tuple[socket.socket, Any]:
        if sock is server._sock and failures:
            raise failures.pop()
        return real(sock)

    monkeypatch.setattr(socket.socket, "accept", accept)
    # The loop waits in the real accept() already: a first client takes that one.
    first = _connect(server.path)
    first.sendall(b'{"op": "status"}\n')
    assert _read_events(first, 1) == [{"ev": "status", "backlog": 0}]
    c = _connect(server.path)   # waits in the backlog while accept() fails three times
    c.sendall(b'{"op": "status"}\n')
    assert _read_events(c, 1) == [{"ev": "status", "backlog": 0}]
    assert not failures
    first.close()
    c.close()


def test_a_client_turned_away_knows_why(server: SimServer,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """`hcp-sim device --attach` says the daemon's reason, not "stopped?"."""
    monkeypatch.setattr(drivers.sim, "MAX_CLIENTS", 0)
    client = SimClient(server.path, timeout=2)
    deadline = time.monotonic() + 5
    while not client.closed and time.monotonic() < deadline:
        time.sleep(0.02)
    assert client.closed and client.refusal == BUSY
    monkeypatch.setattr(drivers.sim, "MAX_CLIENTS", 32)
    served = SimClient(server.path, timeout=2)
    served.send({"op": "status"})
    assert served.wait_for(lambda e: e.get("ev") == "status", 5) is not None
    assert not served.closed and served.refusal is None
    served.close()
