"""The code stays ruff clean and `mypy --strict` clean, everywhere (docs/architecture.md)."""

from __future__ import annotations

import subprocess
import sys

from tests.support.device import ROOT

PACKAGES = ["common", "device", "drivers", "broker_bridge", "city_platform", "simulator",
            "packaging", "bench", "tests"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, check=False)


def test_ruff_finds_nothing() -> None:
    done = run("ruff", "check", *PACKAGES)
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_strict_finds_nothing() -> None:
    done = run("mypy", *PACKAGES)
    assert done.returncode == 0, done.stdout + done.stderr
