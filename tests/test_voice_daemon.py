"""The voice through the whole daemon (SPEC §10): which clip plays when, always after its
screen; a speaker that fails is a fault and a `voice_unavailable` event, never a lost
rating; `read_levels` and `volume` from the file and from the retained config topic.
In-process in virtual time with a recording voice, then once through a real daemon
subprocess with the sim voice."""

from __future__ import annotations

import errno
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from device.config import load_device_config
from device.core.model import Screen
from device.outbox import StorageError
from device.ports import DriverError, DriverStatus, Emit, MonotonicClock
from drivers.clips import BUILTIN_DIR as CLIPS_DIR
from drivers.clips import CLIPS
from tests.support.device import DeviceProcess, device_config
from tests.support.inprocess import Device, FakeDisplay

LEVELS = ("level5", "level4", "level3", "level2", "level1")


@dataclass
class Played:
    clips: tuple[str, ...]
    volume: int
    screen: str | None       # what the display showed when the clips were asked for
    t: float


class RecordingVoice:
    """The Voice port as a recorder: what was asked for, on which screen, and when;
    `fail` makes play() raise, `report()` plays a player failing later."""

    def __init__(self, display: FakeDisplay) -> None:
        self.display = display
        self.played: list[Played] = []
        self.fail: str | None = None
        self.emit: Emit | None = None
        self.clock: MonotonicClock | None = None
        self.closed = 0

    def start(self, emit: Emit, clock: MonotonicClock) -> None:
        self.emit, self.clock = emit, clock

    def play(self, clips: Sequence[str], volume: int) -> None:
        if self.fail is not None:
            raise DriverError(self.fail)
        assert self.clock is not None
        self.played.append(Played(tuple(clips), volume, self.display.current,
                                  self.clock.monotonic()))

    def report(self, error: str | None) -> None:
        assert self.emit is not None and self.clock is not None
        self.emit(DriverStatus("voice", error, self.clock.monotonic()))

    def close(self) -> None:
        self.closed += 1

    @property
    def first_clips(self) -> list[str]:
        return [p.clips[0] for p in self.played]


def voiced(tmp_path: Path, **ui: Any) -> tuple[Device, RecordingVoice]:
    device = Device(tmp_path, ui=ui)
    voice = RecordingVoice(device.display)
    device.voice = voice
    # Device built its daemon before we could hand it the voice: build it again.
    device.__post_init__()
    voice.display = device.display
    return device.start(), voice


@pytest.fixture
def device_voice(tmp_path: Path) -> tuple[Device, RecordingVoice]:
    device, voice = voiced(tmp_path)
    device.broker_up()
    return device, voice


def test_a_whole_rating_says_prompt_reasons_thanks_each_after_its_screen(
        device_voice: tuple[Device, RecordingVoice]) -> None:
    device, voice = device_voice
    assert voice.played == []                         # idle says nothing
    device.serial.send_frame("case_completed", case_id="C-1", service_name="不动产登记")
    device.run(5)                                     # five seconds of countdown
    device.keys.press(2)
    device.run(3)
    device.keys.press(5)                              # the first reason
    device.run(1)
    assert [p.clips for p in voice.played] == [("prompt",), ("reasons",), ("thanks",)]
    assert [p.screen for p in voice.played] == ["prompt", "reasons", "thanks"]
    assert {p.volume for p in voice.played} == {80}
    # With the press, not at the next countdown second.
    assert voice.played[1].t - voice.played[0].t == pytest.approx(5.0, abs=0.001)
    device.stop()
    assert voice.closed == 1
    (rating,) = device.pending()
    assert rating["level"] == 2 and rating["reason"] == "R01"


