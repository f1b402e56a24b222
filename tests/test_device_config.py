"""The device config's checks on what ends up in every rating record (SPEC §3, §6)."""

from __future__ import annotations

import getpass
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common.configschema import ConfigError
from common.serial_codec import CASE_FIELDS, FIELD_LIMITS
from device.clock import FakeClock
from device.config import MAX_ID_CHARS, data_dir_problems, parse_device_config
from device.core.machine import Evaluator, Identity
from device.core.model import FrameReceived, KeyDown, KeyUp, Persist
from device.core.settings import UiSettings
from device.outbox import Outbox

PATH = Path("/etc/hcp/device.toml")
ROOT = Path(__file__).resolve().parent.parent


def _config(**device: Any) -> dict[str, Any]:
    d = {"id": "421100-HG01-W03", "region_code": "421100", "hall_id": "HG01",
         "window_id": "W03", "window_name": "03号窗口", "data_dir": "/var/lib/hcp-device"}
    d.update(device)
    return {"device": d, "serial": {"port": ""}, "input": {"kind": "sim"},
            "display": {"kind": "sim"}}


def _problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_device_config(PATH, data)
    return e.value.problems


def test_a_valid_config_parses() -> None:
    assert parse_device_config(PATH, _config()).device.id == "421100-HG01-W03"


@pytest.mark.parametrize("device_id", ["abc\n", "a b", "", "x" * 65, "设备1"])
def test_device_id_must_be_the_whole_pattern(device_id: str) -> None:
    (p,) = _problems(_config(id=device_id))
    assert p.startswith(f"{PATH}: [device] id") and "[A-Za-z0-9_-]{1,64}" in p


def test_reason_code_with_a_trailing_newline_is_refused() -> None:
    data = _config()
    data["ui"] = {"reasons": [{"code": "R01\n", "label": "服务态度"}]}
    (p,) = _problems(data)
    assert "[ui] reasons" in p and "code must match" in p


@pytest.mark.parametrize("key", ["region_code", "hall_id", "window_id"])
@pytest.mark.parametrize("value, says", [
    ("", "must not be empty"), ("  ", "must not be empty"),
    ("H" * (MAX_ID_CHARS + 1), f"at most {MAX_ID_CHARS} characters"),
    ("HG\n01", "control characters"),
])
def test_record_ids_are_bounded_and_printable(key: str, value: str, says: str) -> None:
    (p,) = _problems(_config(**{key: value}))
    assert p.startswith(f"{PATH}: [device] {key}") and says in p


def test_the_largest_record_the_limits_allow_fits_in_8_kib() -> None:
    """Every field at its limit, in the character that costs most on the wire (a control
    character, escaped as six bytes), as the device publishes it: under the bridge's 8 KiB
    limit, so no configuration or frame can make every rating a rejected one."""
    worst = "\x01"
    ident = Identity("D" * 64, worst * MAX_ID_CHARS, worst * MAX_ID_CHARS,
                     worst * MAX_ID_CHARS)
    clock = FakeClock()
    ids = (f"{n:032x}" for n in itertools.count(1))
    reasons = tuple((f"R{n:0>15}", "原因") for n in range(4))
    core = Evaluator(ident, UiSettings(window_name="W", reasons=reasons), clock,
                     new_rating_id=lambda: next(ids), first_seq=2**53)
    core.start(clock.now)
    fields = {name: worst * FIELD_LIMITS[name] for name in CASE_FIELDS}
    fields["completed_at"] = "2026-11-25T10:31:07.123456789+08:00"
    out = core.handle(FrameReceived("case_completed", 1, fields, clock.now))
    out += core.handle(KeyDown(1, clock.now))
    out += core.handle(KeyUp(1, clock.advance(0.1)))
    out += core.handle(KeyDown(5, clock.advance(0.5)))   # picks the first reason
    (rating,) = [a.rating for a in out if isinstance(a, Persist)]
    assert rating["case"]["service_name"] == fields["service_name"] and rating["reason"]
    payload = json.dumps(rating, ensure_ascii=False, separators=(",", ":")).encode()
    assert len(payload) <= 8 * 1024, len(payload)


@pytest.mark.parametrize("port", ["", "/dev/ttyUSB0", "/dev/serial/by-id/usb-FTDI-if00",
                                  "socket://127.0.0.1:7000", "loop://",
                                  "rfc2217://10.0.0.5:2217?timeout=1"])
