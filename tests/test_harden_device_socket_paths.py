"""A data directory too deep for the UNIX sockets the daemon binds in it (the kernel takes
at most 107 bytes of path): the tools refuse it up front in one line that names the path,
its length, the limit and the option to shorten (exit 2); the daemon says the same
instead of the kernel's bare "AF_UNIX path too long"."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device.control import StatusServer, status_socket_path
from device.ports import MAX_SOCKET_PATH, DriverError, socket_path_problem
from drivers.sim import SimServer
from tests.support.device import ROOT, device_config
from tests.support.mosquitto import Mosquitto

SHORT_ROOT = Path("/tmp")


def deep_dir(base: Path, socket_len: int, name: str = "sim.sock") -> Path:
    """A directory under `base` in which `name` has a path of exactly socket_len bytes."""
    pad = socket_len - len(os.fsencode(base)) - 2 - len(name)
    assert pad > 0
    return base / ("d" * pad)


def run(*args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    tmp.mkdir(exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT), TMPDIR=str(tmp))
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


# --- the rule itself ------------------------------------------------------------------


@given(st.integers(min_value=0, max_value=4), st.integers(min_value=0, max_value=130))
def test_the_limit_is_where_the_kernel_refuses(wide: int, extra: int) -> None:
    base = SHORT_ROOT / f"hcp-sock-{os.getpid()}"
    base.mkdir(exist_ok=True)
    # Wide characters count as their UTF-8 bytes, as the kernel counts them.
    path = base / ("办" * wide + "s" * extra + ".sock")
    problem = socket_path_problem(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
    except OSError as e:
        if "too long" not in str(e):
            raise
        fits = False
    else:
        fits = True
        os.unlink(path)
    finally:
        sock.close()
        base.rmdir()
    assert fits == (problem is None), (len(os.fsencode(path)), problem)
    if problem is not None:
        assert f"{len(os.fsencode(path))} bytes" in problem
        assert str(MAX_SOCKET_PATH) in problem


# --- the daemon -------------------------------------------------------------------------


def test_sim_server_names_the_path_its_length_and_the_limit(tmp_path: Path) -> None:
    path = deep_dir(tmp_path, MAX_SOCKET_PATH + 1) / "sim.sock"
    with pytest.raises(DriverError) as e:
        SimServer(path).open()
    message = str(e.value)
    assert str(path) in message
    assert f"{MAX_SOCKET_PATH + 1} bytes" in message and f"{MAX_SOCKET_PATH} bytes" in message
    assert "data_dir" in message
    # One byte less is bound.
    ok = SimServer(deep_dir(tmp_path, MAX_SOCKET_PATH) / "sim.sock")
    ok.open()
    ok.close()


def test_status_server_names_the_length_and_the_limit(tmp_path: Path) -> None:
    path = deep_dir(tmp_path, MAX_SOCKET_PATH + 3, "status.sock") / "status.sock"
    path.parent.mkdir()
    with pytest.raises(OSError) as e:
        StatusServer(path, dict).open()
    assert f"{MAX_SOCKET_PATH + 3} bytes" in str(e.value)
    assert "data_dir" in str(e.value)


def test_daemon_with_a_deep_sim_data_dir_says_why_in_one_line(tmp_path: Path) -> None:
    data_dir = deep_dir(tmp_path, 120)
    config = tmp_path / "device.toml"
    config.write_text(device_config(data_dir, "loop://"), encoding="utf-8")
    proc = run("-m", "device.cli", "run", "--config", str(config), tmp=tmp_path / "tmp")
    assert proc.returncode == 69, proc.stderr
    # The line that names the socket (the MQTT link, started meanwhile, may log after it)
    said = [line for line in proc.stderr.splitlines() if str(data_dir / "sim.sock") in line]
    assert said, proc.stderr
    assert "120 bytes" in said[-1] and f"{MAX_SOCKET_PATH} bytes" in said[-1]
    assert "data_dir" in said[-1]


# --- the tools ------------------------------------------------------------------------


@pytest.mark.parametrize("option, name", [("--data-dir", "status.sock"),
                                          ("--data-dir", "sim.sock"),
                                          ("--attach", "sim.sock")])
def test_device_tool_refuses_a_deep_data_dir(tmp_path: Path, option: str,
                                             name: str) -> None:
    data_dir = deep_dir(tmp_path, MAX_SOCKET_PATH + 1, name)
    proc = run("-m", "simulator.cli", "device", "--mute", option, str(data_dir),
               tmp=tmp_path / "tmp")
    assert proc.returncode == 2
    line = one_line(proc)
    assert line.startswith(f"hcp-sim device: {option}: ")
    assert str(data_dir / name) in line
    assert f"{MAX_SOCKET_PATH + 1} bytes" in line and f"{MAX_SOCKET_PATH} bytes" in line
    assert f"shorter {option}" in line
    assert not data_dir.exists()   # nothing made


def test_device_tool_refuses_a_deep_tmpdir_after_its_config(tmp_path: Path) -> None:
    tmp = deep_dir(tmp_path, 100, "")
    missing = tmp_path / "missing.toml"
    proc = run("-m", "simulator.cli", "device", "--mute", "--config", str(missing), tmp=tmp)
    assert "--config" in proc.stderr.splitlines()[-1]   # the config is said first
    proc = run("-m", "simulator.cli", "device", "--mute", tmp=tmp)
    assert proc.returncode == 2
    line = one_line(proc)
    assert "--data-dir (or TMPDIR)" in line and f"{MAX_SOCKET_PATH} bytes" in line
    assert list(tmp.iterdir()) == []   # its temporary directory removed


def test_demo_refuses_a_deep_dir_before_starting_anything(tmp_path: Path) -> None:
    workdir = deep_dir(tmp_path, MAX_SOCKET_PATH + 1 - len("/device"), "status.sock")
    proc = run("-m", "simulator.cli", "demo", "--mute", "--dir", str(workdir),
               tmp=tmp_path / "tmp")
    assert proc.returncode == 2
    line = one_line(proc)
    assert line.startswith("hcp-sim demo: --dir: ")
    assert str(workdir / "device" / "status.sock") in line
    assert "shorter --dir" in line
    assert not workdir.exists()


def test_fleet_binds_no_socket_and_takes_a_deep_data_dir(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    """The fleet's devices run in its own process without sockets: a deep --data-dir is
    no problem to it, and it is not refused."""
    data_dir = deep_dir(tmp_path, 200)
    proc = run("-m", "simulator.cli", "fleet", "--broker", f"127.0.0.1:{mosquitto.port}",
               "--devices", "1", "--count", "1", "--drain-timeout", "0.5", "--quiet",
               "--data-dir", str(data_dir), tmp=tmp_path / "tmp")
    assert "too long" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert (data_dir / "FLEET-0001").is_dir()


def test_status_socket_path_is_the_longest_the_daemon_binds(tmp_path: Path) -> None:
    assert len(str(status_socket_path(tmp_path))) > len(str(tmp_path / "sim.sock"))
