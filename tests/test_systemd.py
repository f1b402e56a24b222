"""The systemd units, sysusers file and example device config we ship, checked with
systemd's own tools: `systemd-analyze verify` (any output fails: unknown keys and bad
values are only warnings with exit 0), `systemd-analyze security --offline`, and
`systemd-sysusers` on a scratch root; and both daemons really running under the
units' MemoryDenyWriteExecute= rule.

verify runs with `--root` on a scratch copy of this machine's system units plus stub
programs at the units' ExecStart= paths (/opt/hcp/venv/bin/…): the units are checked
exactly as shipped, and nothing is written outside the test's temporary directory.
`./hcp test` (and so `.ci/run`) installs the `systemd` package when it is missing.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest

from device.config import parse_device_config
from tests.support.bridge import BridgeProcess
from tests.support.device import DeviceProcess
from tests.support.mosquitto import Mosquitto
from tests.support.platform import RunningPlatform
from tests.support.ratings import FleetPublisher, make_rating

ROOT = Path(__file__).resolve().parents[1]
SYSTEMD = ROOT / "systemd"
UNITS = sorted(SYSTEMD.glob("*.service"))
SYSTEM_UNITS = Path("/usr/lib/systemd/system")
ANALYZE = shutil.which("systemd-analyze")
SYSUSERS = shutil.which("systemd-sysusers")
needs_analyze = pytest.mark.skipif(ANALYZE is None,
                                   reason="systemd-analyze missing (./hcp test installs it)")

Unit = dict[str, dict[str, list[str]]]


def read_unit(path: Path) -> Unit:
    """Sections → key → every value in order (systemd keys repeat; an empty value
    resets the list, as systemd does for list settings)."""
    unit: Unit = {}
    section: dict[str, list[str]] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = unit.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        values = section.setdefault(key.strip(), [])
        if value.strip():
            values.append(value.strip())
        else:
            values.clear()
    return unit


def one(unit: Unit, section: str, key: str) -> str:
    values = unit[section].get(key, [])
    assert values, f"[{section}] {key}= missing"
    return values[-1]


def words(unit: Unit, section: str, key: str) -> list[str]:
    return [w for v in unit[section].get(key, []) for w in v.split()]


def seconds(value: str) -> float:
    """A systemd time span as used in our units: 10s, 5min, 1h, or bare seconds."""
    units = {"": 1, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600, "ms": 0.001}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value):
        total += float(number) * units[unit]
    return total


@pytest.fixture(scope="module")
def scratch_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root with this machine's system units, our units in /etc/systemd/system and an
    executable stub at each ExecStart path."""
    root = tmp_path_factory.mktemp("root")
    (root / "usr/lib/systemd").mkdir(parents=True)
    shutil.copytree(SYSTEM_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    (root / "lib").symlink_to("usr/lib")  # merged /usr, as on Debian 12
    etc = root / "etc/systemd/system"
    etc.mkdir(parents=True)
    for path in UNITS:
        shutil.copy(path, etc / path.name)
        program = one(read_unit(path), "Service", "ExecStart").split()[0].lstrip("-@:+!")
        stub = root / program.lstrip("/")
        stub.parent.mkdir(parents=True, exist_ok=True)
        stub.write_text("#!/bin/sh\nexit 0\n")
        stub.chmod(0o755)
    return root


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run([ANALYZE, *args], capture_output=True, text=True, timeout=60,
                          check=False)


def test_the_units_are_there() -> None:
    assert {p.name for p in UNITS} == {"hcp-device.service", "hcp-bridge.service",
                                       "hcp-bridge-watch.service",
                                       "hcp-bridge-expired.service"}


@needs_analyze
def test_units_pass_systemd_analyze_verify_without_a_word(scratch_root: Path) -> None:
    done = analyze("verify", f"--root={scratch_root}", *(p.name for p in UNITS))
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


@needs_analyze
def test_units_as_packaged_pass_verify_too(scratch_root: Path, tmp_path: Path) -> None:
    """The .debs ship the units with ExecStart= in the package's own venv
    (packaging/build.py): the same check on those, with stubs at those paths."""
    spec = importlib.util.spec_from_file_location("hcp_deb_build_units",
                                                  ROOT / "packaging/build.py")
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = build
    spec.loader.exec_module(build)
    root = tmp_path / "root"
    shutil.copytree(scratch_root, root, symlinks=True)
    etc = root / "etc/systemd/system"
    names = []
    for package in build.PACKAGES:
        for name in package.units:
            packaged = etc / f"pkg-{name}"
            packaged.write_text(build.unit_for_package(SYSTEMD / name, package))
            program = one(read_unit(packaged), "Service", "ExecStart").split()[0]
            assert program.startswith(f"/opt/hcp/{package.component}/venv/bin/")
            stub = root / program.lstrip("/")
            stub.parent.mkdir(parents=True, exist_ok=True)
            stub.write_text("#!/bin/sh\nexit 0\n")
            stub.chmod(0o755)
            names.append(packaged.name)
    assert len(names) == len(UNITS)
    done = analyze("verify", f"--root={root}", *names)
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


@needs_analyze
def test_verify_in_the_scratch_root_does_report_mistakes(scratch_root: Path) -> None:
    """The harness itself: a typo'd key, a bad value and a missing program are reported
    (else the test above would pass on anything)."""
    unit = scratch_root / "etc/systemd/system/hcp-typo.service"
    unit.write_text("[Service]\nType=notify\nWatchdogSecs=30s\nRestartSec=banana\n"
                    "ExecStart=/opt/hcp/venv/bin/hcp-nothing run\n")
    try:
        done = analyze("verify", f"--root={scratch_root}", unit.name)
    finally:
        unit.unlink()
    output = done.stdout + done.stderr
    assert "Unknown key 'WatchdogSecs'" in output
    assert "banana" in output
    assert done.returncode != 0 and "hcp-nothing" in output


@needs_analyze
@pytest.mark.parametrize("name, ceiling", [("hcp-device.service", 1.5),
                                           ("hcp-bridge.service", 1.1),
                                           ("hcp-bridge-watch.service", 1.1),
                                           ("hcp-bridge-expired.service", 1.1)])
def test_units_are_hardened(scratch_root: Path, name: str, ceiling: float) -> None:
    """systemd's own exposure score (0 = locked down, 10 = none at all), no worse than
    it is. The device needs the network and its hardware, the bridge only the network.
    What is left open and why: docs/packaging.md, "Hardening"."""
    done = analyze("security", "--offline=yes", f"--root={scratch_root}", "--no-pager", name)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert match, done.stdout + done.stderr
    assert float(match.group(1)) <= ceiling, done.stdout


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_notify_watchdog_and_restart_policy(path: Path) -> None:
    unit = read_unit(path)
    assert one(unit, "Service", "Type") == "notify"
    assert seconds(one(unit, "Service", "WatchdogSec")) >= 10
    # The daemons stop within 5 s of SIGTERM; systemd must not SIGKILL them earlier.
    assert seconds(one(unit, "Service", "TimeoutStopSec")) > 5
    assert one(unit, "Service", "Restart") == "on-failure"
    # Exit 78 = bad config: restarting cannot fix a typo, so no restart loop.
    assert "78" in words(unit, "Service", "RestartPreventExitStatus")
    # Automatic restarts never exhaust the start limit (a unit nobody watches must
    # come back when the fault clears); only an outside restart loop is stopped.
    gap = seconds(one(unit, "Service", "RestartSec"))
    interval = seconds(one(unit, "Unit", "StartLimitIntervalSec"))
    burst = int(one(unit, "Unit", "StartLimitBurst"))
    assert gap >= 5
    assert interval > 0 and math.floor(interval / gap) + 1 <= burst


# Device nodes the device daemon opens on a Raspberry Pi: the name of the node's group
# in /proc/devices (what DeviceAllow=char-… matches), the Unix group owning it on
# Raspberry Pi OS, and the access needed.
HARDWARE = [
    ("/dev/gpiochip0", "gpiochip", "gpio", "rw"),           # lgpio (gpiozero on Bookworm)
    ("/dev/gpiomem", "bcm2835-gpiomem", "gpio", "rw"),      # RPi.GPIO on a Pi 4
    ("/dev/gpiomem0", "rpi-gpiomem", "gpio", "rw"),         # Pi 5
    ("/dev/i2c-1", "i2c", "i2c", "rw"),                     # the OLED
    ("/dev/spidev0.0", "spi", "spi", "rw"),
    ("/dev/ttyUSB0", "ttyUSB", "dialout", "rw"),            # the window PC's serial line
    ("/dev/ttyACM0", "ttyACM", "dialout", "rw"),
    ("/dev/ttyAMA0", "ttyAMA", "dialout", "rw"),
    ("/dev/ttyS0", "ttyS", "dialout", "rw"),
    ("/dev/input/event0", "input", "input", "r"),           # a touch panel
    ("/dev/snd/pcmC0D0p", "alsa", "audio", "rw"),           # the speaker (aplay)
]


@pytest.mark.parametrize("node, kernel_group, unix_group, access", HARDWARE,
                         ids=[h[0] for h in HARDWARE])
def test_device_unit_still_reaches_the_hardware(node: str, kernel_group: str,
                                                unix_group: str, access: str) -> None:
    unit = read_unit(SYSTEMD / "hcp-device.service")
    service = unit["Service"]
    assert service.get("PrivateDevices", ["no"])[-1] == "no"  # would hide every node
    assert service.get("PrivateUsers", ["no"])[-1] == "no"    # would map the groups away
    assert unix_group in words(unit, "Service", "SupplementaryGroups")
    allowed = [v.split() for v in service.get("DeviceAllow", [])]
    assert any(spec.startswith("char-") and fnmatch(kernel_group, spec[5:])
               and set(access) <= set(mode) for spec, mode in allowed), \
        f"{node} ({kernel_group}) is not in DeviceAllow="


def test_bridge_unit_gets_no_devices() -> None:
    unit = read_unit(SYSTEMD / "hcp-bridge.service")
    assert one(unit, "Service", "PrivateDevices") == "yes"
    assert not words(unit, "Service", "SupplementaryGroups")


def test_example_device_config_is_valid_and_uses_the_state_directory(tmp_path: Path) -> None:
    """The example is what a technician copies to /etc/hcp/device.toml: it must pass
    the daemon's own check (the files it names are stood in by empty ones here), and
    its data_dir must be the unit's StateDirectory, the only place it may write."""
    text = (SYSTEMD / "examples" / "device.toml").read_text(encoding="utf-8")
    unit = read_unit(SYSTEMD / "hcp-device.service")
    state = Path("/var/lib") / one(unit, "Service", "StateDirectory")
    data = tomllib.loads(text)
    assert Path(data["device"]["data_dir"]) == state
    assert one(unit, "Service", "ExecStart").endswith("--config /etc/hcp/device.toml")
    # The broker ACL keys on the user name: it has to be the device id.
    assert data["mqtt"]["username"] == data["device"]["id"]

    for name in re.findall(r'"/etc/hcp/([^"]+)"', text):
        (tmp_path / name).write_text("stand-in\n")
    data = tomllib.loads(text.replace('"/etc/hcp/', f'"{tmp_path}/'))
    config = parse_device_config(tmp_path / "device.toml", data)
    assert config.device.data_dir == state


@pytest.mark.skipif(SYSUSERS is None, reason="systemd-sysusers missing")
def test_sysusers_creates_the_service_users_with_their_groups(tmp_path: Path) -> None:
    """On a fresh Raspberry Pi OS (which already has gpio, dialout, …) the sysusers
    file creates each unit's User= without a login shell, and the device user joins
    every group of its unit's SupplementaryGroups=, keeping existing group ids."""
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n"
                                "pi:x:1000:1000::/home/pi:/bin/bash\n")
    (etc / "group").write_text("root:x:0:\ndialout:x:20:pi\ngpio:x:997:pi\ni2c:x:998:pi\n"
                               "spi:x:999:pi\ninput:x:105:pi\npi:x:1000:\n")
    assert SYSUSERS is not None
    subprocess.run([SYSUSERS, f"--root={tmp_path}", str(SYSTEMD / "hcp.sysusers.conf")],
                   check=True, capture_output=True)
    users = {f[0]: f for f in (line.split(":") for line in
                               (etc / "passwd").read_text().splitlines())}
    groups = {f[0]: f for f in (line.split(":") for line in
                                (etc / "group").read_text().splitlines())}

    device = read_unit(SYSTEMD / "hcp-device.service")
    for path in UNITS:
        unit = read_unit(path)
        user = users[one(unit, "Service", "User")]
        assert user[6] == "/usr/sbin/nologin"
        assert one(unit, "Service", "Group") in groups
    assert users["hcp-device"][5] == f"/var/lib/{one(device, 'Service', 'StateDirectory')}"
    for group in words(device, "Service", "SupplementaryGroups"):
        assert "hcp-device" in groups[group][3].split(","), group
    assert groups["gpio"][2] == "997" and "pi" in groups["gpio"][3].split(",")


