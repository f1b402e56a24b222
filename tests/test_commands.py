"""What every command of the product does the same way: `--version`, a clear word for an
unknown subcommand, and a quiet exit when the reader of its output goes away."""

from __future__ import annotations

import subprocess
import sys

import pytest

from common import __version__
from tests.support.device import ROOT

PROGRAMS = {"hcp-device": "device.cli", "hcp-bridge": "broker_bridge.cli",
            "hcp-sim": "simulator.cli"}


def run(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("prog", sorted(PROGRAMS))
def test_version_everywhere(prog: str) -> None:
    done = run(PROGRAMS[prog], "--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{prog} {__version__}"


@pytest.mark.parametrize("prog", ["hcp-bridge", "hcp-sim"])
def test_unknown_subcommand_names_itself_and_lists_the_commands(prog: str) -> None:
    done = run(PROGRAMS[prog], "frobnicate")
    assert done.returncode == 2
    assert "unknown command 'frobnicate'" in done.stderr and "commands:" in done.stderr


def test_a_closed_pipe_is_a_quiet_exit() -> None:
    """`hcp-sim window --help | head -1`: the reader leaves early; no traceback."""
    shell = (f"{sys.executable} -c 'import sys; from common.service import run_commands; "
             "sys.exit(run_commands(\"t\", {\"x\": (\"tests.support.spew\", \"\")}))' x "
             "| head -1")
    done = subprocess.run(["bash", "-o", "pipefail", "-c", shell], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.stdout == "line 0\n"
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    assert done.returncode == 0
