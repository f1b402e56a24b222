"""The pyserial link on real ports: loop://, a pty pair, socket:// and a socat pty that is
unplugged and plugged back in."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.serial_codec import MAX_LINE, Frame, decode_line, encode_frame
from device.ports import DriverError
from drivers.serial_link import WRITE_TIMEOUT_S, LineSplitter, PySerialLink
from tests.serial_helpers import Recorder, WindowServer, wait_until

CASE = {"type": "case_completed", "seq": 1, "case_id": "HB-2026-000123",
        "service_name": "不动产登记", "staff_name": "王晓梅"}


def start_link(link: PySerialLink, rec: Recorder) -> threading.Thread:
    """Start the link and return its reader thread (found by name among new threads)."""
    before = set(threading.enumerate())
    link.start(rec.on_line, rec.on_open)
    new = [t for t in threading.enumerate() if t not in before and t.name == "serial-reader"]
    assert len(new) == 1
    return new[0]


@pytest.fixture
def server() -> Iterator[WindowServer]:
    window = WindowServer()
    yield window
    window.close()


# -- the line splitter on its own -----------------------------------------------------

def test_splitter_joins_lines_split_across_chunks_and_keeps_carriage_return() -> None:
    splitter = LineSplitter()
    stream = b'{"a":1}*1234\r\n\n{"b":2}\nrest'
    lines = [line for i in range(len(stream)) for line in splitter.feed(stream[i:i + 1])]
    assert lines == [b'{"a":1}*1234\r', b"", b'{"b":2}']
    assert splitter.feed(b"\n") == [b"rest"]


def test_splitter_cuts_an_endless_line_once_then_resynchronises() -> None:
    splitter = LineSplitter()
    out = splitter.feed(b"x" * 10_000)
    out += splitter.feed(b"y" * 1_000_000)
    assert out == [b"x" * (MAX_LINE + 1)]
    assert splitter.feed(b"zzz\nnext\n") == [b"next"]


def test_splitter_cut_never_decodes_as_a_legal_frame() -> None:
    # Byte MAX_LINE + 1 is '\r' and the line goes on: the cut must still be too long
    # after the decoder drops a trailing '\r'.
    splitter = LineSplitter()
    out = splitter.feed(b"a" * MAX_LINE + b"\r" + b"tail" + b"\n")
    assert len(out) == 1 and len(out[0]) == MAX_LINE + 2
    result = decode_line(out[0])
    assert not isinstance(result, Frame) and result.error == "too_long"


def test_splitter_passes_a_maximal_crlf_line_whole() -> None:
    line = b"a" * MAX_LINE + b"\r"
    assert LineSplitter().feed(line + b"\n") == [line]


# -- loop:// ----------------------------------------------------------------------------

def test_loop_round_trip() -> None:
    link = PySerialLink("loop://", 115200)
    rec = Recorder()
    assert link.send(b"early\n") is False  # not started: nothing is open
    reader = start_link(link, rec)
    try:
        assert wait_until(lambda: rec.opens == [True])
        assert link.is_open
        frames = [{**CASE, "seq": n} for n in range(1, 6)] + [{"type": "ping", "seq": 6}]
        for frame in frames:
            assert link.send(encode_frame(frame)) is True
        assert wait_until(lambda: len(rec.lines) == len(frames))
        decoded = [decode_line(line) for line in rec.lines]
        assert [(f.type, f.seq) for f in decoded if isinstance(f, Frame)] == [
            (f["type"], f["seq"]) for f in frames]
        assert decoded[0] == Frame("case_completed", 1, {
            "case_id": "HB-2026-000123", "service_name": "不动产登记", "staff_name": "王晓梅"})
    finally:
        started = time.monotonic()
        link.close()
        assert time.monotonic() - started < 1.0
    assert not link.is_open
    assert link.send(encode_frame({"type": "ping", "seq": 7})) is False
    assert not reader.is_alive()


def test_a_failing_line_handler_does_not_stop_the_reader(
        caplog: pytest.LogCaptureFixture) -> None:
    link = PySerialLink("loop://", 115200)
    seen: list[bytes] = []

    def on_line(line: bytes) -> None:
        seen.append(line)
        if line == b"boom":
            raise RuntimeError("handler bug")

    link.start(on_line, lambda is_open: None)
    try:
        assert wait_until(lambda: link.is_open)
        with caplog.at_level(logging.ERROR, logger="drivers.serial_link"):
            link.send(b"boom\n")
            link.send(b"after\n")
            assert wait_until(lambda: seen == [b"boom", b"after"])
        assert any("handler failed" in r.getMessage() for r in caplog.records)
        assert all("boom" not in r.getMessage() for r in caplog.records)  # no line content
    finally:
        link.close()


def test_idle_link_uses_no_cpu() -> None:
    link = PySerialLink("loop://", 115200)
    reader = start_link(link, Recorder())
    try:
        assert wait_until(lambda: link.is_open) and reader.ident is not None
        reader_cpu = time.pthread_getcpuclockid(reader.ident)
        cpu = time.clock_gettime(reader_cpu)
        time.sleep(1.0)
        assert time.clock_gettime(reader_cpu) - cpu < 0.02
    finally:
        link.close()


def test_invalid_urls_are_errors_at_construction() -> None:
    for url in ("", "sockt://127.0.0.1:7000", "socket://127.0.0.1", "socket://host:abc"):
        with pytest.raises(DriverError):
            PySerialLink(url, 115200)
    # A device that is not there (yet) is not an error: it may be plugged in later.
    PySerialLink("/dev/ttyUSB-not-plugged-in", 115200)


def test_start_twice_is_an_error() -> None:
    link = PySerialLink("loop://", 115200)
    link.start(lambda line: None, lambda is_open: None)
    try:
        with pytest.raises(DriverError):
            link.start(lambda line: None, lambda is_open: None)
    finally:
        link.close()


# -- a pty pair ------------------------------------------------------------------------

def read_from(fd: int, want: int, timeout: float = 5.0) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while len(data) < want and time.monotonic() < deadline:
        try:
            data += os.read(fd, 65536)
        except BlockingIOError:
            time.sleep(0.01)
    return data


def test_pty_read_write_and_unplug() -> None:
    master, slave = os.openpty()
    path = os.ttyname(slave)
    os.set_blocking(master, False)
    link = PySerialLink(path, 115200, reopen_s=0.1)
    rec = Recorder()
    reader = start_link(link, rec)
    try:
        assert wait_until(lambda: rec.opens == [True])
        # The window writes a frame in three pieces and a second one with CRLF.
        first = encode_frame(CASE)
        for piece in (first[:5], first[5:30], first[30:]):
            os.write(master, piece)
            time.sleep(0.02)
        os.write(master, encode_frame({"type": "ping", "seq": 2})[:-1] + b"\r\n")
        assert wait_until(lambda: len(rec.lines) == 2)
        assert [decode_line(line) for line in rec.lines] == [
            decode_line(first[:-1]), Frame("ping", 2, {})]
        assert rec.lines[1].endswith(b"\r")

        # The evaluator's frames reach the window byte for byte (no newline translation).
        reply = encode_frame({"type": "ack", "seq": 1})
        assert link.send(reply) is True
        assert read_from(master, len(reply)) == reply

        # Unplug: the master side goes away, like a USB adapter pulled out.
        os.close(master)
        master = -1
        assert wait_until(lambda: rec.opens == [True, False])
        assert not link.is_open
        assert link.send(reply) is False
    finally:
        started = time.monotonic()
        link.close()
        assert time.monotonic() - started < 1.0
        os.close(slave)
        if master >= 0:
            os.close(master)
    assert not reader.is_alive()


def test_send_gives_up_instead_of_hanging_when_the_window_stops_reading() -> None:
    master, slave = os.openpty()
    link = PySerialLink(os.ttyname(slave), 115200)
    link.start(lambda line: None, lambda is_open: None)
    try:
        assert wait_until(lambda: link.is_open)
        frame = encode_frame({"type": "rated", "seq": 1, "pad": "x" * 4000})
        for _ in range(200):  # nobody reads the master: the pty buffer fills up
            started = time.monotonic()
            try:
                assert link.send(frame) is True
            except DriverError as e:
                assert "write failed" in str(e)
                break
        else:
            pytest.fail("200 frames of 4 KB went into a pty nobody reads")
        assert time.monotonic() - started < 1.5
        # Within STALL_S of a failed write, writes fail at once: a flood of frames to
        # answer cannot hold the daemon's loop a write timeout each.
        started = time.monotonic()
        for _ in range(50):
            with pytest.raises(DriverError):
                link.send(frame)
        assert time.monotonic() - started < WRITE_TIMEOUT_S
    finally:
        link.close()
        os.close(master)
        os.close(slave)


# -- socket:// ---------------------------------------------------------------------------

def test_socket_peer_lost_and_back(server: WindowServer,
                                   caplog: pytest.LogCaptureFixture) -> None:
    server.listen()
    link = PySerialLink(server.url, 115200, reopen_s=0.1)
    rec = Recorder()
    caplog.set_level(logging.INFO, logger="drivers.serial_link")
    link.start(rec.on_line, rec.on_open)
    try:
        conn = server.accept()
        assert wait_until(lambda: rec.opens == [True])
        conn.sendall(encode_frame({"type": "ping", "seq": 1}))
        assert wait_until(lambda: len(rec.lines) == 1)
        assert link.send(b"pong 1\n")
        assert server.recv_until(b"\n") == b"pong 1\n"

        # The peer dies in the middle of a frame.
        conn.sendall(b'{"type":"pi')
        time.sleep(0.1)
        server.drop_client()
        assert wait_until(lambda: rec.opens == [True, False])
        assert link.send(b"lost\n") is False

        conn = server.accept()
        assert wait_until(lambda: rec.opens == [True, False, True])
        conn.sendall(encode_frame({"type": "ping", "seq": 2}))
        assert wait_until(lambda: len(rec.lines) == 2)
        # The half frame from before the outage did not glue onto the next one.
        assert [decode_line(line) for line in rec.lines] == [
            Frame("ping", 1, {}), Frame("ping", 2, {})]
        assert link.send(b"pong 2\n")
        assert server.recv_until(b"\n") == b"pong 2\n"
    finally:
        link.close()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("lost" in m for m in messages) == 1
    assert any("open again" in m for m in messages)


def test_port_missing_at_start_comes_up_later_and_logs_once(
        server: WindowServer, caplog: pytest.LogCaptureFixture) -> None:
    link = PySerialLink(server.url, 115200, reopen_s=0.05)
    rec = Recorder()
    caplog.set_level(logging.INFO, logger="drivers.serial_link")
    link.start(rec.on_line, rec.on_open)
    try:
        assert wait_until(lambda: rec.opens == [False])
        time.sleep(0.5)  # several retries
        assert rec.opens == [False]
        server.listen()
        conn = server.accept()
        assert wait_until(lambda: rec.opens == [False, True])
        conn.sendall(encode_frame({"type": "ping", "seq": 5}))
        assert wait_until(lambda: rec.lines == [encode_frame({"type": "ping", "seq": 5})[:-1]])
    finally:
        link.close()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "not available" in warnings[0].getMessage()


def test_close_is_prompt_while_waiting_for_a_missing_port(server: WindowServer) -> None:
    link = PySerialLink(server.url, 115200, reopen_s=30.0)
    rec = Recorder()
    reader = start_link(link, rec)
    assert wait_until(lambda: rec.opens == [False])
    started = time.monotonic()
    link.close()
    assert time.monotonic() - started < 1.0
    assert not reader.is_alive()


# -- a socat pty pair with stable names: unplug and plug back in --------------------------

class SocatPair:
    def __init__(self, directory: Path) -> None:
        self.device = directory / "ttyWIN-device"   # what the evaluator opens
        self.window = directory / "ttyWIN-window"   # the window PC's end
        self.proc: subprocess.Popen[bytes] | None = None

    def plug(self) -> None:
        self.proc = subprocess.Popen(
            ["socat", f"pty,raw,echo=0,link={self.device}",
             f"pty,raw,echo=0,link={self.window}"], stderr=subprocess.DEVNULL)
        assert wait_until(lambda: self.device.exists() and self.window.exists())

    def unplug(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(5)
        self.proc = None

    def write(self, data: bytes) -> None:
        fd = os.open(self.window, os.O_WRONLY | os.O_NOCTTY)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)


@pytest.mark.skipif(shutil.which("socat") is None, reason="socat not installed")
def test_device_path_unplugged_and_plugged_back(tmp_path: Path) -> None:
    pair = SocatPair(tmp_path)
    pair.plug()
    link = PySerialLink(str(pair.device), 115200, reopen_s=0.1)
    rec = Recorder()
    link.start(rec.on_line, rec.on_open)
    try:
        assert wait_until(lambda: rec.opens == [True])
        pair.write(encode_frame({"type": "ping", "seq": 1}))
        assert wait_until(lambda: len(rec.lines) == 1)

        pair.unplug()
        assert wait_until(lambda: rec.opens == [True, False])
        time.sleep(0.3)  # a few failed reopen attempts: the path is gone
        pair.plug()
        assert wait_until(lambda: rec.opens == [True, False, True])
        pair.write(encode_frame({"type": "ping", "seq": 2}))
        assert wait_until(lambda: len(rec.lines) == 2)
        assert [decode_line(line) for line in rec.lines] == [
            Frame("ping", 1, {}), Frame("ping", 2, {})]
    finally:
        link.close()
        if pair.proc is not None:
            pair.unplug()
