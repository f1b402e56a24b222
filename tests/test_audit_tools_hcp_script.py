"""Audit of the `./hcp` script: a typo or `--help` prints the usage at once (exit 2); it
must not create a virtualenv or install packages first."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("args", [[], ["--help"], ["help"], ["tset"], ["Demo"]])
def test_a_wrong_command_gets_the_usage_before_any_setup(tmp_path: Path,
                                                         args: list[str]) -> None:
    # A python that says yes to `-c 'import ensurepip, venv'` (so no system package is
    # missing on its account) and records any other use: making a venv, pip.
    log = tmp_path / "python-used"
    fake = tmp_path / "python3"
    fake.write_text(f'#!/bin/sh\n[ "$1" = -c ] && exit 0\necho "$@" >> {log}\nexit 1\n')
    fake.chmod(0o755)
    env = dict(os.environ, PYTHON=str(fake), HCP_VENV=str(tmp_path / "venv"))
    proc = subprocess.run([str(ROOT / "hcp"), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("usage: ./hcp demo"), proc.stderr
    assert "==>" not in proc.stderr
    assert not log.exists() and not (tmp_path / "venv").exists()
