"""Test helpers for the serial link: a window system on TCP, and event recorders."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

from simulator.localbroker import free_port


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


class Recorder:
    """Records what the link reports, thread-safely, in arrival order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.lines: list[bytes] = []
        self.opens: list[bool] = []

    def on_line(self, line: bytes) -> None:
        with self._lock:
            self.lines.append(line)

    def on_open(self, is_open: bool) -> None:
        with self._lock:
            self.opens.append(is_open)

    def snapshot(self) -> tuple[list[bytes], list[bool]]:
        with self._lock:
            return list(self.lines), list(self.opens)


class WindowServer:
    """A window business system reachable as socket://127.0.0.1:PORT (one client at a time)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port if port is not None else free_port()
        self._listener: socket.socket | None = None
        self.conn: socket.socket | None = None

    @property
    def url(self) -> str:
        return f"socket://127.0.0.1:{self.port}"

    def listen(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(1)
        self._listener = listener

    def accept(self, timeout: float = 5.0) -> socket.socket:
        assert self._listener is not None
        self._listener.settimeout(timeout)
        conn, _ = self._listener.accept()
        conn.settimeout(timeout)
        self.conn = conn
        return conn

    def drop_client(self) -> None:
        """The peer goes away, as a window PC does when its serial server restarts."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def recv_until(self, marker: bytes, timeout: float = 5.0) -> bytes:
        assert self.conn is not None
        self.conn.settimeout(timeout)
        data = b""
        while marker not in data:
            chunk = self.conn.recv(65536)
            if not chunk:
                break
            data += chunk
        return data

    def close(self) -> None:
        self.drop_client()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
