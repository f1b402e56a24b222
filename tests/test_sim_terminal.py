"""`hcp-sim device` and `hcp-sim demo` driven as a person would: in a pseudo-terminal,
keys in, screen text out; and nothing left running after Ctrl-C."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import socket
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pyte
import pytest

from drivers.sim import MAX_CLIENTS
from tests.support.device import ROOT, DeviceProcess

ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


class Pty:
    """A program on a pseudo-terminal: `send` keys, `expect` text (ANSI codes removed)."""

    def __init__(self, argv: list[str], cwd: Path, cols: int = 140, rows: int = 50) -> None:
        pid, fd = pty.fork()
        if pid == 0:  # child
            os.chdir(cwd)
            env = dict(os.environ, PYTHONPATH=str(cwd), COLUMNS=str(cols), LINES=str(rows),
                       TERM="xterm")
            os.execvpe(argv[0], argv, env)
        self.pid, self.fd = pid, fd
        self.cols, self.rows = cols, rows
        self.seen = b""
        self.status: int | None = None

    def send(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    def _read(self, timeout: float) -> None:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if ready:
            try:
                self.seen += os.read(self.fd, 65536)
            except OSError:  # the child closed the terminal
                time.sleep(timeout)

    def text(self) -> str:
        return ANSI.sub(b"", self.seen).decode("utf-8", "replace")

    def expect(self, pattern: str, timeout: float = 15.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        mark = len(self.text())
        while time.monotonic() < deadline:
            self._read(0.1)
            m = re.compile(pattern).search(self.text(), mark)
            if m:
                return m
        raise AssertionError(f"{pattern!r} not seen in:\n{self.text()[-3000:]}")

    def display(self) -> str:
        """What the terminal shows now: everything written, played on a VT100 screen of
        this size (what scrolled off the top is gone, as for a person)."""
        screen = pyte.Screen(self.cols, self.rows)
        pyte.ByteStream(screen).feed(self.seen)
        return "\n".join(line.rstrip() for line in screen.display)

    def expect_display(self, pattern: str, timeout: float = 15.0) -> str:
        """Wait until the terminal shows `pattern` (a regex over the display's lines)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._read(0.1)
            shown = self.display()
            if re.search(pattern, shown, re.MULTILINE):
                return shown
        raise AssertionError(f"{pattern!r} not on the screen:\n{self.display()}")

    def wait(self, timeout: float = 15.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._read(0.05)
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
                return self.status
        raise AssertionError(f"still running after {timeout} s:\n{self.text()[-2000:]}")

    def close(self) -> None:
        if self.status is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        os.close(self.fd)


def descendants(pid: int) -> set[int]:
    """Every process below `pid`, from /proc (children re-parented by setpgrp included)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents[int(entry)] = ppid
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def term_factory() -> Iterator[list[Pty]]:
    terms: list[Pty] = []
    yield terms
    for t in terms:
        t.close()


def test_device_simulator_in_a_terminal(tmp_path: Path, term_factory: list[Pty]) -> None:
    t = Pty([sys.executable, "-m", "simulator.cli", "device", "--data-dir", str(tmp_path),
             "--broker", "127.0.0.1:9"], ROOT)
    term_factory.append(t)
    t.expect(r"screen: idle .*欢迎")
    assert "▀" in t.text() or "█" in t.text(), "the OLED is drawn with half blocks"
    t.send("c")
    t.expect(r"screen: prompt\s+case \d+ \| .*请您对本次服务进行评价")
    t.send("2")
    t.expect(r"screen: reasons .*服务态度")
    t.send("5")
    t.expect(r"screen: thanks \| 感谢您的评价")
    t.expect(r"← rated \d+ 2 不满意")
    t.send("q")
    assert t.wait() == 0
    assert "stopped" in t.text()


def test_device_simulator_fits_an_80x24_terminal(tmp_path: Path,
                                                  term_factory: list[Pty]) -> None:
    t = Pty([sys.executable, "-m", "simulator.cli", "device", "--data-dir", str(tmp_path),
             "--broker", "127.0.0.1:9"], ROOT, cols=80, rows=24)
    term_factory.append(t)
    t.expect_display(r"^screen: idle")
    t.send("c")
    t.send("4")
    shown = t.expect_display(r"← rated \d+ 4 满意")
    lines = shown.splitlines()
    # The key help on top, the merged OLED in its box, the screen text and the status.
    assert lines[0].startswith("1-5 评价键") and "q 退出" in lines[0], shown
    assert lines[1].startswith("┌─ hcp-sim device") and lines[18].startswith("└"), shown
    assert any(line.startswith("broker ") and "backlog" in line for line in lines), shown
    assert any(ch in shown for ch in "▀▄█"), "the OLED is drawn"
    t.send("q")
    assert t.wait() == 0


def test_attach_drives_a_running_sim_daemon_and_leaves_it_running(
        tmp_path: Path, term_factory: list[Pty]) -> None:
    device = DeviceProcess(tmp_path / "device").start()
    try:
        t = Pty([sys.executable, "-m", "simulator.cli", "device", "--attach",
                 str(device.data_dir)], ROOT, cols=80, rows=24)
        term_factory.append(t)
        t.expect_display(r"^screen: idle")
        assert "(attached)" in t.display() and "q 离开" in t.display()
        t.send("4")
        t.expect_display(r"^screen: thanks")
        t.expect_display(r"backlog 1")   # the broker is away: the rating waits
        t.send("c")   # the window system is the daemon's own peer, not ours
        t.expect_display(r"c x p l are off")
        t.send("q")
        assert t.wait() == 0
        assert "detached; the evaluator of" in t.text()
        assert device.proc is not None and device.proc.poll() is None, "it keeps running"
        assert device.sim is not None
        device.sim.request_status()
        status = device.sim.wait_for(lambda e: e.get("ev") == "status")
        assert status is not None and status["backlog"] == 1
    finally:
        device.close()

    nobody = Pty([sys.executable, "-m", "simulator.cli", "device", "--attach",
                  str(device.data_dir)], ROOT)
    term_factory.append(nobody)
    assert nobody.wait() == 1
    assert f"no running sim daemon at {device.data_dir / 'sim.sock'}" in nobody.text()


def test_attach_turned_away_says_why(tmp_path: Path, term_factory: list[Pty]) -> None:
    """A daemon whose sim socket has all the clients it takes: the terminal says the
    daemon's reason, not that it stopped."""
    device = DeviceProcess(tmp_path / "device").start()
    others: list[socket.socket] = []
    try:
        assert device.sim is not None   # the test's own client is one
        for _ in range(MAX_CLIENTS - 1):
            others.append(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
            others[-1].connect(str(device.data_dir / "sim.sock"))
        t = Pty([sys.executable, "-m", "simulator.cli", "device", "--attach",
                 str(device.data_dir)], ROOT, cols=100, rows=30)
        term_factory.append(t)
        t.expect_display(r"turned this terminal away: busy: 32 clients")
        t.wait()
        assert device.proc is not None and device.proc.poll() is None, "it keeps running"
    finally:
        for other in others:
            other.close()
        device.close()


def test_demo_counts_a_rating_and_leaves_nothing_behind(tmp_path: Path,
                                                        term_factory: list[Pty]) -> None:
    t = Pty([sys.executable, "-m", "simulator.cli", "demo", "--dir", str(tmp_path)], ROOT,
            cols=80, rows=24)
    term_factory.append(t)
    shown = t.expect_display(r"^screen: idle", timeout=40)
    # In an 80×24 terminal the keys and the URLs stay on screen with the device.
    assert "q 退出" in shown.splitlines()[0], shown
    found = re.search(r"^hall dashboard (http://127\.0\.0\.1:\d+/)$", shown, re.M)
    assert found, shown
    # The dashboard the demo points at is the city platform's, and it answers.
    with urllib.request.urlopen(found.group(1), timeout=10) as page:
        assert "评价" in page.read().decode("utf-8")
    assert re.search(r"^bridge metrics http://127\.0\.0\.1:\d+/metrics$", shown, re.M), shown
    children = descendants(t.pid)
    assert len(children) >= 4, "broker, platform, bridge and the device daemon"
    t.send("c")
    t.expect(r"screen: prompt")
    t.send("4")
    t.expect_display(r"platform 1\b", timeout=20)
    t.send("\x03")  # Ctrl-C
    assert t.wait(20) == 0
    assert "the platform counted 1 rating" in t.text()
    survivors = [p for p in children if alive(p)]
    assert not survivors, f"left running: {survivors}"


def test_a_killed_demo_leaves_nothing_behind(tmp_path: Path, term_factory: list[Pty]) -> None:
    """SIGKILL gives the demo no chance to stop its children: the kernel must (the
    private broker used to outlive it, holding its port)."""
    t = Pty([sys.executable, "-m", "simulator.cli", "demo", "--dir", str(tmp_path)], ROOT)
    term_factory.append(t)
    t.expect(r"screen: idle", timeout=40)
    children = descendants(t.pid)
    assert len(children) >= 4, "broker, platform, bridge and the device daemon"
    os.kill(t.pid, signal.SIGKILL)
    t.wait(20)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(alive(p) for p in children):
        time.sleep(0.1)
    survivors = [(p, _cmdline(p)) for p in children if alive(p)]
    assert not survivors, f"left running after the demo was killed: {survivors}"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "?"


def test_demo_runs_with_a_colour_touch_screen(tmp_path: Path,
                                              term_factory: list[Pty]) -> None:
    """`./hcp demo --size 800x480`: the 7-inch panel in the terminal, rated end to end."""
    t = Pty([sys.executable, "-m", "simulator.cli", "demo", "--dir", str(tmp_path),
             "--size", "800x480", "--mute"], ROOT, cols=140, rows=50)
    term_factory.append(t)
    t.expect_display(r"^screen: idle", timeout=40)
    assert b"38;2;" in t.seen, "drawn in 24-bit colour"
    t.send("c")
    t.expect_display(r"^screen: prompt .*非常满意")
    t.send("4")
    t.expect_display(r"platform 1\b", timeout=20)
    t.send("q")
    assert t.wait(20) == 0
    assert "the platform counted 1 rating" in t.text()