def test_a_good_rating_skips_the_reasons_and_each_case_has_its_prompt(
        device_voice: tuple[Device, RecordingVoice]) -> None:
    device, voice = device_voice
    device.serial.send_frame("case_completed", case_id="C-1")
    device.serial.send_frame("case_completed", case_id="C-2")
    device.run(0.1)
    device.keys.press(5)
    device.run(1)                                     # thanks, then C-2's prompt
    device.serial.send_frame("cancel", case_id="C-2")
    device.serial.send_frame("case_completed", case_id="C-3")
    device.run(0.1)
    assert voice.first_clips == ["prompt", "thanks", "prompt", "prompt"]
    # A paused prompt greets the citizen again when it comes back.
    device.serial.send_frame("pause", reason="午休")
    device.run(0.1)
    device.serial.send_frame("resume")
    device.run(0.1)
    assert voice.first_clips[-1] == "prompt" and len(voice.played) == 5


def test_an_unsaved_rating_says_the_error_clip(
        device_voice: tuple[Device, RecordingVoice], monkeypatch: pytest.MonkeyPatch) -> None:
    device, voice = device_voice

    def full(*_: object, **__: object) -> None:
        raise StorageError("cannot store") from OSError(errno.ENOSPC, "No space left")
    monkeypatch.setattr(device.daemon.outbox, "store", full)
    device.serial.send_frame("case_completed", case_id="C-FULL")
    device.run(0.1)
    device.keys.press(4)
    device.run(0.1)
    assert voice.first_clips == ["prompt", "error"]   # never "thanks" for it
    assert voice.played[-1].screen == "error"
    assert CLIPS["error"] == "评价未能保存，请联系工作人员"


def test_read_levels_reads_each_key_after_the_prompt(tmp_path: Path) -> None:
    device, voice = voiced(tmp_path)
    device.broker_up()
    device.message("config", {"read_levels": True, "volume": 35}, retain=True)
    assert device.link.events("config_applied")[-1]["keys"] == ["read_levels", "volume"]
    device.serial.send_frame("case_completed", case_id="C-1")
    device.run(0.1)
    device.keys.press(3)
    device.run(0.1)
    assert [p.clips for p in voice.played] == [("prompt", *LEVELS), ("thanks",)]
    assert {p.volume for p in voice.played} == {35}


@pytest.mark.parametrize("payload, why", [
    ({"volume": 101}, "volume"),
    ({"volume": -1}, "volume"),
    ({"volume": "loud"}, "volume"),
    ({"volume": True}, "volume"),
    ({"read_levels": "yes"}, "read_levels"),
    ({"read_levels": 1}, "read_levels"),
    ({"alsa_device": "hw:1"}, "alsa_device"),      # which speaker stays the file's
])
def test_bad_voice_settings_from_the_broker_change_nothing(
        device_voice: tuple[Device, RecordingVoice], payload: dict[str, Any], why: str) -> None:
    device, voice = device_voice
    device.message("config", payload, retain=True)
    (rejected,) = device.link.events("config_rejected")
    assert any(why in p for p in rejected["problems"]), rejected
    device.serial.send_frame("case_completed", case_id="C-1")
    device.run(0.1)
    assert voice.played[-1].clips == ("prompt",) and voice.played[-1].volume == 80


def test_read_levels_and_volume_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "device.toml"
    path.write_text(device_config(tmp_path / "data", "loop://", voice={
        "kind": "sim", "read_levels": True, "volume": 55, "clips_dir": "/etc/hcp/clips",
        "alsa_device": "plughw:CARD=Device,DEV=0"}), encoding="utf-8")
    config = load_device_config(path)
    assert (config.ui.read_levels, config.ui.volume) == (True, 55)
    assert config.voice.kind == "sim" and config.voice.clips_dir == "/etc/hcp/clips"
    assert config.voice.alsa_device == "plughw:CARD=Device,DEV=0"
    path.write_text(device_config(tmp_path / "data", "loop://"), encoding="utf-8")
    default = load_device_config(path)
    assert (default.voice.kind, default.ui.read_levels, default.ui.volume) == ("none", False, 80)


