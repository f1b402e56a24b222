"""The device config as the daemon reads it: one frozen dataclass per section and
`DeviceConfig`, built by device.config.parse_device_config once every check passed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from device.config_schema import MONO_SIZE
from device.core.settings import UiSettings

__all__ = ["ClockSection", "DeviceConfig", "DeviceSection", "DisplaySection",
           "IndicatorsSection", "InputSection", "MqttSection", "SerialSection",
           "VoiceSection"]


@dataclass(frozen=True)
class DeviceSection:
    id: str
    region_code: str
    hall_id: str
    window_id: str
    window_name: str
    data_dir: Path


@dataclass(frozen=True)
class SerialSection:
    port: str
    baudrate: int
    require_crc: bool
    reopen_s: float


@dataclass(frozen=True)
class InputSection:
    kind: str
    pins: dict[int, int]
    pull_up: bool
    bounce_ms: int
    touch_device: str
    zones: dict[int, tuple[int, int, int, int]]
    touch_swap_xy: bool = False
    touch_invert_x: bool = False
    touch_invert_y: bool = False


@dataclass(frozen=True)
class DisplaySection:
    kind: str
    font: str
    i2c_port: int
    i2c_address: int
    rotate: int             # quarter turns, 0..3
    contrast: int
    fb_device: str = "/dev/fb0"
    size: str = MONO_SIZE   # sim only
    staff_photos_dir: str = ""

    @property
    def colour(self) -> bool:
        """A colour panel: its own layout, and touch targets from the buttons it draws."""
        return self.kind == "framebuffer" or (self.kind == "sim" and self.size != MONO_SIZE)


@dataclass(frozen=True)
class IndicatorsSection:
    kind: str
    leds: dict[int, int]
    buzzer: int | None


@dataclass(frozen=True)
class MqttSection:
    host: str
    port: int
    prefix: str
    keepalive_s: int
    resend_after_s: float
    telemetry_s: float
    protocol: str
    session_expiry_s: int
    max_inflight: int
    tls: bool
    ca_file: str
    client_cert: str
    client_key: str
    username: str
    password_file: str


@dataclass(frozen=True)
class VoiceSection:
    """[voice]; `volume` and `read_levels` go to the core's settings (UiSettings), where
    the retained config topic may change them."""

    kind: str = "none"
    alsa_device: str = "default"
    clips_dir: str = ""


@dataclass(frozen=True)
class ClockSection:
    sync_file: str
    assume_synced: bool


@dataclass(frozen=True)
class DeviceConfig:
    path: Path
    device: DeviceSection
    serial: SerialSection
    input: InputSection
    display: DisplaySection
    indicators: IndicatorsSection
    mqtt: MqttSection
    ui: UiSettings
    clock: ClockSection
    voice: VoiceSection = VoiceSection()
