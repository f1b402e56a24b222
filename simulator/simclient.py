"""A client of the simulator control socket (SPEC §8): press keys, watch the screen.

Used by `hcp-sim device`, the tests and the chaos runner; it speaks only the socket's
newline-delimited JSON, so it works against any running daemon with sim drivers.
"""

from __future__ import annotations

import base64
import contextlib
import json
import queue
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

WIDTH, HEIGHT = 128, 64


class SimClient:
    def __init__(self, path: str | Path, timeout: float = 10.0) -> None:
        self.path = str(path)
        self.sock = _connect(self.path, timeout)
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.screen: dict[str, Any] | None = None
        self.status: dict[str, Any] | None = None
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        # The error the daemon sent just before it closed the connection (it turned this
        # client away: "busy: …"), else None.
        self.refusal: str | None = None
        self._closed = threading.Event()
        self._lock = threading.Lock()
        threading.Thread(target=self._read, name="sim-client", daemon=True).start()

    def _read(self) -> None:
        buf = b""
        last: dict[str, Any] = {}
        with contextlib.suppress(OSError):
            while not self._closed.is_set():
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    try:
                        ev = json.loads(line)
                    except ValueError:
                        continue
                    if ev.get("ev") == "screen":
                        self.screen = ev
                    elif ev.get("ev") == "status":
                        self.status = ev
                    last = ev
                    self.events.put(ev)
                    for listener in list(self.listeners):
                        listener(ev)
        if last.get("ev") == "error" and "op" not in last:
            self.refusal = str(last.get("error"))
        self._closed.set()
        self.events.put({"ev": "closed"})

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def send(self, request: dict[str, Any]) -> None:
        data = (json.dumps(request) + "\n").encode()
        with self._lock:
            self.sock.sendall(data)

    def press(self, level: int) -> None:
        self.send({"op": "press", "level": level})

    def hold(self, level: int, ms: int) -> None:
        self.send({"op": "hold", "level": level, "ms": ms})

    def touch(self, x: int, y: int) -> None:
        self.send({"op": "touch", "x": x, "y": y})

    def request_status(self) -> None:
        self.send({"op": "status"})

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool],
                 timeout: float = 5.0) -> dict[str, Any] | None:
        """The first event from now on matching `predicate`, or None on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                ev = self.events.get(timeout=left)
            except queue.Empty:
                return None
            if ev.get("ev") == "closed":
                self.events.put(ev)
                return None
            if predicate(ev):
                return ev

    def wait_screen(self, name: str, timeout: float = 5.0,
                    where: Callable[[dict[str, Any]], bool] | None = None
                    ) -> dict[str, Any] | None:
        return self.wait_for(lambda e: e.get("ev") == "screen" and e.get("screen") == name
                             and (where is None or where(e)), timeout)

    def drain(self) -> None:
        """Forget events seen so far (the current screen stays in `screen`)."""
        while True:
            try:
                self.events.get_nowait()
            except queue.Empty:
                return

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def _connect(path: str, timeout: float) -> socket.socket:
    deadline = time.monotonic() + timeout
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            return sock
        except OSError:
            sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def frame_pixels(frame_b64: str) -> list[list[int]]:
    """Decode a screen event's `frame` (1-bit, row-major, MSB first) into rows of 0/1."""
    data = base64.b64decode(frame_b64)
    rows = []
    for y in range(HEIGHT):
        row = []
        for x in range(WIDTH):
            byte = data[y * (WIDTH // 8) + x // 8]
            row.append((byte >> (7 - x % 8)) & 1)
        rows.append(row)
    return rows


def half_blocks(frame_b64: str, step: int = 1, vstep: int = 1) -> list[str]:
    """The frame as lines of half-block characters, two pixel rows per line: 128 columns
    by 32 lines at full resolution; for a smaller terminal every `step` pixels of a row
    and every `vstep` rows are merged (lit if any is lit): 64×16 cells fit 80×24."""
    px = frame_pixels(frame_b64)
    chars = {(0, 0): " ", (1, 0): "▀", (0, 1): "▄", (1, 1): "█"}

    def lit(x: int, y: int) -> int:
        return max(max(row[x:x + step]) for row in px[y:y + vstep])

    return ["".join(chars[(lit(x, y), lit(x, y + vstep))] for x in range(0, WIDTH, step))
            for y in range(0, HEIGHT, 2 * vstep)]
