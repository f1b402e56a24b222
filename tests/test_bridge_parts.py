"""The bridge's parts on their own: retry timing, the answer cache, systemd notify, the
config file, the platform client and worker against the reference platform, the CLI."""

from __future__ import annotations

import contextlib
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

from broker_bridge.cache import Answer, RecentAnswers
from broker_bridge.config import load_bridge_config
from broker_bridge.metrics import BridgeMetrics
from broker_bridge.platform_client import PlatformClient, PlatformError
from broker_bridge.sender import Batch, BatchAnswered, PlatformWorker, WorkerEvent
from common import sdnotify
from common.backoff import CAP_S, RETRY_AFTER_CAP_S, full_jitter, parse_retry_after
from common.configschema import ConfigError
from common.rating import parse_rating
from tests.support.bridge import REPO, toml_text
from tests.support.mosquitto import TestCA, free_port
from tests.support.platform import RunningPlatform, running_platform
from tests.support.ratings import encode, make_rating

# Retry timing -------------------------------------------------------------------------


def test_first_retry_within_0_2_s_then_doubling_up_to_the_cap() -> None:
    assert full_jitter(0, rand=lambda: 1.0) == pytest.approx(0.2)
    assert [full_jitter(n, rand=lambda: 1.0) for n in range(1, 5)] == pytest.approx(
        [0.4, 0.8, 1.6, 3.2])
    assert full_jitter(20, rand=lambda: 1.0) == CAP_S == 60
    assert full_jitter(10_000, rand=lambda: 1.0) == CAP_S
    assert full_jitter(5, rand=lambda: 0.0) == 0.0
    samples = [full_jitter(3) for _ in range(2000)]
    assert 0 <= min(samples) < 0.1 and 1.5 < max(samples) <= 1.6  # full jitter: spread out