# MemoryDenyWriteExecute=yes in both units: systemd enforces it with seccomp; Linux
# 6.3+ has the same rule as prctl(PR_SET_MDWE), which lets a test run the real daemons
# under it. Loaded through sitecustomize.py, before any of the daemon's imports.
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
SITECUSTOMIZE = f"""\
import ctypes, os
if ctypes.CDLL(None, use_errno=True).prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0):
    raise SystemExit("PR_SET_MDWE failed: " + os.strerror(ctypes.get_errno()))
open(os.environ["HCP_TEST_MDWE_MARK"], "a").write(str(os.getpid()) + "\\n")
"""


def _mdwe_supported() -> bool:
    probe = (f"import ctypes; raise SystemExit(ctypes.CDLL(None).prctl({PR_SET_MDWE}, "
             f"{PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) != 0)")
    return subprocess.run([sys.executable, "-c", probe], check=False).returncode == 0


needs_mdwe = pytest.mark.skipif(not _mdwe_supported(), reason="kernel without PR_SET_MDWE")


def mdwe_env(tmp_path: Path) -> dict[str, str]:
    site = tmp_path / "mdwe-site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return {"PYTHONPATH": f"{site}{os.pathsep}{ROOT}",
            "HCP_TEST_MDWE_MARK": str(tmp_path / "mdwe-pids")}


