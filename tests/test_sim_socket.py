"""The simulator control socket's server (SPEC §8) on its own: clients that read, clients
that stop reading, and what a newly connected client sees first."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers import sim
from drivers.sim import SimServer


@pytest.fixture
def server(tmp_path: Path) -> Iterator[SimServer]:
    s = SimServer(tmp_path / "sim.sock")
    s.open()
    yield s
    s.close()


def _connect(server: SimServer) -> socket.socket:
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect(str(server.path))
    c.settimeout(5)
    return c


def _wait_for_clients(server: SimServer, n: int) -> None:
    deadline = time.monotonic() + 5
    while len(server._clients) != n:
        assert time.monotonic() < deadline, f"expected {n} clients, have {len(server._clients)}"
        time.sleep(0.01)


def _screen(i: int) -> dict[str, object]:
    # About the size of a real screen event: the base64 frame is 1,368 characters.
    return {"ev": "screen", "screen": "prompt", "n": i, "frame": "A" * 1368}


def _read_events(c: socket.socket, n: int) -> list[dict[str, object]]:
    buf = b""
    while buf.count(b"\n") < n:
        chunk = c.recv(65536)
        assert chunk, "socket closed early"
        buf += chunk
    return [json.loads(line) for line in buf.split(b"\n")[:n]]


def test_a_client_that_stops_reading_never_blocks_the_broadcast(
        server: SimServer, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    backlog = 64 * 1024
    monkeypatch.setattr(sim, "MAX_CLIENT_BACKLOG", backlog)
    stalled = _connect(server)       # connects and never reads
    reader = _connect(server)
    _wait_for_clients(server, 2)
    got: list[dict[str, object]] = []
    # Well past what the kernel buffers for the stalled client (a few hundred KiB on
    # Linux) plus what it may queue with us.
    n = (4 * stalled.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) + 2 * backlog) // 1400

    def read() -> None:
        buf = b""
        while len(got) < n:
            chunk = reader.recv(65536)
            if not chunk:
                return
            buf += chunk
            *lines, buf = buf.split(b"\n")
            got.extend(json.loads(line) for line in lines)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    slowest = 0.0
    for i in range(n):
        before = time.monotonic()
        server.broadcast(_screen(i), remember=True)
        slowest = max(slowest, time.monotonic() - before)
        if i % 20 == 0:
            # A real screen changes at most a few times a second: the reading client
            # keeps up with that (here, even on a loaded machine), the stalled one never.
            deadline = time.monotonic() + 10
            while len(got) < i - 20 and time.monotonic() < deadline:
                time.sleep(0.002)
    t.join(10)
    # The daemon's loop would have hung in one of these calls with a blocking send (the
    # kernel's socket buffer holds about a hundred such events).
    assert slowest < 1.0, f"one broadcast took {slowest:.2f} s"
    assert [e["n"] for e in got] == list(range(n)), "the reading client missed events"
    _wait_for_clients(server, 1)     # the stalled one was dropped, and said so
    assert "sim client dropped" in caplog.text
    stalled.settimeout(5)
    data = b""
    while chunk := stalled.recv(65536):
        data += chunk
    assert 0 < len(data) < n * 1400  # what the kernel held for it, then end of stream
    stalled.close()
    reader.close()


def test_a_new_client_sees_the_current_screen_first(server: SimServer) -> None:
    server.broadcast(_screen(1), remember=True)
    c = _connect(server)
    _wait_for_clients(server, 1)
    server.broadcast(_screen(2), remember=True)
    assert [e["n"] for e in _read_events(c, 2)] == [1, 2]
    c.close()


def test_replies_reach_the_client_that_asked(server: SimServer) -> None:
    server.status_provider = lambda: {"backlog": 3}
    c = _connect(server)
    c.sendall(b'{"op": "status"}\n{"op": "press", "level": 9}\nnot json\n')
    status, bad_level, bad_json = _read_events(c, 3)
    assert status == {"ev": "status", "backlog": 3}
    assert bad_level["ev"] == "error" and "1..5" in str(bad_level["error"])
    assert bad_json["ev"] == "error" and "bad request" in str(bad_json["error"])
    c.close()


def test_keys_closed_first_leave_the_display_its_socket(tmp_path: Path) -> None:
    """A stop closes the keys, then shows the last screens: the shared socket stays open
    for the display (closing the keys used to close it, and the next show re-bound it)
    and closes with the last of its users."""
    from device.clock import FakeClock
    from device.core.model import Screen
    from drivers.sim_display import SimDisplay, SimInput

    server = SimServer(tmp_path / "sim.sock")
    keys = SimInput(server)
    display = SimDisplay(server, lambda screen: (b"\0" * 1024, screen.name))
    pressed: list[object] = []
    keys.start(pressed.append, FakeClock())
    display.show(Screen("idle"))
    c = _connect(server)
    try:
        assert _read_events(c, 1)[0]["screen"] == "idle"
        keys.close()
        c.sendall(b'{"op": "press", "level": 5}\n')
        display.show(Screen("thanks", level=5))
        assert _read_events(c, 1)[0]["screen"] == "thanks"   # same connection
        assert pressed == []                                  # input is closed
        assert server.path.exists()
        display.close()
        assert not server.path.exists()
    finally:
        c.close()
