"""The offline installers, built for real (`./hcp test --slow`): the amd64 packages and
the arm64 device package, looked at with `dpkg-deb -I/-c` and `file`; then the whole
install, upgrade and purge on a fresh Debian bookworm (packaging/check-install.sh in
`../shared/tools/fresh-debian`, about eight minutes) where that tool can run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FRESH_DEBIAN = ROOT.parent / "shared/tools/fresh-debian"

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")]


def build(out: Path, *args: str) -> None:
    done = subprocess.run([sys.executable, str(ROOT / "packaging/build.py"), "--out", str(out),
                           "--no-font", *args], capture_output=True, text=True, timeout=900,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    build(out, "--arch", "amd64")
    build(out, "--arch", "arm64", "--only", "hcp-device")
    return out


def deb(dist: Path, package: str, arch: str) -> Path:
    found = list(dist.glob(f"{package}_*_{arch}.deb"))
    assert len(found) == 1, sorted(p.name for p in dist.iterdir())
    return found[0]


def field(path: Path, name: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(path), name], capture_output=True,
                          text=True, check=True).stdout.strip()


def contents(path: Path) -> dict[str, str]:
    """Path in the package -> its dpkg-deb -c line (mode, owner, link target)."""
    lines = subprocess.run(["dpkg-deb", "-c", str(path)], capture_output=True, text=True,
                           check=True).stdout.splitlines()
    return {line.split()[5].removeprefix("."): line for line in lines}


def control_file(path: Path, name: str) -> str:
    return subprocess.run(["dpkg-deb", "-I", str(path), name], capture_output=True,
                          text=True, check=True).stdout


def test_control_fields_follow_debian(dist: Path) -> None:
    device, server = deb(dist, "hcp-device", "amd64"), deb(dist, "hcp-server", "amd64")
    version = field(device, "Version")
    assert device.name == f"hcp-device_{version}_amd64.deb"
    for path in (device, server):
        assert field(path, "Architecture") == "amd64"
        depends = field(path, "Depends")
        assert "python3 (>= 3.11)" in depends and "python3 (<< 3.12)" in depends
        assert "python3-venv" not in depends and "mosquitto" not in depends
        assert field(path, "Maintainer") and field(path, "Priority") == "optional"
        assert int(field(path, "Installed-Size")) > 1000
    assert "fonts-wqy-zenhei" in field(device, "Depends")
    assert field(server, "Recommends") == "mosquitto"
    assert field(device, "Recommends") == "alsa-utils"   # aplay, for the voice clips


def test_device_package_contents(dist: Path) -> None:
    path = deb(dist, "hcp-device", "amd64")
    files = contents(path)
    assert "/lib/systemd/system/hcp-device.service" in files
    assert "/usr/lib/sysusers.d/hcp-device.conf" in files
    assert files["/usr/bin/hcp-device"].endswith(
        "/usr/bin/hcp-device -> /opt/hcp/device/venv/bin/hcp-device")
    assert files["/etc/hcp/device.toml"].startswith("-rw-r-----")
    assert control_file(path, "conffiles").split() == ["/etc/hcp/device.toml"]
    for script in ("postinst", "prerm", "postrm"):
        assert control_file(path, script).startswith("#!/bin/sh")
    # Nothing of the outbox's folder: dpkg must never own (and so replace) the data.
    assert not [f for f in files if f.startswith("/var/")]
    wheels = [f for f in files if f.startswith("/opt/hcp/device/wheels/")]
    names = {Path(w).name.split("-")[0].lower() for w in wheels if w.endswith(".whl")}
    assert {"hcp_evaluator", "paho_mqtt", "pyserial", "gpiozero", "luma_oled", "tinydb",
            "pillow", "lgpio", "pip"} <= names
    assert not {"prometheus_client", "psycopg"} & names


def test_server_package_contents(dist: Path) -> None:
    path = deb(dist, "hcp-server", "amd64")
    files = contents(path)
    for unit in ("hcp-bridge", "hcp-bridge-watch", "hcp-bridge-expired"):
        assert f"/lib/systemd/system/{unit}.service" in files
    assert sorted(control_file(path, "conffiles").split()) == ["/etc/hcp/bridge.toml",
                                                               "/etc/hcp/watch.toml"]
    for command in ("hcp-bridge", "hcp-platform"):
        assert files[f"/usr/bin/{command}"].endswith(f"-> /opt/hcp/server/venv/bin/{command}")
    assert "/usr/share/doc/hcp-server/examples/mosquitto.acl" in files
    names = {Path(f).name.split("-")[0].lower() for f in files if f.endswith(".whl")}
    assert {"prometheus_client", "psycopg", "psycopg_binary", "chinese_calendar"} <= names
    assert "gpiozero" not in names


def test_requirements_pin_every_wheel_inside(dist: Path, tmp_path: Path) -> None:
    """postinst installs `-r requirements.txt --no-index`: a pin without its wheel (or
    a wheel without its pin) would fail only on the Pi."""
    subprocess.run(["dpkg-deb", "-x", str(deb(dist, "hcp-device", "amd64")), str(tmp_path)],
                   check=True)
    wheels = tmp_path / "opt/hcp/device/wheels"
    pins = {line.strip().lower().replace("_", "-")
            for line in (wheels / "requirements.txt").read_text().splitlines()}
    have = {"==".join(w.name.split("-")[:2]).lower().replace("_", "-")
            for w in wheels.glob("*.whl") if not w.name.startswith("pip-")}
    assert pins == have


def test_arm64_wheels_are_aarch64(dist: Path, tmp_path: Path) -> None:
    path = deb(dist, "hcp-device", "arm64")
    assert field(path, "Architecture") == "arm64"
    subprocess.run(["dpkg-deb", "-x", str(path), str(tmp_path)], check=True)
    wheels = list((tmp_path / "opt/hcp/device/wheels").glob("*.whl"))
    binary = [w for w in wheels if not w.name.endswith("-none-any.whl")]
    assert binary and all(re.search(r"_aarch64(\.|$)", w.stem) for w in binary), binary
    lgpio = next(w for w in binary if w.name.startswith("lgpio-"))
    with zipfile.ZipFile(lgpio) as z:
        so = next(n for n in z.namelist() if n.endswith(".so"))
        z.extract(so, tmp_path / "so")
    if shutil.which("file"):
        described = subprocess.run(["file", str(tmp_path / "so" / so)], capture_output=True,
                                   text=True, check=True).stdout
        assert "ARM aarch64" in described, described
    else:  # the ELF header's e_machine: 183 = EM_AARCH64
        header = (tmp_path / "so" / so).read_bytes()[:20]
        assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == 183


@pytest.mark.skipif(os.geteuid() != 0 or not FRESH_DEBIAN.exists(),
                    reason="fresh-debian needs root and ../shared/tools/fresh-debian")
# About 15 minutes for both: more than CI's budget for the whole slow step. Run them
# (HCP_FRESH_DEBIAN=1 ./hcp test --slow tests/test_package.py) before a release and after
# any change to packaging/ or docs/install.md; docs/packaging.md records the last run.
@pytest.mark.skipif(os.environ.get("HCP_FRESH_DEBIAN") != "1",
                    reason="set HCP_FRESH_DEBIAN=1 to install on a fresh Debian (~15 min)")
@pytest.mark.parametrize("script, last_line", [
    ("packaging/check-install.sh", "check-install: all steps passed"),
    ("packaging/check-install-doc.sh", "check-install-doc: all steps passed"),
], ids=["install-upgrade-purge", "install-md-broker-section"])
def test_on_a_fresh_debian(script: str, last_line: str) -> None:
    """Commits only (fresh-debian clones HEAD), as on CI."""
    done = subprocess.run([str(FRESH_DEBIAN), "bash", script], cwd=ROOT,
                          capture_output=True, text=True, timeout=1800, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    assert last_line in output, output[-6000:]


def test_our_wheel_carries_every_data_file(dist: Path, tmp_path: Path) -> None:
    """A package installs our wheel, not the work tree: a data file the code reads
    (an example config, a font table, a sound clip) must be in it, or pyproject.toml's
    package-data misses it and only the packaged install breaks."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    tracked = subprocess.run(["git", "ls-files", "common", "device", "drivers",
                              "broker_bridge", "simulator", "city_platform"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
    data = {f for f in tracked if not f.endswith(".py")}
    subprocess.run(["dpkg-deb", "-x", str(deb(dist, "hcp-device", "amd64")), str(tmp_path)],
                   check=True)
    wheel = next((tmp_path / "opt/hcp/device/wheels").glob("hcp_evaluator-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        inside = set(z.namelist())
    assert data and not data - inside, sorted(data - inside)
