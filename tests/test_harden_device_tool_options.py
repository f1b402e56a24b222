"""Options that cannot work together are said at once, in one line (exit 2), instead of
one of them being silently ignored: a password without the user it is for, a screen
asked of a demo that runs no evaluator."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.device import ROOT
from tests.support.mosquitto import Mosquitto, free_port


def run(tmp_path: Path, *args: str, timeout: float = 30) -> tuple[int, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), TMPDIR=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-m", "simulator.cli", *args], cwd=ROOT,
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)   # the demo stops what it started on Ctrl-C
        proc.communicate(timeout=30)
        pytest.fail(f"still running after {timeout} s: the options were taken")
    return proc.returncode, err


def one_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "password"
    path.write_text("secret\n", encoding="utf-8")
    return path


def test_monitor_refuses_a_password_file_without_a_username(
        tmp_path: Path, password_file: Path) -> None:
    code, err = run(tmp_path, "monitor", "--once", "--wait", "0", "--broker",
                    f"127.0.0.1:{free_port()}", "--password-file", str(password_file))
    assert code == 2
    line = one_line(err)
    assert line.startswith("hcp-sim monitor: ")
    assert "--password-file" in line and "--username" in line


def test_monitor_takes_a_password_file_with_its_username(
        tmp_path: Path, password_file: Path, mosquitto: Mosquitto) -> None:
    code, err = run(tmp_path, "monitor", "--once", "--wait", "0.2", "--broker",
                    f"127.0.0.1:{mosquitto.port}", "--username", "tech",
                    "--password-file", str(password_file))
    assert code == 0, err


def test_fleet_refuses_a_password_file_without_a_username(
        tmp_path: Path, password_file: Path) -> None:
    code, err = run(tmp_path, "fleet", "--devices", "1", "--count", "1", "--broker",
                    f"127.0.0.1:{free_port()}", "--connect-timeout", "1",
                    "--password-file", str(password_file))
    assert code == 2
    assert "Traceback" not in err, err
    last = err.splitlines()[-1]
    assert "--password-file" in last and "--username" in last


@pytest.mark.parametrize("option", [["--web", "0"], ["--size", "800x480"]])
def test_demo_refuses_a_screen_option_with_no_ui(tmp_path: Path, option: list[str]) -> None:
    workdir = tmp_path / "demo"
    code, err = run(tmp_path, "demo", "--no-ui", "--dir", str(workdir), *option,
                    timeout=20)
    assert code == 2
    line = one_line(err)
    assert line.startswith("hcp-sim demo: ")
    assert option[0] in line and "--no-ui" in line
    assert not workdir.exists()   # nothing started