def test_retry_after_seconds_and_http_dates() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after("600") == 600.0          # a maintenance window: as asked
    assert parse_retry_after("86400") == RETRY_AFTER_CAP_S == 3600.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(later, now=now.timestamp) == pytest.approx(30)
    earlier = format_datetime(now - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(earlier, now=now.timestamp) == 0.0


# Answer cache -------------------------------------------------------------------------


def test_cache_answers_the_same_device_until_the_ttl() -> None:
    cache = RecentAnswers(ttl_s=10, max_entries=100)
    cache.put("a" * 32, "dev-1", Answer("accepted", None), now=0)
    assert cache.get("a" * 32, "dev-1", now=9.9) == Answer("accepted", None)
    assert cache.get("a" * 32, "dev-2", now=1) is None  # another device: ask the platform
    cache.put("a" * 32, "dev-2", Answer("duplicate", None), now=1)
    assert cache.get("a" * 32, "dev-1", now=2) == Answer("accepted", None)  # not overwritten
    assert cache.get("a" * 32, "dev-1", now=10) is None
    assert len(cache) == 1


def test_cache_is_bounded_oldest_first() -> None:
    cache = RecentAnswers(ttl_s=100, max_entries=3)
    for n in range(5):
        cache.put(f"{n:032x}", "d", Answer("accepted", None), now=n)
    assert len(cache) == 3
    assert cache.get(f"{0:032x}", "d", now=5) is None
    assert cache.get(f"{4:032x}", "d", now=5) is not None
    off = RecentAnswers(ttl_s=0, max_entries=3)
    off.put("x", "d", Answer("accepted", None), now=0)
    assert len(off) == 0


def test_cache_forgets_expired_answers_as_new_ones_arrive() -> None:
    """Memory is bounded by the TTL too, not only by max_entries; an answer stored again
    lives from its new time."""
    cache = RecentAnswers(ttl_s=10, max_entries=1000)
    for n in range(5):
        cache.put(f"{n:032x}", "d", Answer("accepted", None), now=n)
    cache.put(f"{0:032x}", "d", Answer("duplicate", None), now=5)   # again: lives to 15
    cache.put(f"{9:032x}", "d", Answer("accepted", None), now=11.5)  # 1 expired at 11
    assert len(cache) == 5  # 2, 3, 4 (expire at 12, 13, 14), 0 (again at 5), 9
    assert cache.get(f"{1:032x}", "d", now=11.5) is None
    cache.put(f"{8:032x}", "d", Answer("accepted", None), now=14.5)
    assert len(cache) == 3  # 0, 9, 8
    assert cache.get(f"{0:032x}", "d", now=14.9) == Answer("duplicate", None)
    cache.put(f"{7:032x}", "d", Answer("accepted", None), now=30)
    assert len(cache) == 1


# systemd notify -----------------------------------------------------------------------


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> socket.socket:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    return sock


def test_sd_notify_sends_datagrams(notify_socket: socket.socket) -> None:
    assert sdnotify.notify("READY=1")
    assert notify_socket.recv(100) == b"READY=1"


def test_sd_notify_abstract_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"hcp-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.notify("STOPPING=1")
        assert sock.recv(100) == b"STOPPING=1"


def test_sd_notify_without_systemd_is_a_no_op(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    assert sdnotify.notify("READY=1") is False


def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert sdnotify.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")
    assert sdnotify.watchdog_interval() == 10.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert sdnotify.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_interval() == 10.0


# Config -------------------------------------------------------------------------------

MINIMAL: dict[str, dict[str, object]] = {"mqtt": {"host": "127.0.0.1"}, "platform": {"url": "http://127.0.0.1:8080/api"}}


def write_config(tmp_path: Path, sections: Mapping[str, Mapping[str, object]]) -> Path:
    path = tmp_path / "bridge.toml"
    path.write_text(toml_text(sections))
    return path


def test_defaults(tmp_path: Path) -> None:
    config = load_bridge_config(write_config(tmp_path, MINIMAL))
    assert config.mqtt.prefix == "hcp/v1" and config.mqtt.shared_group == "bridge"
    assert config.mqtt.client_id.startswith("hcp-bridge-")
    assert config.mqtt.receive_maximum >= config.platform.batch_max
    assert (config.platform.batch_max, config.platform.batch_wait_ms) == (100, 50)
    assert config.platform.timeout_s == 10.0 and config.platform.retry_cap_s == 60.0
    assert (config.listen_host, config.listen_port) == ("127.0.0.1", 9108)


def test_the_example_config_is_valid_and_shows_the_defaults(tmp_path: Path) -> None:
    example = load_bridge_config(REPO / "broker_bridge" / "bridge.example.toml")
    defaults = load_bridge_config(write_config(
        tmp_path, {"mqtt": {}, "platform": {"url": example.platform.url}}))
    assert example.mqtt.client_id == "hcp-bridge-1"
    assert replace(example.mqtt, client_id="") == replace(defaults.mqtt, client_id="")
    assert example.platform == defaults.platform
    assert (example.listen_host, example.listen_port, example.log_level) == (
        defaults.listen_host, defaults.listen_port, defaults.log_level)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t")
    path = write_config(tmp_path, {
        "mqtt": {"host": "broker", "prot": 1883, "prefix": "hcp/#", "receive_maximum": 10,
                 "username": "bridge"},
        "platform": {"url": "http://platform.example/api", "batch_max": 50,
                     "token_file": str(token), "timeout_s": "10"},
        "http": {"listen": "9108"},
        "extra": {},
    })
    with pytest.raises(ConfigError) as caught:
        load_bridge_config(path)
    problems = caught.value.problems
    text = "\n".join(problems)
    for expected in ("[extra]: unknown section", "[mqtt] prot: unknown key",
                     "[mqtt] prefix:", "[platform] timeout_s: must be a number",
                     "[http] listen: must be HOST:PORT", "[mqtt] receive_maximum:",
                     "[mqtt] username: needs password_file",
                     "[platform] token_file: the token would travel in clear text"):
        assert expected in text, expected
    assert all(p.startswith(str(path)) for p in problems)
    assert len(problems) == 8


def test_missing_files_are_named(tmp_path: Path) -> None:
    path = write_config(tmp_path, {
        "mqtt": {"tls": True, "ca_file": "/nonexistent/ca.crt", "username": "u",
                 "password_file": "/nonexistent/pw"},
        "platform": {"url": "https://p.example/api", "token_file": "/nonexistent/token"},
    })
    with pytest.raises(ConfigError) as caught:
        load_bridge_config(path)
    text = "\n".join(caught.value.problems)
    for name in ("ca.crt", "/nonexistent/pw", "/nonexistent/token"):
        assert name in text


# CLI ----------------------------------------------------------------------------------


def run_cli(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "broker_bridge", *args], cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                          text=True, timeout=timeout, check=False)


def test_cli_bad_config_exits_non_zero_with_one_line_per_problem(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"mqtt": {"port": 0, "colour": "blue"},
                                   "platform": {"url": "ftp://x"}})
    done = run_cli("run", "--config", str(path))
    assert done.returncode == 78
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith(str(path)) for line in lines)
    assert "Traceback" not in done.stderr
    missing = run_cli("run", "--config", str(tmp_path / "nope.toml"))
    assert missing.returncode == 78 and "file not found" in missing.stderr