def test_serial_ports_that_pyserial_opens_are_accepted(port: str) -> None:
    data = _config()
    data["serial"] = {"port": port}
    assert parse_device_config(PATH, data).serial.port == port


@pytest.mark.parametrize("port, says", [
    ("sokcet://127.0.0.1:7000", "unknown URL scheme 'sokcet'"),
    ("socket://127.0.0.1", "needs HOST:PORT"),
    ("socket://:7000", "needs HOST:PORT"),
    ("ttyUSB0", "absolute device path"),
])
def test_a_serial_port_typo_is_a_config_error_not_missing_hardware(port: str,
                                                                   says: str) -> None:
    data = _config()
    data["serial"] = {"port": port}
    (p,) = _problems(data)
    assert p.startswith(f"{PATH}: [serial] port") and says in p


# -- what the daemon cannot run is refused (issue 17) ------------------------------------------

@pytest.mark.parametrize("name", ["03号窗口\r\n", "03号\n窗口", "03号窗口\u2028", "\u202e03号窗口",
                                  "03号\x00窗口", "03号\u200b窗口", "\t", "窗" * 41])
def test_a_window_name_the_screen_cannot_show_is_refused(name: str) -> None:
    # Regression: check-config said OK, then rendering raised and the daemon exited 1.
    (p,) = _problems(_config(window_name=name))
    assert p.startswith(f"{PATH}: [device] window_name: ") and "\n" not in p


def test_a_window_name_with_full_width_spaces_is_fine() -> None:
    name = "03号窗口\u3000不动产登记"
    assert parse_device_config(PATH, _config(window_name=name)).ui.window_name == name


@pytest.mark.parametrize("label", ["服务\n态度", "服务态度\r", "\u2029", "态度\x1b[2J", ""])
def test_a_reason_label_the_screen_cannot_show_is_refused(label: str) -> None:
    data = _config()
    data["ui"] = {"reasons": [{"code": "R01", "label": label}]}
    (p,) = _problems(data)
    assert p.startswith(f"{PATH}: [ui] reasons: entry 1: label") and "\n" not in p


@pytest.mark.parametrize("data_dir, says", [
    ("var/lib/hcp-device", "absolute path"),
    ("./data", "absolute path"),
    ("/var/lib/hcp\x00", "control characters"),   # the outbox raised ValueError at start
    ("/var/lib/hcp\n", "control characters"),
])
def test_a_data_dir_the_daemon_cannot_use_is_refused(data_dir: str, says: str) -> None:
    (p,) = _problems(_config(data_dir=data_dir))
    assert p.startswith(f"{PATH}: [device] data_dir: ") and says in p and "\n" not in p


@pytest.mark.parametrize("section, key, value", [
    ("ui", "thanks_s", 10**400),                     # float() of it raised OverflowError
    ("ui", "prompt_timeout_s", -(10**30)),
    ("serial", "reopen_s", 2**63),
    ("serial", "baudrate", 10**40),
])
def test_integers_beyond_64_bits_are_one_problem_each(section: str, key: str,
                                                      value: int) -> None:
    data = _config()
    data.setdefault(section, {})[key] = value
    (p,) = _problems(data)
    assert p == f"{PATH}: [{section}] {key}: a number outside the 64-bit range"


@pytest.mark.parametrize("port", ["socket://host:²", "rfc2217://host:٣٠", "/dev/ttyUSB0\n"])
def test_a_serial_port_that_would_raise_is_a_problem(port: str) -> None:
    data = _config()
    data["serial"] = {"port": port}
    (p,) = _problems(data)
    assert p.startswith(f"{PATH}: [serial] port: ") and "\n" not in p


@pytest.mark.parametrize("section, key, value", [
    ("mqtt", "prefix", "hcp/v1\n"),        # topic_prefix's "$" matches before a newline
    ("mqtt", "host", "broker.local "),
    ("mqtt", "host", "broker\n"),
])
def test_mqtt_names_with_control_characters_or_spaces_are_refused(section: str, key: str,
                                                                  value: str) -> None:
    data = _config()
    data[section] = {key: value}
    (p,) = _problems(data)
    assert p.startswith(f"{PATH}: [{section}] {key}: ")


def test_touch_zones_are_bounded() -> None:
    data = _config()
    data["input"] = {"kind": "touch", "zones": {str(n): [0, 0, 10**30, 10] for n in range(1, 6)}}
    problems = _problems(data)
    assert problems and all("[input] zones" in p for p in problems)


