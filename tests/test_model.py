"""The delivery protocol's model (docs/model/delivery.pml) checked with spin: the protocol
as built holds, and each deliberately broken variant is caught, so the check can fail."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.device import ROOT

MODEL = ROOT / "docs" / "model" / "delivery.pml"
SPIN = shutil.which("spin")
CC = shutil.which("gcc") or shutil.which("cc")

pytestmark = pytest.mark.skipif(
    SPIN is None or CC is None,
    reason="spin and gcc are needed (./hcp test installs the Debian packages spin, gcc)")


def check(tmp_path: Path, *defines: str) -> str:
    """spin -a, compile the verifier, run an exhaustive search; its report."""
    assert SPIN is not None and CC is not None
    subprocess.run([SPIN, "-a", *defines, str(MODEL)], cwd=tmp_path, check=True,
                   capture_output=True, timeout=120)
    subprocess.run([CC, "-O2", "-DSAFETY", "-w", "-o", "pan", "pan.c"], cwd=tmp_path,
                   check=True, capture_output=True, timeout=300)
    done = subprocess.run(["./pan", "-m1000000"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600, check=False)
    report = done.stdout + done.stderr
    assert "max search depth too small" not in report, report
    return report


def errors(report: str) -> int:
    found = re.search(r"errors: (\d+)", report)
    assert found, report
    return int(found.group(1))


@pytest.mark.parametrize("defines", [
    pytest.param((), id="one-broker"),
    pytest.param(("-DHALL", "-DFAULTS=3"), id="hall-to-city"),
    pytest.param(("-DBROKEN_ACK_FIRST",), id="bridge-acks-first-still-safe"),
])
def test_the_protocol_holds_whatever_crashes_or_drops(tmp_path: Path,
                                                      defines: tuple[str, ...]) -> None:
    report = check(tmp_path, *defines)
    assert errors(report) == 0, report
    stored = re.search(r"(\d+) states, stored", report)
    assert stored and int(stored.group(1)) > 1000, "the search explored the faults"


@pytest.mark.parametrize("defines,claim", [
    pytest.param(("-DBROKEN_PUBACK",), "(stored[r]==1)", id="device-forgets-on-puback"),
    pytest.param(("-DHALL", "-DBROKEN_PUBACK", "-DFAULTS=3"), "(stored[r]==1)",
                 id="hall-device-forgets-on-puback"),
    pytest.param(("-DBROKEN_DEDUP",), "(stored[r]<=1)", id="platform-without-dedup"),
    pytest.param(("-DBROKEN_ID_ONLY",), "(stored[r]==1)", id="dedup-by-rating-id-alone"),
])
def test_each_broken_variant_is_caught(tmp_path: Path, defines: tuple[str, ...],
                                       claim: str) -> None:
    report = check(tmp_path, *defines)
    assert errors(report) >= 1, report
    assert "assertion violated" in report and claim in report, report