def test_cli_unknown_subcommand_exits_2() -> None:
    done = run_cli("frobnicate")
    assert done.returncode == 2 and "unknown command" in done.stderr
    assert run_cli().returncode == 2
    helped = run_cli("--help")
    assert helped.returncode == 0 and "run" in helped.stdout


def test_cli_http_port_in_use_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        path = write_config(tmp_path, {**MINIMAL, "http": {"listen": f"127.0.0.1:{port}"}})
        done = run_cli("run", "--config", str(path))
    assert done.returncode != 0
    assert "[http] listen" in done.stderr and "Traceback" not in done.stderr


def test_cli_speaks_systemd_notify_and_stops_on_sigterm(tmp_path: Path,
                                                        notify_socket: socket.socket) -> None:
    path = write_config(tmp_path, {**MINIMAL, "mqtt": {"host": "127.0.0.1", "port": 9},
                                   "http": {"listen": f"127.0.0.1:{free_port()}"}})
    env = {**os.environ, "PYTHONPATH": str(REPO), "WATCHDOG_USEC": "400000"}
    env.pop("WATCHDOG_PID", None)
    process = subprocess.Popen([sys.executable, "-m", "broker_bridge", "run", "--config",
                                str(path)], cwd=REPO, env=env, stderr=subprocess.PIPE)
    try:
        messages = [notify_socket.recv(100) for _ in range(4)]
        assert messages[0] == b"READY=1"
        assert messages[1:] == [b"WATCHDOG=1"] * 3  # every 0.2 s, broker or not
        process.terminate()
        started = time.monotonic()
        assert process.wait(5) == 0
        assert time.monotonic() - started < 5
        while (message := notify_socket.recv(100)) == b"WATCHDOG=1":
            pass
        assert message == b"STOPPING=1"
    finally:
        process.kill()
        process.wait()


# Platform client and worker -----------------------------------------------------------


@pytest.fixture
def ratings() -> list[bytes]:
    return [encode(make_rating(f"421100-HG01-W0{n}")) for n in range(1, 4)]


def test_client_posts_a_batch_and_reads_one_result_per_rating(
        platform: RunningPlatform, ratings: list[bytes]) -> None:
    client = PlatformClient(platform.url, timeout_s=5)
    first = client.post_ratings(ratings)
    assert {r.status for r in first.values()} == {"accepted"} and len(first) == 3
    again = client.post_ratings(ratings[:1])
    assert [r.status for r in again.values()] == ["duplicate"]
    assert platform.control.counts()["total"] == 3
    client.close()


def test_client_survives_a_kept_alive_connection_closed_by_the_server(
        tmp_path: Path, ratings: list[bytes]) -> None:
    with running_platform(tmp_path / "p1") as platform:
        client = PlatformClient(platform.url, timeout_s=5)
        client.post_ratings(ratings[:1])
        port = platform.server.port
    # Same port, new server: the old kept-alive socket is dead.
    from simulator.platform import PlatformServer
    server = PlatformServer("127.0.0.1", port, tmp_path / "p2.db").start()
    try:
        assert len(client.post_ratings(ratings[1:])) == 2
    finally:
        server.shutdown()
        server.close()


@pytest.mark.parametrize(("status", "retryable"), [
    (503, True), (500, True), (429, True), (408, True), (400, False), (404, False),
    (401, False), (302, False)])
def test_client_classifies_errors(platform: RunningPlatform, ratings: list[bytes],
                                  status: int, retryable: bool) -> None:
    platform.control.chaos("error", status=status, retry_after="3", requests=1)
    client = PlatformClient(platform.url, timeout_s=5)
    with pytest.raises(PlatformError) as caught:
        client.post_ratings(ratings)
    assert caught.value.retryable is retryable
    assert caught.value.status == status and caught.value.retry_after == 3.0
    assert len(client.post_ratings(ratings)) == 3  # the same client goes on


def test_client_timeout_and_lost_answer_are_retryable(platform: RunningPlatform,
                                                      ratings: list[bytes]) -> None:
    client = PlatformClient(platform.url, timeout_s=0.3)
    platform.control.chaos("hang", requests=1)
    with pytest.raises(PlatformError) as caught:
        client.post_ratings(ratings)
    assert caught.value.retryable and "0.3 s" in caught.value.detail
    platform.control.chaos("drop", requests=1)
    with pytest.raises(PlatformError) as caught:
        client.post_ratings(ratings)
    assert caught.value.retryable
    assert platform.control.counts()["total"] == 3  # stored, the answer was lost
    answered = client.post_ratings(ratings)
    assert {r.status for r in answered.values()} == {"duplicate"}


