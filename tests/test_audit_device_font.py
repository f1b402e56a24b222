"""`[display] font = "file.ttc#N"` (a face of a collection): whatever N is, the config is
refused naming the key, or the fonts load or say what to fix; never a traceback at
start."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.configschema import ConfigError
from device.compose import build_drivers
from device.config import load_device_config
from device.ports import HardwareNotFound
from tests.support.device import device_config

WQY = "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"


def config_with_font(tmp_path: Path, font: str, size: str = "128x64") -> Path:
    path = tmp_path / "device.toml"
    path.write_text(device_config(tmp_path / "data", "loop://",
                                  display={"kind": "sim", "font": font, "size": size}),
                    encoding="utf-8")
    return path


@pytest.mark.parametrize("index", ["²", "٣", "99999999999999999999"])
@pytest.mark.parametrize("size", ["128x64", "800x480"])
def test_a_face_index_no_font_can_have_is_a_config_error(
        tmp_path: Path, index: str, size: str) -> None:
    """"²".isdigit() is true and int("²") raises ValueError; a 20-digit index overflows
    FreeType's C long: both passed check-config and then killed `hcp-device run` in
    build_drivers with a traceback (neither is the DriverError it reports)."""
    if not Path(WQY).is_file():
        pytest.skip("fonts-wqy-zenhei is not installed")
    path = config_with_font(tmp_path, f"{WQY}#{index}", size)
    with pytest.raises(ConfigError) as caught:
        load_device_config(path)
    assert any("[display] font" in p and str(path) in p for p in caught.value.problems)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(index=st.text(max_size=25) | st.integers(0, 2**80).map(str),
       size=st.sampled_from(["128x64", "800x480"]))
def test_any_face_index_is_a_config_error_or_fonts_or_hardware_not_found(
        tmp_path_factory: object, index: str, size: str) -> None:
    if not Path(WQY).is_file():
        return
    tmp = tmp_path_factory.mktemp("f")   # type: ignore[attr-defined]
    try:
        config = load_device_config(config_with_font(tmp, f"{WQY}#{index}", size))
    except ConfigError:
        return
    try:
        build_drivers(config).close()
    except HardwareNotFound:
        pass
