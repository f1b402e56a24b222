"""`hcp-sim window` and simulator.windowlink against a fake evaluator, and the real daemon.

The fake evaluator decodes what arrives with common.serial_codec.decode_line (the daemon's
own decoder) and answers like SPEC §4 says; the tool runs as a real subprocess where its
exit code and printed lines are the point.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tty
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import serial

from common.serial_codec import Frame, crc16, decode_line, encode_frame, nak
from simulator import window
from simulator.windowlink import (
    LinkError,
    WindowLink,
    WindowServer,
    answer_to,
    inspect_line,
    outcome_of,
)

ROOT = Path(__file__).resolve().parent.parent
Answer = Callable[[Frame], list[dict[str, Any]]]


def evaluator_answers(frame: Frame) -> list[dict[str, Any]]:
    """Replies chosen by case_id, so each test says what it wants in the frame itself."""
    case_id = frame.fields.get("case_id", "")
    if case_id.startswith("DUP"):
        return [nak(frame.seq, "duplicate_case")]
    if case_id.startswith("SILENT"):
        return []
    replies: list[dict[str, Any]] = [{"type": "ack", "seq": frame.seq}]
    if case_id.startswith("RATE"):
        replies.append({"type": "rated", "seq": 901, "case_id": case_id, "level": 4,
                        "rating_id": "5f0c1d2e8a9b4c7d9e1f2a3b4c5d6e7f"})
    elif case_id.startswith("EXPIRE"):
        replies.append({"type": "expired", "seq": 902, "case_id": case_id})
    return replies


class FakeEvaluator:
    """Answers each line as the evaluator would and records every line it got."""

    def __init__(self, answer: Answer = evaluator_answers) -> None:
        self.answer = answer
        self.lines: list[bytes] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._buffer = b""

    def received(self) -> list[bytes]:
        with self._lock:
            return list(self.lines)

    def _feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        out: list[bytes] = []
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            with self._lock:
                self.lines.append(line)
            result = decode_line(line)
            if isinstance(result, Frame):
                out += [encode_frame(f) for f in self.answer(result)]
            elif result.nak is not None and result.seq is not None:
                out.append(encode_frame(nak(result.seq, result.nak)))
        return out


class TcpEvaluator(FakeEvaluator):
    """Reachable as socket://127.0.0.1:PORT, one connection after another."""

    def __init__(self, answer: Answer = evaluator_answers) -> None:
        super().__init__(answer)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.url = f"socket://127.0.0.1:{self._listener.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(0.1)
            self._buffer = b""
            with conn:
                while not self._stop.is_set():
                    try:
                        data = conn.recv(65536)
                    except TimeoutError:
                        continue
                    except OSError:
                        break
                    if not data:
                        break
                    for reply in self._feed(data):
                        conn.sendall(reply)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._listener.close()


class PtyEvaluator(FakeEvaluator):
    """Holds the master side of a pty; the tool opens `path`, the slave."""

    def __init__(self, answer: Answer = evaluator_answers) -> None:
        super().__init__(answer)
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.path = os.ttyname(self._slave)
        os.set_blocking(self.master, False)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        import select
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if not ready:
                continue
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            for reply in self._feed(data):
                os.write(self.master, reply)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for fd in (self.master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)


@pytest.fixture
def tcp_evaluator() -> Iterator[TcpEvaluator]:
    fake = TcpEvaluator()
    yield fake
    fake.close()


@pytest.fixture
def pty_evaluator() -> Iterator[PtyEvaluator]:
    fake = PtyEvaluator()
    yield fake
    fake.close()