def test_a_speaker_that_fails_is_one_voice_unavailable_per_episode_and_rating_goes_on(
        device_voice: tuple[Device, RecordingVoice]) -> None:
    device, voice = device_voice
    voice.fail = "aplay -D default: audio open error: No such file or directory"
    device.rate("C-1", 5)
    device.rate("C-2", 1)
    (unavailable,) = device.link.events("voice_unavailable")
    assert "audio open error" in unavailable["error"]
    (fault,) = device.link.events("driver_fault")
    assert fault["part"] == "voice"
    assert device.daemon.status()["faults"] == {"voice": voice.fail}
    # A player that plays a clip to its end: the episode is over.
    voice.fail = None
    voice.report(None)
    device.run(0)
    assert device.daemon.status()["faults"] == {}
    (recovered,) = device.link.events("driver_recovered")
    assert recovered["part"] == "voice"
    # A later failure reported by the player's thread: a new episode, a new event.
    voice.report("aplay -D default: device unplugged")
    device.run(0)
    assert len(device.link.events("voice_unavailable")) == 2
    device.rate("C-3", 4)
    device.stop()
    assert sorted(r["case"]["case_id"] for r in device.pending()) == ["C-1", "C-2", "C-3"]


def test_a_voice_broken_from_the_start_is_reported_at_start(tmp_path: Path) -> None:
    device = Device(tmp_path)

    class Broken(RecordingVoice):
        def start(self, emit: Emit, clock: MonotonicClock) -> None:
            super().start(emit, clock)
            self.report("no sound card")

    device.voice = Broken(device.display)
    device.__post_init__()
    device.start()
    device.broker_up()
    assert device.link.events("voice_unavailable")[0]["error"] == "no sound card"
    device.rate("C-1", 5)


def test_screens_are_not_slowed_by_the_voice(
        device_voice: tuple[Device, RecordingVoice]) -> None:
    """The clip is asked for after its screen in the same action list: the thanks screen
    and the `rated` frame do not wait for it."""
    device, voice = device_voice
    shown: list[tuple[str, int]] = []
    original = device.display.show

    def show(screen: Screen) -> None:
        shown.append((screen.name, len(voice.played)))
        original(screen)
    device.display.show = show  # type: ignore[method-assign]
    device.rate("C-1", 5)
    assert ("prompt", 0) in shown and ("thanks", 1) in shown


# --- a real daemon with the sim voice -----------------------------------------------------

def test_a_real_daemon_says_prompt_reasons_thanks_on_the_sim_socket(tmp_path: Path) -> None:
    dev = DeviceProcess(tmp_path, sections={"voice": {"kind": "sim", "volume": 70}})
    try:
        dev.start()
        assert dev.sim is not None and dev.window is not None
        # The socket sends events only to clients its accept thread has taken in, and a
        # connect() returns before that: on a loaded machine the prompt's events went out
        # to nobody (the remembered screen is replayed on accept, a voice clip is not). A
        # status answer comes only to an accepted client.
        dev.sim.request_status()
        assert dev.sim.wait_for(lambda e: e.get("ev") == "status", 15), dev.log()
        voices: list[dict[str, Any]] = []
        dev.sim.listeners.append(lambda e: voices.append(e) if e.get("ev") == "voice" else None)
        order: list[str] = []
        dev.sim.listeners.append(lambda e: order.append(
            f"{e['ev']}:{e.get('screen') or e.get('clip')}")
            if e.get("ev") in ("screen", "voice") else None)
        dev.window.send("case_completed", case_id="C-SIM", service_name="不动产登记")
        assert dev.sim.wait_for(lambda e: e.get("ev") == "voice" and e["clip"] == "prompt",
                                15)
        dev.sim.press(1)
        assert dev.sim.wait_for(lambda e: e.get("ev") == "voice" and e["clip"] == "reasons")
        dev.sim.press(1)                                  # skip the reasons
        assert dev.sim.wait_for(lambda e: e.get("ev") == "voice" and e["clip"] == "thanks")
        assert [v["clip"] for v in voices] == ["prompt", "reasons", "thanks"]
        assert voices[0] == {"ev": "voice", "clip": "prompt", "text": CLIPS["prompt"],
                             "volume": 70}
        # Each clip came after its screen.
        for clip in ("prompt", "reasons", "thanks"):
            assert order.index(f"screen:{clip}") < order.index(f"voice:{clip}"), order
        assert dev.window.wait_for(lambda f: f.get("type") == "rated", 5)
        assert dev.stop() == 0
    finally:
        dev.close()