@needs_mdwe
def test_device_runs_under_memory_deny_write_execute(tmp_path: Path) -> None:
    env = mdwe_env(tmp_path)
    device = DeviceProcess(tmp_path / "device", env=env)
    try:
        device.start()
        assert device.proc is not None and device.sim is not None
        assert str(device.proc.pid) in Path(env["HCP_TEST_MDWE_MARK"]).read_text().split()
        device.sim.press(3)
        assert device.sim.wait_screen("thanks"), device.log()  # stored (fsync'ed) first
        assert device.stop() == 0, device.log()
    finally:
        device.close()


@needs_mdwe
def test_bridge_runs_under_memory_deny_write_execute(tmp_path: Path, mosquitto: Mosquitto,
                                                    platform: RunningPlatform) -> None:
    env = mdwe_env(tmp_path)
    with BridgeProcess(tmp_path / "bridge", mosquitto, platform.url, env=env) as bridge:
        bridge.start()  # healthy: connected, subscribed, serving /healthz
        assert bridge.process is not None
        assert str(bridge.process.pid) in Path(env["HCP_TEST_MDWE_MARK"]).read_text().split()
        fleet = FleetPublisher(mosquitto.host, mosquitto.port)
        try:
            fleet.wait_published([fleet.publish_record(make_rating())])
            deadline = time.monotonic() + 10
            while platform.control.counts()["total"] < 1:
                assert time.monotonic() < deadline, bridge.log_text()
                time.sleep(0.05)
        finally:
            fleet.close()
        assert bridge.terminate() < 5 and bridge.returncode == 0, bridge.log_text()
