"""Audit of `hcp-sim device`, `demo` and `platform` with odd command lines, and of Ctrl-C
at any moment: one line naming the input and the reason, no traceback, and no temporary
directory left behind by a run that never started."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from simulator import cli, window

ROOT = Path(__file__).resolve().parent.parent


def run_sim(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    tmp = tmp_path / "tmp"
    tmp.mkdir(exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT), TMPDIR=str(tmp))
    return subprocess.run([sys.executable, "-m", "simulator.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


@pytest.fixture
def not_a_dir(tmp_path: Path) -> Path:
    path = tmp_path / "a-file"
    path.write_text("x")
    return path


@pytest.mark.parametrize("args, says", [
    (["--broker", "nohost"], "--broker"),
    (["--broker", "h:abc"], "--broker"),
    (["--broker", "h:99999"], "--broker"),
    (["--web", "99999"], "--web"),
    (["--web", "-5"], "--web"),
    (["--config", "{missing}"], "--config"),
    (["--config", "{not_toml}"], "--config"),
    (["--config", "{tmp}"], "--config"),
    (["--data-dir", "{not_a_dir}"], "--data-dir"),
])
def test_device_refuses_a_bad_command_line_in_one_line(tmp_path: Path, not_a_dir: Path,
                                                       args: list[str], says: str) -> None:
    not_toml = tmp_path / "bad.toml"
    not_toml.write_bytes(b"root:x:0:0\n\xff")
    args = [a.format(missing=tmp_path / "missing.toml", not_toml=not_toml, tmp=tmp_path,
                     not_a_dir=not_a_dir) for a in args]
    proc = run_sim(tmp_path, "device", "--mute", *args)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    assert says in proc.stderr.splitlines()[-1], proc.stderr
    # Nothing started, so nothing is kept: no empty hcp-sim-device-* directory.
    assert list((tmp_path / "tmp").iterdir()) == []


def test_demo_refuses_a_dir_that_is_a_file(tmp_path: Path, not_a_dir: Path) -> None:
    proc = run_sim(tmp_path, "demo", "--no-ui", "--dir", str(not_a_dir))
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    [message] = proc.stderr.splitlines()
    assert "--dir" in message and str(not_a_dir) in message


def test_platform_refuses_a_port_out_of_range(tmp_path: Path) -> None:
    proc = run_sim(tmp_path, "platform", "--db", str(tmp_path / "p.db"),
                   "--listen", "127.0.0.1:99999")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr, proc.stderr
    [message] = proc.stderr.splitlines()
    assert "--listen" in message and "99999" in message


@pytest.mark.parametrize("value", ["0", "-1", "100001"])
def test_platform_refuses_a_max_batch_out_of_range(tmp_path: Path, value: str) -> None:
    proc = run_sim(tmp_path, "platform", "--db", str(tmp_path / "p.db"),
                   "--listen", "127.0.0.1:0", "--max-batch", value)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr, proc.stderr
    [message] = proc.stderr.splitlines()
    assert "--max-batch" in message and value in message
    assert not (tmp_path / "p.db").exists()


def test_ctrl_c_that_a_command_does_not_catch_ends_it_quietly(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # E.g. `hcp-sim device` while it waits for its daemon to start, or any command while
    # Python is still importing it: Ctrl-C printed a traceback of 20 lines.
    def interrupted(_argv: list[str]) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(window, "main", interrupted)
    assert cli.main(["window", "--port", "loop://", "ping"]) == 130
    assert capsys.readouterr().err.strip() == "hcp-sim window: interrupted"


@pytest.mark.parametrize("after_s", [0.3, 1.0, 2.5])
def test_ctrl_c_while_the_device_starts_stops_it_and_names_its_directory(
        tmp_path: Path, after_s: float) -> None:
    import signal
    import time

    from tests.test_sim_terminal import Pty

    data_dir = tmp_path / "d"
    term = Pty([sys.executable, "-m", "simulator.cli", "device", "--mute", "--broker",
                "127.0.0.1:1", "--data-dir", str(data_dir)], ROOT)
    time.sleep(after_s)
    os.kill(term.pid, signal.SIGINT)
    deadline = time.monotonic() + 20
    status = None
    while time.monotonic() < deadline and status is None:
        term._read(0.1)
        pid, code = os.waitpid(term.pid, os.WNOHANG)
        status = code if pid else None
    for _ in range(5):
        term._read(0.05)
    assert status is not None, "still running 20 s after Ctrl-C"
    assert "Traceback" not in term.text(), term.text()[-2000:]
    assert os.waitstatus_to_exitcode(status) in (0, 130)
    if os.waitstatus_to_exitcode(status) == 0:   # import done: it says where its files are
        assert f"stopped; outbox and log in {data_dir}" in term.text()
    left = subprocess.run(["pgrep", "-f", str(data_dir / "device-sim.toml")],
                          capture_output=True, text=True).stdout
    assert left == ""


@pytest.mark.parametrize("option", ["--data-dir", "--password-file"])
def test_fleet_refuses_a_data_dir_or_password_file_it_cannot_use(
        tmp_path: Path, not_a_dir: Path, option: str) -> None:
    # --data-dir naming a file was a StorageError traceback once the devices were built;
    # a missing --password-file went unsaid (the devices just never connected).
    value = str(not_a_dir) if option == "--data-dir" else str(tmp_path / "missing")
    proc = run_sim(tmp_path, "fleet", "--devices", "1", "--count", "1", "--broker",
                   "127.0.0.1:1", "--connect-timeout", "1", "--username", "u", option, value)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert f"{option} {value}" in proc.stderr.splitlines()[-1]