def test_client_timeout_bounds_the_whole_answer_not_each_read(
        ratings: list[bytes]) -> None:
    """A platform that trickles its answer a byte every 0.1 s never lets one read time
    out; timeout_s must still end the request (it would have taken ~20 s here)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    stop = threading.Event()

    def trickle() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 200\r\n\r\n" + b" " * 200:
                if stop.wait(0.1):
                    return
                with contextlib.suppress(OSError):
                    conn.sendall(bytes([byte]))

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    client = PlatformClient(f"http://127.0.0.1:{server.getsockname()[1]}/api/ratings",
                            timeout_s=1.0)
    started = time.monotonic()
    try:
        with pytest.raises(PlatformError) as caught:
            client.post_ratings(ratings)
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        thread.join(5)
        server.close()
        client.close()
    assert caught.value.retryable and "no answer within 1 s" in caught.value.detail
    assert elapsed < 3, f"the request took {elapsed:.1f} s"


def test_client_refuses_to_trust_an_unknown_certificate(tmp_path: Path, test_ca: TestCA,
                                                        ratings: list[bytes]) -> None:
    with running_platform(tmp_path / "p", tls=test_ca.issue("platform"),
                          ca_file=test_ca.ca_file) as platform:
        assert platform.url.startswith("https://")
        trusted = PlatformClient(platform.url, timeout_s=5, ca_file=str(test_ca.ca_file))
        assert len(trusted.post_ratings(ratings)) == 3
        untrusted = PlatformClient(platform.url, timeout_s=5)
        with pytest.raises(PlatformError) as caught:
            untrusted.post_ratings(ratings)
        assert not caught.value.retryable and "certificate" in caught.value.detail


def run_worker(platform: RunningPlatform, payloads: list[bytes], **options: float
               ) -> tuple[WorkerEvent, float, BridgeMetrics]:
    events: queue.SimpleQueue[WorkerEvent] = queue.SimpleQueue()
    jobs: queue.SimpleQueue[Batch | None] = queue.SimpleQueue()
    metrics = BridgeMetrics()
    stopping = threading.Event()
    worker = PlatformWorker("w", PlatformClient(platform.url, timeout_s=2), jobs, events.put,
                            metrics, stopping, options.get("client_error_retry_s", 60.0))
    worker.start()
    started = time.monotonic()
    jobs.put(Batch(1, [parse_rating(p) for p in payloads]))
    try:
        event = events.get(timeout=30)
    finally:
        stopping.set()
        jobs.put(None)
    return event, time.monotonic() - started, metrics


def retries(metrics: BridgeMetrics) -> float | None:
    return metrics.registry.get_sample_value("hcp_bridge_platform_retries_total")


def test_worker_honours_retry_after(platform: RunningPlatform, ratings: list[bytes]) -> None:
    platform.control.chaos("error", status=429, retry_after="2", requests=1)
    event, took, metrics = run_worker(platform, ratings)
    assert isinstance(event, BatchAnswered) and len(event.results) == 3
    assert 2.0 <= took < 4.0
    assert retries(metrics) == 1


def test_worker_retries_a_flaky_platform_until_every_rating_is_answered(
        platform: RunningPlatform, ratings: list[bytes]) -> None:
    platform.control.chaos("error", status=503, requests=4)
    event, took, metrics = run_worker(platform, ratings)
    assert isinstance(event, BatchAnswered)
    assert {r.status for r in event.results.values()} == {"accepted"}
    assert retries(metrics) == 4
    assert took < 0.2 + 0.4 + 0.8 + 1.6 + 1.0  # backoff ceilings of the first 4 retries


def test_worker_sends_halves_to_a_platform_that_refuses_big_requests(tmp_path: Path) -> None:
    payloads = [encode(make_rating(f"421100-HG01-W0{n % 3 + 1}")) for n in range(10)]
    with running_platform(tmp_path, max_batch=3) as platform:
        event, _, metrics = run_worker(platform, payloads)
        assert isinstance(event, BatchAnswered) and len(event.results) == 10
        assert platform.control.counts()["total"] == 10
        assert retries(metrics) == 3  # 10 -> 5 + 5 -> (2 + 3) + (2 + 3)