@pytest.mark.parametrize("voice, why", [
    ({"kind": "pulse"}, "[voice] kind"),
    ({"volume": 101}, "[voice] volume"),
    ({"volume": "80"}, "[voice] volume"),
    ({"read_levels": "true"}, "[voice] read_levels"),
    ({"alsa_device": "plughw:1, 0"}, "[voice] alsa_device"),
    ({"alsa_device": "-v"}, "[voice] alsa_device"),
    ({"alsa_device": ""}, "[voice] alsa_device"),
    ({"clips_dir": "clips"}, "[voice] clips_dir: must be an absolute path"),
    ({"speaker": "usb"}, "[voice] speaker"),                 # unknown keys are errors
])
def test_a_bad_voice_section_is_a_config_error_naming_the_key(
        tmp_path: Path, voice: dict[str, Any], why: str) -> None:
    from common.configschema import ConfigError
    path = tmp_path / "device.toml"
    path.write_text(device_config(tmp_path / "data", "loop://", voice=voice), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_device_config(path)
    assert any(why in p and str(path) in p for p in caught.value.problems), caught.value


# --- hcp-device doctor ----------------------------------------------------------------

def test_doctor_warns_about_a_missing_speaker_and_never_fails_for_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    import device.doctor_hardware as doctor_module
    from tests.test_device_doctor import pi_config

    quiet = load_device_config(pi_config(tmp_path))
    assert not [f for f in doctor_module.check_audio(quiet, None)]   # kind = "none"
    config = load_device_config(pi_config(tmp_path, voice={
        "kind": "alsa", "alsa_device": "plughw:CARD=Device,DEV=0"}))
    if not os.path.exists("/dev/snd"):
        (finding,) = doctor_module.check_audio(config, None)
        assert finding.level == "warn" and "no sound playback device" in finding.detail
        assert finding.part == "voice (plughw:CARD=Device,DEV=0)"
    daemon = {"faults": {"voice": "aplay -D plughw:CARD=Device,DEV=0: audio open error"}}
    (finding,) = doctor_module.check_audio(config, daemon)
    assert finding.level == "warn" and "audio open error" in finding.detail
    assert "hardware-input.md §6" in finding.fix


def test_the_composition_root_builds_the_voice_the_config_names(tmp_path: Path) -> None:
    from device.compose import build_drivers
    from drivers.voice import AlsaVoice, SimVoice
    own = tmp_path / "clips"
    own.mkdir()
    (own / "thanks.wav").write_bytes((Path(CLIPS_DIR) / "prompt.wav").read_bytes())
    for voice, kind in (({"kind": "none"}, type(None)), ({"kind": "sim"}, SimVoice),
                        ({"kind": "alsa", "alsa_device": "null", "volume": 30,
                          "clips_dir": str(own)}, AlsaVoice)):
        path = tmp_path / "device.toml"
        path.write_text(device_config(tmp_path / "data", "loop://", voice=voice),
                        encoding="utf-8")
        drivers = build_drivers(load_device_config(path))
        try:
            assert isinstance(drivers.voice, kind)
            if isinstance(drivers.voice, AlsaVoice):
                assert drivers.voice.device == "null"
                assert drivers.voice.clips["thanks"].source == own / "thanks.wav"
        finally:
            drivers.close()