def run_tool(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    return subprocess.run([sys.executable, "-m", "simulator.cli", "window", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True,
                          encoding="utf-8", timeout=timeout)


def wire_seq(line: bytes) -> int:
    result = decode_line(line)
    assert isinstance(result, Frame), result
    return result.seq


# --- sending one frame --------------------------------------------------------------

def test_ack_exits_0_with_a_correct_crc_on_the_wire_and_chinese_intact(
        tcp_evaluator: TcpEvaluator) -> None:
    proc = run_tool("--port", tcp_evaluator.url, "case_completed", "case_id=W-1",
                    "service_name=不动产登记 (转移)", "staff_name=王芳")
    assert proc.returncode == 0, proc.stderr
    [line] = tcp_evaluator.received()
    body, crc = line.rsplit(b"*", 1)
    assert crc == f"{crc16(body):04X}".encode()
    frame = decode_line(line)
    assert isinstance(frame, Frame) and frame.type == "case_completed"
    assert frame.fields["service_name"] == "不动产登记 (转移)"
    assert frame.fields["staff_name"] == "王芳"
    completed = datetime.fromisoformat(frame.fields["completed_at"])
    assert completed.utcoffset() is not None  # local time with its offset
    assert abs(completed.timestamp() - time.time()) < 60
    out = proc.stdout.splitlines()
    assert out[0] == (f"→ case_completed seq={frame.seq} case_id=W-1 "
                      f'service_name="不动产登记 (转移)" staff_name=王芳 '
                      f"completed_at={frame.fields['completed_at']} (CRC {crc.decode()})")
    assert out[1] == f"← ack seq={frame.seq}"
    assert proc.stderr == ""


def test_defaults_generate_a_case_id_and_a_fresh_seq_per_run(
        tcp_evaluator: TcpEvaluator, capsys: pytest.CaptureFixture[str]) -> None:
    assert window.main(["--port", tcp_evaluator.url, "case_completed"]) == 0
    assert window.main(["--port", tcp_evaluator.url, "case_completed"]) == 0
    first, second = (decode_line(line) for line in tcp_evaluator.received())
    assert isinstance(first, Frame) and isinstance(second, Frame)
    for frame in (first, second):
        assert re.fullmatch(r"SIM-\d{8}-\d{6}-[0-9a-f]{4}", frame.fields["case_id"])
    assert first.fields["case_id"] != second.fields["case_id"]
    assert first.seq != second.seq
    assert f"← ack seq={second.seq}" in capsys.readouterr().out


def test_explicit_seq_is_used(tcp_evaluator: TcpEvaluator,
                              capsys: pytest.CaptureFixture[str]) -> None:
    assert window.main(["--port", tcp_evaluator.url, "--seq", "4242", "ping"]) == 0
    assert [wire_seq(line) for line in tcp_evaluator.received()] == [4242]
    assert capsys.readouterr().out.splitlines()[-1] == "← ack seq=4242"


def test_nak_exits_1_and_explains_the_error(tcp_evaluator: TcpEvaluator) -> None:
    proc = run_tool("--port", tcp_evaluator.url, "case_completed", "case_id=DUP-7")
    assert proc.returncode == 1
    seq = wire_seq(tcp_evaluator.received()[0])
    assert (f"← nak seq={seq} error=duplicate_case (案件重复: this case was rated in the "
            "last 24 h or is pending)") in proc.stdout.splitlines()


def test_no_answer_exits_3_within_the_timeout(tcp_evaluator: TcpEvaluator) -> None:
    proc = run_tool("--port", tcp_evaluator.url, "--timeout", "0.5", "case_completed",
                    "case_id=SILENT-1")
    assert proc.returncode == 3
    seq = wire_seq(tcp_evaluator.received()[0])
    assert proc.stderr.splitlines() == [f"hcp-sim window: no answer to seq={seq} within 0.5 s"]
    # Timed in-process: interpreter start-up under load says nothing about the tool.
    started = time.monotonic()
    assert window.main(["--port", tcp_evaluator.url, "--timeout", "0.5", "case_completed",
                        "case_id=SILENT-2"]) == 3
    assert 0.5 <= time.monotonic() - started < 1.5


def test_json_output_parses_and_keeps_chinese(tcp_evaluator: TcpEvaluator) -> None:
    proc = run_tool("--port", tcp_evaluator.url, "--json", "--wait-rated", "case_completed",
                    "case_id=RATE-1", "service_name=不动产登记")
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    sent, ack, rated, result = records
    assert sent["dir"] == "out" and sent["frame"]["service_name"] == "不动产登记"
    assert sent["line"].encode() == tcp_evaluator.received()[0]
    assert sent["crc"] == sent["line"][-4:]
    assert ack["dir"] == "in" and ack["frame"] == {"type": "ack", "seq": sent["frame"]["seq"]}
    assert ack["error"] is None
    assert rated["frame"]["type"] == "rated" and rated["frame"]["level"] == 4
    assert result == {"result": "rated", "exit": 0}


def test_wait_rated_prints_the_level_label(tcp_evaluator: TcpEvaluator) -> None:
    proc = run_tool("--port", tcp_evaluator.url, "--wait-rated", "case_completed",
                    "case_id=RATE-2")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == (
        "← rated seq=901 case_id=RATE-2 level=4 (满意) "
        "rating_id=5f0c1d2e8a9b4c7d9e1f2a3b4c5d6e7f")


def test_wait_ends_with_exit_1_on_expired_and_3_without_outcome(
        tcp_evaluator: TcpEvaluator, capsys: pytest.CaptureFixture[str]) -> None:
    assert window.main(["--port", tcp_evaluator.url, "--wait", "5", "case_completed",
                        "case_id=EXPIRE-1"]) == 1
    assert capsys.readouterr().out.splitlines()[-1] == "← expired seq=902 case_id=EXPIRE-1"
    started = time.monotonic()
    assert window.main(["--port", tcp_evaluator.url, "--wait", "0.3", "case_completed",
                        "case_id=ACK-ONLY"]) == 3
    assert time.monotonic() - started < 2
    assert "neither rated nor expired for case ACK-ONLY within 0.3 s" in \
        capsys.readouterr().err


def test_bad_crc_is_sent_wrong_and_gets_no_answer(tcp_evaluator: TcpEvaluator) -> None:
    proc = run_tool("--port", tcp_evaluator.url, "--bad-crc", "--timeout", "0.5", "ping")
    assert proc.returncode == 3
    [line] = tcp_evaluator.received()
    rejected = decode_line(line)
    assert not isinstance(rejected, Frame) and rejected.error == "crc"
    body, crc = line.rsplit(b"*", 1)
    assert (f"(CRC {crc.decode()}, deliberately wrong: correct is {crc16(body):04X})"
            in proc.stdout)
    assert "a frame with a bad CRC gets no answer" in proc.stderr


def test_no_crc_sends_bare_json(tcp_evaluator: TcpEvaluator,
                                capsys: pytest.CaptureFixture[str]) -> None:
    assert window.main(["--port", tcp_evaluator.url, "--no-crc", "--timeout", "0.3",
                        "staff_login", "staff_id=S01", "staff_name=李娜"]) == 3
    [line] = tcp_evaluator.received()
    assert json.loads(line) == {"type": "staff_login", "seq": json.loads(line)["seq"],
                                "staff_id": "S01", "staff_name": "李娜"}
    assert "(no CRC)" in capsys.readouterr().out


def test_raw_lines_test_what_the_evaluator_rejects(
        tcp_evaluator: TcpEvaluator, capsys: pytest.CaptureFixture[str]) -> None:
    assert window.main(["--port", tcp_evaluator.url, "raw", '{"type":"refund","seq":7}',
                        "--add-crc"]) == 1
    body = b'{"type":"refund","seq":7}'
    assert tcp_evaluator.received() == [body + b"*" + f"{crc16(body):04X}".encode()]
    assert "← nak seq=7 error=unknown_type (未知类型" in capsys.readouterr().out
    # A non-string field, written as name:=JSON, is a bad_field.
    assert window.main(["--port", tcp_evaluator.url, "case_completed", "case_id:=12"]) == 1
    assert "error=bad_field" in capsys.readouterr().out


def test_over_a_pty(pty_evaluator: PtyEvaluator) -> None:
    proc = run_tool("--port", pty_evaluator.path, "cancel", "case_id=C-9")
    assert proc.returncode == 0, proc.stderr
    seq = wire_seq(pty_evaluator.received()[0])
    assert proc.stdout.splitlines()[-1] == f"← ack seq={seq}"


# --- errors: one line, exit 2 -------------------------------------------------------------

@pytest.mark.parametrize("port", ["/nonexistent/ttyUSB9", "socket://127.0.0.1:{closed}",
                                  "bogus://x"])
def test_a_bad_port_exits_2_with_one_line(port: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    proc = run_tool("--port", port.format(closed=closed), "ping")
    assert proc.returncode == 2
    assert proc.stdout == ""
    [message] = proc.stderr.splitlines()
    assert message.startswith("hcp-sim window: cannot open ")
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("args, says", [
    (["--port", "loop://", "case_complete"], "did you mean case_completed?"),
    (["--port", "loop://"], "missing frame type"),
    (["ping"], "--port"),
    (["--port", "loop://", "ping", "oops"], "expected field=value"),
    (["--port", "loop://", "--wait-rated", "ping"], "only applies to case_completed"),
])
def test_usage_errors_exit_2_with_one_line(args: list[str], says: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert window.main(args) == 2
    [message] = capsys.readouterr().err.splitlines()
    assert message.startswith("hcp-sim window: ") and says in message


def test_usage_error_from_the_command_line_has_no_traceback() -> None:
    proc = run_tool("--port", "loop://", "case_complete")
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1
    assert "Traceback" not in proc.stderr


# --- --listen -------------------------------------------------------------------------

def start_listener(path: str, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    proc = subprocess.Popen([sys.executable, "-m", "simulator.cli", "window", "--port", path,
                             "--listen", *args], cwd=ROOT, env=env, text=True,
                            encoding="utf-8", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # pyserial flushes a tty's input when it opens it: write only once it is listening.
    assert proc.stderr is not None
    assert proc.stderr.readline().startswith("listening on ")
    return proc


def read_lines(proc: subprocess.Popen[str], count: int, timeout: float = 10) -> list[str]:
    """The next `count` stdout lines of a running process, without hanging the test."""
    assert proc.stdout is not None
    stdout = proc.stdout
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(stdout.readline()
                                                          for _ in range(count)), daemon=True)
    reader.start()
    reader.join(timeout)
    assert not reader.is_alive(), f"only {len(lines)} of {count} lines within {timeout} s"
    return lines


@pytest.fixture
def window_pty() -> Iterator[tuple[int, str]]:
    """A pty whose master plays the window system writing to the monitored port."""
    master, slave = os.openpty()
    tty.setraw(slave)
    yield master, os.ttyname(slave)
    for fd in (master, slave):
        with contextlib.suppress(OSError):
            os.close(fd)


def test_listen_marks_a_bad_crc_and_decodes_good_frames(window_pty: tuple[int, str]) -> None:
    master, path = window_pty
    proc = start_listener(path, "--count", "3")
    good = encode_frame({"type": "case_completed", "seq": 1, "case_id": "A1",
                         "service_name": "不动产登记", "applicant_name": "张三"})
    bad_body = b'{"type":"ping","seq":2}'
    os.write(master, good + bad_body + b"*0000\n" + encode_frame({"type": "ack", "seq": 9}))
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 1  # something was rejected
    lines = out.splitlines()
    assert "✓ case_completed seq=1 case_id=A1 service_name=不动产登记" in lines[0]
    assert f"(CRC {good[-5:-1].decode()}) → ack" in lines[0]
    assert "ignored fields (never stored): applicant_name" in lines[0]
    assert (f"✗ CRC ping seq=2: CRC in frame 0000, computed {crc16(bad_body):04X} "
            "→ no answer") in lines[1]
    assert lines[2].strip() == 'line: {"type":"ping","seq":2}*0000'
    assert "✓ ack seq=9" in lines[3]
    assert lines[-1] == "── 3 line(s): 2 ok, 1 rejected (crc 1)"
    assert "\x1b[" not in out  # not a terminal: no colour codes


def test_listen_json_and_summary_on_ctrl_c(window_pty: tuple[int, str]) -> None:
    master, path = window_pty
    proc = start_listener(path, "--json")
    os.write(master, b'{"type":"pause","seq":3,"reason":"\xe5\x8d\x88\xe4\xbc\x91"}\n'
             + b"not json at all*1234\n" + encode_frame({"type": "resume", "seq": 4}))
    lines = read_lines(proc, 3)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=10)
    records = [json.loads(line) for line in lines + out.splitlines()]
    no_crc, garbage, resume, summary = records
    assert no_crc["error"] == "no_crc" and no_crc["answer"] == "no answer"
    assert no_crc["frame"]["reason"] == "午休"
    assert garbage["error"] == "crc" and garbage["crc"] == "1234"
    assert garbage["crc_computed"] == f"{crc16(b'not json at all'):04X}"
    assert resume["ok"] is True and resume["answer"] == "ack"
    assert summary == {"summary": {"lines": 3, "ok": 1, "rejected": {"no_crc": 1, "crc": 1}}}
    assert proc.returncode == 1


def test_listen_colours_only_on_a_terminal_without_no_color(
        monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal:
        def __init__(self) -> None:
            self.text = ""

        def isatty(self) -> bool:
            return True

        def write(self, s: str) -> int:
            self.text += s
            return len(s)

        def flush(self) -> None:
            pass

    bad = inspect_line(b'{"type":"ping","seq":2}*0000')
    monkeypatch.delenv("NO_COLOR", raising=False)
    coloured = Terminal()
    window.Output(False, coloured).listened(bad, window.judge(bad, True))  # type: ignore[arg-type]
    assert "\x1b[1;31m✗ CRC\x1b[0m" in coloured.text
    monkeypatch.setenv("NO_COLOR", "1")
    plain = Terminal()
    window.Output(False, plain).listened(bad, window.judge(bad, True))  # type: ignore[arg-type]
    assert "\x1b[" not in plain.text and "✗ CRC" in plain.text


def test_listen_escapes_control_characters_from_the_wire(
        window_pty: tuple[int, str]) -> None:
    master, path = window_pty
    proc = start_listener(path, "--count", "1")
    os.write(master, b"\x1b[2J\xff*0000\n")
    out, _ = proc.communicate(timeout=10)
    assert "\x1b" not in out and "\\x1b[2J\\xff*0000" in out


# --- windowlink: the reusable API ---------------------------------------------------------

def test_window_link_send_and_wait_for(pty_evaluator: PtyEvaluator) -> None:
    with WindowLink(pty_evaluator.path) as link:
        seq = link.send("case_completed", case_id="RATE-9", service_name="户籍办理")
        assert link.wait_for(outcome_of("RATE-9"), 2) == {
            "type": "rated", "seq": 901, "case_id": "RATE-9", "level": 4,
            "rating_id": "5f0c1d2e8a9b4c7d9e1f2a3b4c5d6e7f"}
        # The ack came first and is still there for whoever asks for it.
        assert link.wait_for(answer_to(seq), 0.1) == {"type": "ack", "seq": seq}
        assert link.exchange("ping", timeout=2) is not None
    frame = decode_line(pty_evaluator.received()[0])
    assert isinstance(frame, Frame) and frame.fields["service_name"] == "户籍办理"


def test_window_link_reports_a_lost_port(pty_evaluator: PtyEvaluator) -> None:
    with WindowLink(pty_evaluator.path) as link:
        pty_evaluator.close()
        started = time.monotonic()
        assert link.wait_for(lambda f: True, 5) is None
        assert time.monotonic() - started < 2
        assert link.lost is not None
        with pytest.raises(LinkError):
            link.send("ping")


def test_window_link_bad_port_raises_link_error() -> None:
    with pytest.raises(LinkError, match="cannot open /nonexistent/tty"):
        WindowLink("/nonexistent/tty")


def test_window_server_accepts_the_evaluator_and_re_accepts_after_a_reconnect() -> None:
    with WindowServer() as server:
        assert server.url.startswith("socket://127.0.0.1:")
        with pytest.raises(LinkError):
            server.send("ping")  # nobody connected yet
        evaluator = serial.serial_for_url(server.url, timeout=2)
        assert server.wait_connected(2)
        evaluator.write(encode_frame({"type": "hello", "seq": 1, "device_id": "D1",
                                      "version": "0.1.0"}))
        assert server.wait_for(lambda f: f["type"] == "hello", 2) == {
            "type": "hello", "seq": 1, "device_id": "D1", "version": "0.1.0"}
        seq = server.send("case_completed", case_id="X-1", service_name="社保")
        frame = decode_line(evaluator.readline().rstrip(b"\n"))
        assert isinstance(frame, Frame) and frame.seq == seq
        assert frame.fields == {"case_id": "X-1", "service_name": "社保"}
        evaluator.close()

        before = server.connections
        again = serial.serial_for_url(server.url, timeout=2)
        assert server.wait_connected(2, after=before)
        again.write(encode_frame({"type": "ack", "seq": seq}))
        assert server.wait_for(answer_to(seq), 2) == {"type": "ack", "seq": seq}
        server.send("ping")
        assert isinstance(decode_line(again.readline().rstrip(b"\n")), Frame)
        again.close()


def test_inspect_line_tells_the_rejects_apart() -> None:
    assert inspect_line(encode_frame({"type": "ack", "seq": 1}).rstrip(b"\n")).ok
    assert inspect_line(b'{"type":"ack","seq":1}', require_crc=False).ok
    assert inspect_line(b'{"type":"ack","seq":1}').error == "no_crc"
    assert inspect_line(b"[1,2]*" + f"{crc16(b'[1,2]'):04X}".encode()).error == "bad_frame"
    assert inspect_line(b"x" * 5000).error == "too_long"
    not_utf8 = b"\xff\xfe"
    assert inspect_line(not_utf8 + b"*" + f"{crc16(not_utf8):04X}".encode()).error == "utf8"


# --- against the real daemon ---------------------------------------------------------------

def _daemon_available() -> str | None:
    if shutil.which("socat") is None:
        return "socat is needed to link two ptys (./hcp test installs it)"
    return None


class SimScreen:
    """Reads the daemon's sim socket (SPEC §8): screen events in, key presses out."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self.sock.settimeout(0.2)
        self.buffer = b""

    def wait_screen(self, name: str, timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                event = json.loads(line)
                if event.get("ev") == "screen" and event.get("screen") == name:
                    return dict(event)
            try:
                self.buffer += self.sock.recv(65536)
            except TimeoutError:
                pass
        raise AssertionError(f"no {name} screen within {timeout} s")

    def press(self, level: int) -> None:
        self.sock.sendall(json.dumps({"op": "press", "level": level}).encode() + b"\n")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def daemon_on_pty(tmp_path: Path) -> Iterator[tuple[str, SimScreen]]:
    reason = _daemon_available()
    if reason:
        pytest.skip(reason)
    evaluator_end, window_end = tmp_path / "evaluator-tty", tmp_path / "window-tty"
    socat = subprocess.Popen(["socat", f"pty,raw,echo=0,link={evaluator_end}",
                              f"pty,raw,echo=0,link={window_end}"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 5
    while not (evaluator_end.exists() and window_end.exists()):
        assert time.monotonic() < deadline, "socat made no ptys"
        time.sleep(0.02)
    with socket.socket() as probe:  # a broker port nobody answers: ratings stay queued
        probe.bind(("127.0.0.1", 0))
        no_broker = probe.getsockname()[1]
    data_dir = tmp_path / "data"
    config = tmp_path / "device.toml"
    config.write_text(f"""
[device]
id = "421100-HG01-W03"
region_code = "421100"
hall_id = "HG01"
window_id = "W03"
window_name = "03号窗口 不动产登记"
data_dir = "{data_dir}"
[serial]
port = "{evaluator_end}"
[input]
kind = "sim"
[display]
kind = "sim"
[mqtt]
port = {no_broker}
[ui]
lockout_s = 0.0
thanks_s = 0.5
""", encoding="utf-8")
    daemon = subprocess.Popen([sys.executable, "-m", "device.cli", "run", "--config",
                               str(config)], cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    screen: SimScreen | None = None
    try:
        deadline = time.monotonic() + 15
        while not (data_dir / "sim.sock").exists():
            if daemon.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the daemon did not start: {daemon.stderr.read()}")  # type: ignore[union-attr]
            time.sleep(0.05)
        screen = SimScreen(data_dir / "sim.sock")
        screen.wait_screen("idle")
        yield str(window_end), screen
    finally:
        if screen is not None:
            screen.close()
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        socat.terminate()
        socat.wait(5)


def test_against_the_daemon_over_a_pty(daemon_on_pty: tuple[str, SimScreen]) -> None:
    port, screen = daemon_on_pty
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    tool = subprocess.Popen(
        [sys.executable, "-m", "simulator.cli", "window", "--port", port, "--json",
         "--wait", "20", "case_completed", "case_id=PTY-0001", "service_name=不动产登记"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        encoding="utf-8")
    prompt = screen.wait_screen("prompt")
    assert prompt["case_id"] == "PTY-0001" and "不动产登记" in prompt["text"]
    screen.press(4)
    out, err = tool.communicate(timeout=20)
    assert tool.returncode == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    seq = records[0]["frame"]["seq"]
    frames = [r["frame"] for r in records if r.get("dir") == "in"]
    assert {"type": "ack", "seq": seq} in frames
    [rated] = [f for f in frames if f["type"] == "rated"]
    assert rated["case_id"] == "PTY-0001" and rated["level"] == 4
    assert re.fullmatch(r"[0-9a-f]{32}", rated["rating_id"])
    assert records[-1] == {"result": "rated", "exit": 0}

    again = run_tool("--port", port, "case_completed", "case_id=PTY-0001")
    assert again.returncode == 1
    assert "error=duplicate_case (案件重复" in again.stdout

    corrupt = run_tool("--port", port, "--bad-crc", "--timeout", "1", "ping")
    assert corrupt.returncode == 3

    ping = run_tool("--port", port, "ping")
    assert ping.returncode == 0 and ping.stdout.splitlines()[-1].startswith("← ack seq=")


def test_interactive_sends_several_frames_on_one_port(tcp_evaluator: TcpEvaluator) -> None:
    commands = ("case_completed case_id=RATE-I service_name='不动产 登记'\n"
                "staff_login staff_id=S01 staff_name=李娜\n"
                "refund\n"
                'raw {"type":"ping","seq":77} --add-crc\n'
                "quit\n")
    proc = subprocess.run([sys.executable, "-m", "simulator.cli", "window", "--port",
                           tcp_evaluator.url, "--interactive"], cwd=ROOT, input=commands,
                          capture_output=True, text=True, encoding="utf-8", timeout=20)
    assert proc.returncode == 0, proc.stderr
    case, login, ping = (decode_line(line) for line in tcp_evaluator.received())
    assert isinstance(case, Frame) and case.fields["service_name"] == "不动产 登记"
    assert isinstance(login, Frame) and login.fields["staff_name"] == "李娜"
    assert isinstance(ping, Frame) and ping.seq == 77
    out = proc.stdout.splitlines()
    for seq in (case.seq, login.seq, 77):
        assert f"← ack seq={seq}" in out
    assert any(line.startswith("← rated seq=901 case_id=RATE-I level=4 (满意)") for line in out)
    assert "unknown frame type 'refund'" in proc.stderr


# --- one codec: what the tool reads and judges is what the daemon decides ------------------

def test_inspect_line_checks_what_spec_promises_in_the_evaluators_frames() -> None:
    good = [{"type": "rated", "seq": 3, "case_id": "C1", "level": 4,
             "rating_id": "5f0c1d2e8a9b4c7d9e1f2a3b4c5d6e7f"},
            {"type": "expired", "seq": 4, "case_id": "C1"},
            {"type": "nak", "seq": 5, "error": "queue_full"},
            {"type": "hello", "seq": 6, "device_id": "421100-HG01-W03", "version": "0.1.0"}]
    for frame in good:
        assert inspect_line(encode_frame(frame).rstrip(b"\n")).ok, frame
    bad = [({"type": "rated", "seq": 3, "case_id": "C1", "level": 7, "rating_id": "x"},
            "level must be an integer 1..5"),
           ({"type": "rated", "seq": 3, "case_id": "C1", "level": 4}, "rating_id missing"),
           ({"type": "expired", "seq": 4, "case_id": "C\n1"}, "case_id must be text"),
           ({"type": "nak", "seq": 5, "error": "gone_fishing"}, "error is not one of")]
    for frame, why in bad:
        item = inspect_line(encode_frame(frame).rstrip(b"\n"))
        assert (item.error, item.detail.startswith(why)) == ("bad_field", True), item
        assert window.judge(item, True) == window.Verdict(False, "bad_field", item.detail)


def test_listen_judges_text_and_numbers_as_the_evaluator_does() -> None:
    def verdict(frame: dict[str, Any]) -> window.Verdict:
        return window.judge(inspect_line(encode_frame(frame).rstrip(b"\n")), True)

    shown = verdict({"type": "case_completed", "seq": 1, "case_id": "A1",
                     "service_name": "不动产登记\r\n", "staff_name": "王晓梅"})
    assert shown.ok and shown.answer == "ack" and shown.normalised == ("service_name",)
    refused = verdict({"type": "case_completed", "seq": 2, "case_id": "A\n1"})
    assert (refused.ok, refused.answer) == (False, "nak bad_field")
    assert refused.detail.startswith("case_id contains a control")
    too_big = verdict({"type": "ping", "seq": 2**63})
    assert (too_big.ok, too_big.kind, too_big.answer) == (False, "bad_frame", "no answer")
    twice = window.judge(inspect_line(b'{"type":"cancel","seq":9,"case_id":"A","case_id":"B"}',
                                      False), False)
    assert (twice.answer, twice.detail) == ("nak bad_field", "case_id given twice")


def test_a_deliberately_wrong_crc_is_the_one_the_daemon_refuses() -> None:
    sent = window.build_request("ping", [], seq=5, crc="bad").encoded()
    assert sent.crc_sent is not None and sent.crc_sent != sent.crc_correct
    rejected = decode_line(sent.line.rstrip(b"\n"))
    assert not isinstance(rejected, Frame) and (rejected.error, rejected.nak) == ("crc", None)
    raw = window.build_request("raw", ['{"type":"ping","seq":6}'], add_crc=True).encoded()
    assert decode_line(raw.line.rstrip(b"\n")) == Frame("ping", 6, {})
