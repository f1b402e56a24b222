"""What the offline installers are made of, checked without building one: the shipped
watcher config against the watcher's own validation and the unit, the maintainer
scripts as shell, the units and sysusers lines as the packages rewrite them.

packaging/build.py is loaded from its file under another name: the folder must not
become an importable `packaging` (pip's and pytest's library of that name).
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from broker_bridge.watch.config import load_watch_config

ROOT = Path(__file__).resolve().parents[1]
SYSTEMD = ROOT / "systemd"


def load_builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("hcp_deb_build", ROOT / "packaging/build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["hcp_deb_build"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


build = load_builder()


def unit_value(text: str, key: str) -> str:
    values = re.findall(rf"^{key}=(.*)$", text, flags=re.M)
    assert values, f"{key}= missing"
    return str(values[-1]).strip()


def test_packaging_folder_never_shadows_the_packaging_library() -> None:
    assert not (ROOT / "packaging/__init__.py").exists()
    import packaging.version  # pytest's own dependency, found past our folder

    assert packaging.version.Version("1.0") < packaging.version.Version("1.1")


def test_watch_example_passes_the_watchers_validation(tmp_path: Path) -> None:
    """broker_bridge/watch.example.toml is /etc/hcp/watch.toml in hcp-server: valid as
    shipped once the files it names exist (stood in here), its state in the unit's
    StateDirectory, logging in as its own broker user."""
    text = (ROOT / "broker_bridge/watch.example.toml").read_text(encoding="utf-8")
    unit = (SYSTEMD / "hcp-bridge-watch.service").read_text(encoding="utf-8")
    data = tomllib.loads(text)
    state = Path(data["watch"]["state_file"])
    assert state.parent == Path("/var/lib") / unit_value(unit, "StateDirectory")
    assert unit_value(unit, "ExecStart").endswith("--config /etc/hcp/watch.toml")
    assert data["mqtt"]["username"] == "hcp-watch"

    for name in re.findall(r'"/etc/hcp/([^"]+)"', text):
        (tmp_path / name).write_text("stand-in\n")
    (tmp_path / "state").mkdir()
    local = text.replace('"/etc/hcp/', f'"{tmp_path}/').replace(
        f'"{state.parent}/', f'"{tmp_path}/state/')
    (tmp_path / "watch.toml").write_text(local, encoding="utf-8")
    config = load_watch_config(tmp_path / "watch.toml")
    assert config.mqtt.username == "hcp-watch"


def test_watch_example_fails_where_its_state_folder_is_missing(tmp_path: Path) -> None:
    """The harness above can fail: the same file without the state folder is refused."""
    text = (ROOT / "broker_bridge/watch.example.toml").read_text(encoding="utf-8")
    for name in re.findall(r'"/etc/hcp/([^"]+)"', text):
        (tmp_path / name).write_text("stand-in\n")
    local = text.replace('"/etc/hcp/', f'"{tmp_path}/').replace(
        '"/var/lib/hcp-bridge-watch/', f'"{tmp_path}/missing/')
    (tmp_path / "watch.toml").write_text(local, encoding="utf-8")
    with pytest.raises(Exception, match="state_file"):
        load_watch_config(tmp_path / "watch.toml")


def test_alerts_doc_uses_the_units_state_directory() -> None:
    """docs/alerts.md's sample once named /var/lib/hcp-watch, which the unit does not
    create (the watcher then exits 78)."""
    doc = (ROOT / "docs/alerts.md").read_text(encoding="utf-8")
    unit = (SYSTEMD / "hcp-bridge-watch.service").read_text(encoding="utf-8")
    state_dir = "/var/lib/" + unit_value(unit, "StateDirectory")
    samples = re.findall(r'state_file = "([^"]+)"', doc)
    assert samples and all(Path(s).parent == Path(state_dir) for s in samples), samples
    assert "/var/lib/hcp-watch/" not in doc and "StateDirectory=hcp-watch" not in doc


def test_sample_acl_names_a_user_for_the_watcher_and_the_forwarder() -> None:
    acl = (SYSTEMD / "examples/mosquitto.acl").read_text(encoding="utf-8")
    blocks: dict[str, list[str]] = {}
    user = ""
    for line in acl.splitlines():
        line = line.strip()
        if line.startswith("user "):
            user = line.split()[1]
        elif line.startswith("topic ") and user:
            blocks.setdefault(user, []).append(line)
    watch = blocks["hcp-watch"]
    for kind in ("rating", "status", "telemetry", "event"):
        assert f"topic read hcp/v1/+/{kind}" in watch
    assert "topic write hcp/v1/alerts" in watch
    assert not any(line.startswith("topic write hcp/v1/+") for line in watch)
    # hcp-bridge expired reads the events as a user of its own, <client_id>-expired.
    assert "topic read hcp/v1/+/event" in blocks["hcp-bridge-1-expired"]
    assert "hcp-bridge expired" in acl


@pytest.mark.parametrize("package", build.PACKAGES, ids=lambda p: p.name)
def test_units_in_a_package_point_at_its_venv_and_docs(package: Any) -> None:
    for name in package.units:
        text = build.unit_for_package(SYSTEMD / name, package)
        component = package.component
        assert unit_value(text, "ExecStart").startswith(f"/opt/hcp/{component}/venv/bin/")
        command = unit_value(text, "ExecStart").split()[0].rsplit("/", 1)[1]
        assert command in package.commands
        assert "/opt/hcp/src" not in text and "/opt/hcp/venv/" not in text
        # Everything else is the unit as tested in test_systemd.py.
        original = (SYSTEMD / name).read_text(encoding="utf-8")
        assert len(text.splitlines()) == len(original.splitlines())


@pytest.mark.parametrize("package", build.PACKAGES, ids=lambda p: p.name)
def test_sysusers_of_a_package_create_its_user_only(package: Any) -> None:
    text = build.sysusers_for_package(package)
    rows = [line.split() for line in text.splitlines() if line and not line.startswith("#")]
    user = package.user
    assert ["u", user] == rows[0][:2]
    assert all(row[1] == user for row in rows)
    for name in package.units:
        unit = (SYSTEMD / name).read_text(encoding="utf-8")
        assert unit_value(unit, "User") == user
        for group in unit_value(unit, "SupplementaryGroups").split() \
                if "SupplementaryGroups=" in unit else []:
            assert ["m", user, group] in [row[:3] for row in rows]


@pytest.mark.parametrize("package", build.PACKAGES, ids=lambda p: p.name)
@pytest.mark.parametrize("script", ["postinst", "prerm", "postrm"])
def test_maintainer_scripts_are_valid_shell(package: Any, script: str,
                                            tmp_path: Path) -> None:
    values = {"PACKAGE": package.name, "COMPONENT": package.component,
              "USER": package.user, "UNITS": " ".join(package.units),
              "CONFIGS": "/etc/hcp/x.toml", "DATA_DIRS": " ".join(package.data_dirs),
              "SYSTEM_SITE": ""}
    path = tmp_path / script
    path.write_text(build.fill(ROOT / "packaging" / f"{script}.in", values))
    done = subprocess.run(["sh", "-n", str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    if shutil.which("shellcheck"):
        done = subprocess.run(["shellcheck", "-s", "sh", str(path)], capture_output=True,
                              text=True, check=False)
        assert done.returncode == 0, done.stdout
    # Unknown actions are refused (dpkg's contract), known ones never are.
    done = subprocess.run(["sh", str(path), "banana"], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 1 and "unknown argument" in done.stderr


def test_fill_refuses_a_placeholder_without_a_value(tmp_path: Path) -> None:
    template = tmp_path / "t.in"
    template.write_text("a=@PACKAGE@ b=@NOT_GIVEN@\n")
    with pytest.raises(build.BuildError, match="NOT_GIVEN"):
        build.fill(template, {"PACKAGE": "x"})


def test_wheel_names_give_pins() -> None:
    assert build.wheel_pin(Path("luma_oled-3.16.0-py3-none-any.whl")) == ("luma-oled", "3.16.0")
    assert build.wheel_pin(Path(
        "psycopg_binary-3.3.9-cp311-cp311-manylinux2014_x86_64.whl")) == ("psycopg-binary",
                                                                          "3.3.9")


def test_platform_tags_cover_bookworms_glibc() -> None:
    tags = build.ARCHES["arm64"].platforms()
    assert "manylinux2014_aarch64" in tags and "manylinux_2_34_aarch64" in tags  # lgpio
    assert "manylinux_2_36_aarch64" in tags and "manylinux_2_37_aarch64" not in tags