def test_a_key_with_a_line_break_is_still_one_line() -> None:
    data = _config()
    data["device"]["evil\nERROR forged"] = 1
    data["evil\nsection"] = {}
    problems = _problems(data)
    assert len(problems) == 2 and all("\n" not in p for p in problems)
    assert any("evil\\nERROR forged" in p for p in problems)


# -- the data directory, checked as the outbox opens it ------------------------------------

def test_a_data_dir_that_can_be_created_is_fine_and_is_not_created(tmp_path: Path) -> None:
    config = parse_device_config(PATH, _config(data_dir=str(tmp_path / "a" / "b")))
    assert data_dir_problems(config) == []
    assert not (tmp_path / "a").exists()


def test_a_data_dir_under_a_file_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("", encoding="utf-8")
    config = parse_device_config(PATH, _config(data_dir=str(tmp_path / "file" / "data")))
    assert data_dir_problems(config) == [
        f"{PATH}: [device] data_dir: cannot be created: {tmp_path / 'file'} is not a directory"]


def test_a_data_dir_that_is_a_file_or_holds_a_bad_journal(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("", encoding="utf-8")
    config = parse_device_config(PATH, _config(data_dir=str(tmp_path / "file")))
    assert data_dir_problems(config) == [f"{PATH}: [device] data_dir: is not a directory"]
    (tmp_path / "data" / "outbox.journal").mkdir(parents=True)
    config = parse_device_config(PATH, _config(data_dir=str(tmp_path / "data")))
    assert data_dir_problems(config) == [
        f"{PATH}: [device] data_dir: outbox.journal is not a regular file"]


def test_a_data_dir_in_use_by_a_running_daemon_is_fine(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    outbox.open()
    try:
        config = parse_device_config(PATH, _config(data_dir=str(tmp_path)))
        assert data_dir_problems(config) == []
    finally:
        outbox.close()


def _unprivileged() -> list[str]:
    """The command prefix that runs as a user without root's way past file modes."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: file modes cannot be tested")
    prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    # The unprivileged user must be able to run the code at all (a clone under root's
    # 0700 home cannot be read by nobody: then nothing is learnt about data_dir modes).
    readable = subprocess.run([*prefix, sys.executable, "-c", "import device.cli"],
                              cwd=ROOT, capture_output=True, check=False, timeout=60)
    if readable.returncode != 0:
        pytest.skip(f"nobody cannot read this checkout ({ROOT}): file modes cannot be "
                    "tested as an unprivileged user here")
    return prefix


def _check_config(folder: Path, **device: Any) -> subprocess.CompletedProcess[str]:
    data = _config(**device)
    lines = []
    for section, values in data.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {json.dumps(value, ensure_ascii=False)}"
                  for key, value in values.items()]
    cfg = folder / "device.toml"
    cfg.write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg.chmod(0o644)
    return subprocess.run([*_unprivileged(), sys.executable, "-m", "device.cli",
                           "check-config", "--config", str(cfg)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)


@pytest.fixture
def open_folder() -> Iterator[Path]:
    """A folder any user can reach (pytest's tmp_path is private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="hcp-check-"))
    folder.chmod(0o755)
    yield folder
    for path in sorted(folder.rglob("*"), reverse=True):
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)
    shutil.rmtree(folder)


def test_check_config_refuses_a_data_dir_the_daemon_could_not_write(open_folder: Path) -> None:
    readonly = open_folder / "ro"
    readonly.mkdir(mode=0o555)
    readonly.chmod(0o555)
    r = _check_config(open_folder, data_dir=str(readonly / "data"))
    assert r.returncode == 73 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip() == (f"hcp-device: {open_folder / 'device.toml'}: [device] data_dir: "
                                f"cannot be created: {readonly} is not writable by user "
                                f"{'nobody' if os.geteuid() == 0 else getpass.getuser()}")
    assert not (readonly / "data").exists()
    (writable := open_folder / "rw").mkdir(mode=0o777)
    writable.chmod(0o777)
    r = _check_config(open_folder, data_dir=str(writable / "data"))
    assert r.returncode == 0 and r.stdout.strip().endswith(": OK"), r.stderr


def test_check_config_refuses_a_window_name_the_daemon_would_crash_on(
        open_folder: Path) -> None:
    r = _check_config(open_folder, window_name="不动产登记\r\n",
                      data_dir=str(open_folder / "data"))
    assert r.returncode == 78 and "Traceback" not in r.stderr, r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert "[device] window_name: must not contain control characters" in line

