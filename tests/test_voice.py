"""The voice drivers (drivers/voice.py) on their own: the real `aplay` where it can run
(this machine has no sound card: the "null" ALSA device plays, "default" fails), a
stand-in player script where a clip must take time to be cut, and the sim voice through
a real sim socket."""

from __future__ import annotations

import os
import shutil
import stat
import threading
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device.core.model import VOICE_CLIPS
from device.ports import DriverError, DriverStatus
from drivers import voice as voice_mod
from drivers.clips import CLIPS, ClipAudio, load_clips
from drivers.sim import SimServer
from drivers.voice import (
    AlsaVoice,
    SimVoice,
    UnavailableVoice,
    build_voice,
    scale_samples,
    scale_samples_reference,
    volume_factor,
)
from simulator.simclient import SimClient

HAS_APLAY = shutil.which("aplay") is not None
needs_aplay = pytest.mark.skipif(not HAS_APLAY, reason="needs aplay (apt install alsa-utils)")


class Clock:
    def monotonic(self) -> float:
        return time.monotonic()


class Statuses:
    """The daemon's queue as the driver sees it: what it was told, in order."""

    def __init__(self) -> None:
        self.seen: list[DriverStatus] = []
        self._cond = threading.Condition()

    def __call__(self, event: Any) -> None:
        assert isinstance(event, DriverStatus) and event.part == "voice"
        with self._cond:
            self.seen.append(event)
            self._cond.notify_all()

    def wait(self, n: int = 1, timeout: float = 10.0) -> list[DriverStatus]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.seen) >= n, timeout), self.seen
            return list(self.seen)

    @property
    def errors(self) -> list[str]:
        return [s.error for s in self.seen if s.error is not None]


def short_clips(seconds: float = 0.05) -> dict[str, ClipAudio]:
    """Every clip as a short tone (the rules' minimum length does not apply here)."""
    frames = (b"\x00\x40\x00\xc0" * int(16000 * seconds / 2))
    return {name: ClipAudio(name, 16000, 1, frames, Path(f"<{name}>")) for name in VOICE_CLIPS}


def started_log(voice: AlsaVoice | SimVoice) -> list[str]:
    names: list[str] = []
    voice.on_clip = lambda name, t: names.append(name)
    return names


@pytest.fixture
def fake_player(tmp_path: Path) -> Path:
    """A stand-in for aplay: saves the WAV it is fed, then "plays" for FAKE_PLAY_S
    seconds; SIGTERM ends it at once, as it does aplay. Each run logs start and end."""
    script = tmp_path / "fake-aplay"
    script.write_text(f"""#!/bin/sh
log={tmp_path}/player.log
n=$$
trap 'echo "cut $n" >> "$log"; exit 143' TERM
echo "start $n $*" >> "$log"
cat > {tmp_path}/fed.$n.wav
sleep "${{FAKE_PLAY_S:-0}}" &
wait $!
echo "end $n" >> "$log"
exit "${{FAKE_EXIT:-0}}"
""", encoding="utf-8")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def player_log(tmp_path: Path) -> list[str]:
    path = tmp_path / "player.log"
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


@pytest.fixture
def closing() -> Iterator[list[Any]]:
    voices: list[Any] = []
    yield voices
    for v in voices:
        v.close()


# --- the real aplay ---------------------------------------------------------------------

@needs_aplay
@pytest.mark.skipif(os.path.exists("/dev/snd"), reason="this machine has a sound card")
def test_no_sound_card_is_a_fault_from_the_start_and_at_each_clip(closing: list[Any]) -> None:
    statuses = Statuses()
    voice = AlsaVoice(load_clips(), "default")
    closing.append(voice)
    voice.start(statuses, Clock())
    first = statuses.wait(1)[0]
    assert first.error is not None and "aplay -D default" in first.error
    assert "audio open error" in first.error
    voice.play(["prompt"], 80)              # returns at once; the failure comes later
    assert voice.wait_idle(10)
    assert len(statuses.errors) == 2 and all(s.error for s in statuses.seen)


@needs_aplay
def test_clips_play_through_alsa_one_after_another(closing: list[Any]) -> None:
    statuses = Statuses()
    voice = AlsaVoice(load_clips(), "null")  # ALSA's null device: opens, plays, discards
    closing.append(voice)
    names = started_log(voice)
    voice.start(statuses, Clock())
    voice.play(["prompt", "level5", "level4"], 80)
    assert voice.wait_idle(20)
    assert names == ["prompt", "level5", "level4"]
    assert [s.error for s in statuses.seen] == [None, None, None]


def test_a_missing_player_is_a_fault(closing: list[Any], tmp_path: Path) -> None:
    statuses = Statuses()
    voice = AlsaVoice(load_clips(), "default", player=str(tmp_path / "no-aplay"))
    closing.append(voice)
    voice.start(statuses, Clock())
    voice.play(["thanks"], 80)
    assert voice.wait_idle(10)
    errors = statuses.errors
    assert len(errors) == 2 and "cannot run" in errors[0] and "No such file" in errors[0]


# --- cutting, volume, failures: the stand-in player -------------------------------------

def test_a_newer_clip_cuts_the_one_playing_and_the_rest_of_its_list(
        closing: list[Any], fake_player: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    statuses = Statuses()
    voice = AlsaVoice(short_clips(), "plughw:1,0", player=str(fake_player))
    closing.append(voice)
    names = started_log(voice)
    voice.start(statuses, Clock())
    assert voice.wait_idle(10)                  # the probe at start
    monkeypatch.setenv("FAKE_PLAY_S", "30")
    voice.play(["prompt", "level5", "level4"], 80)
    _wait(lambda: any(ln.startswith("start") for ln in player_log(tmp_path)[1:]))
    monkeypatch.setenv("FAKE_PLAY_S", "0")      # the thanks clip plays to its end
    t0 = time.monotonic()
    voice.play(["thanks"], 80)
    assert voice.wait_idle(10), player_log(tmp_path)
    assert time.monotonic() - t0 < 5            # not the 30 s the prompt would have taken
    assert names == ["prompt", "thanks"]
    log = player_log(tmp_path)
    starts = [ln.split()[1] for ln in log if ln.startswith("start")]
    assert len(starts) == 3                     # the probe, prompt, thanks
    assert f"cut {starts[1]}" in log and f"end {starts[2]}" in log
    assert "-D plughw:1,0" in log[0]
    # Cut clips are neither failures nor successes; the thanks clip played: it works.
    assert [s.error for s in statuses.seen] == [None]


def test_the_volume_scales_the_samples_fed_to_the_player(
        closing: list[Any], fake_player: Path, tmp_path: Path) -> None:
    clips = short_clips(0.5)
    voice = AlsaVoice(clips, player=str(fake_player))
    closing.append(voice)
    statuses = Statuses()
    voice.start(statuses, Clock())
    for volume in (100, 50, 0):
        voice.play(["thanks"], volume)
        assert voice.wait_idle(10)
    fed = sorted(tmp_path.glob("fed.*.wav"), key=lambda p: p.stat().st_mtime_ns)[-3:]
    samples = []
    for path in fed:
        with wave.open(str(path), "rb") as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
            samples.append(w.readframes(w.getnframes()))
    assert samples[0] == clips["thanks"].frames
    assert samples[1] == scale_samples(clips["thanks"].frames, 50)
    assert max(samples[1]) > 0 and samples[1] != samples[0]
    assert samples[2] == bytes(len(samples[0]))


def test_a_player_that_fails_later_is_reported_with_its_words(
        closing: list[Any], fake_player: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_EXIT", "1")
    statuses = Statuses()
    voice = AlsaVoice(short_clips(), player=str(fake_player))
    closing.append(voice)
    voice.start(statuses, Clock())
    voice.play(["prompt", "level5"], 80)
    assert voice.wait_idle(10)
    assert len(statuses.errors) == 2            # the probe, then prompt: level5 not tried
    assert "exit status 1" in statuses.errors[1]
    monkeypatch.setenv("FAKE_EXIT", "0")
    voice.play(["thanks"], 80)
    assert voice.wait_idle(10)
    assert statuses.seen[-1].error is None      # works again: the fault can end


def test_a_stuck_player_is_killed_and_reported(
        closing: list[Any], fake_player: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(voice_mod, "STALL_S", 0.3)
    statuses = Statuses()
    voice = AlsaVoice(short_clips(), player=str(fake_player))
    closing.append(voice)
    voice.start(statuses, Clock())
    assert voice.wait_idle(10)
    monkeypatch.setenv("FAKE_PLAY_S", "30")
    voice.play(["error"], 80)
    assert voice.wait_idle(10)
    assert "did not finish" in statuses.errors[-1]


def test_play_returns_at_once_whatever_the_player_does(
        closing: list[Any], fake_player: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    voice = AlsaVoice(short_clips(), player=str(fake_player))
    closing.append(voice)
    voice.start(Statuses(), Clock())
    assert voice.wait_idle(10)
    monkeypatch.setenv("FAKE_PLAY_S", "30")
    for clip in ("prompt", "reasons", "thanks", "error"):
        t0 = time.monotonic()
        voice.play([clip], 80)
        assert time.monotonic() - t0 < 1.0      # never the 30 s the player takes


def test_unknown_clips_and_a_closed_voice_are_driver_errors(closing: list[Any]) -> None:
    voice = AlsaVoice(short_clips(), "null")
    with pytest.raises(DriverError, match="no voice clip 'hello'"):
        voice.play(["prompt", "hello"], 80)
    voice.close()
    with pytest.raises(DriverError, match="closed"):
        voice.play(["prompt"], 80)


def test_a_voice_without_its_clips_cannot_be_built() -> None:
    clips = short_clips()
    del clips["level3"]
    with pytest.raises(DriverError, match="level3"):
        AlsaVoice(clips)


def test_broken_built_in_clips_make_an_unavailable_voice(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import drivers.clips as clips_mod
    monkeypatch.setattr(clips_mod, "BUILTIN_DIR", tmp_path)   # an install without them
    voice = build_voice("alsa", "", "default", 80, None)
    assert isinstance(voice, UnavailableVoice)
    statuses = Statuses()
    voice.start(statuses, Clock())
    assert statuses.errors and "built-in clips broken" in statuses.errors[0]
    with pytest.raises(DriverError):
        voice.play(["prompt"], 80)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(-32768, 32767), max_size=200), st.integers(0, 100),
       st.integers(0, 100))
def test_a_lower_volume_never_makes_a_sample_louder(
        samples: list[int], low: int, high: int) -> None:
    low, high = sorted((low, high))
    frames = b"".join(s.to_bytes(2, "little", signed=True) for s in samples)

    def values(data: bytes) -> list[int]:
        return [int.from_bytes(data[i:i + 2], "little", signed=True)
                for i in range(0, len(data), 2)]

    quiet, loud = values(scale_samples(frames, low)), values(scale_samples(frames, high))
    assert all(abs(q) <= abs(ld) <= abs(s) for q, ld, s in zip(quiet, loud, samples,
                                                               strict=True))
    assert scale_samples(frames, 100) == frames
    assert scale_samples(frames, 0) == bytes(len(frames))
    assert volume_factor(80) == pytest.approx(0.512)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(-32768, 32767), max_size=500), st.integers(-5, 105))
def test_the_fast_scaling_is_the_plain_rule(samples: list[int], volume: int) -> None:
    frames = b"".join(s.to_bytes(2, "little", signed=True) for s in samples)
    assert scale_samples(frames, volume) == scale_samples_reference(frames, volume)


def test_the_fast_scaling_on_every_sample_value() -> None:
    frames = b"".join(s.to_bytes(2, "little", signed=True) for s in range(-32768, 32768))
    for volume in (1, 33, 50, 80, 99):
        assert scale_samples(frames, volume) == scale_samples_reference(frames, volume)


# --- the sim voice ----------------------------------------------------------------------

def test_the_sim_voice_tells_clients_each_clip_as_it_starts(
        tmp_path: Path, closing: list[Any]) -> None:
    server = SimServer(tmp_path / "sim.sock")
    voice = SimVoice(server, short_clips(0.05))
    closing.append(voice)
    statuses = Statuses()
    voice.start(statuses, Clock())
    client = SimClient(server.path)
    try:
        _wait(lambda: len(server._clients) == 1)
        voice.play(["prompt", "level5"], 60)
        first = client.wait_for(lambda e: e.get("ev") == "voice")
        second = client.wait_for(lambda e: e.get("ev") == "voice")
        assert first == {"ev": "voice", "clip": "prompt", "text": CLIPS["prompt"],
                         "volume": 60}
        assert second is not None and second["clip"] == "level5"
        assert second["text"] == "非常满意，请按5号键"
        assert voice.wait_idle(5)
    finally:
        client.close()


def test_the_sim_voice_takes_each_clips_time_and_a_newer_clip_cuts_it(
        tmp_path: Path, closing: list[Any]) -> None:
    server = SimServer(tmp_path / "sim.sock")
    voice = SimVoice(server, short_clips(30.0))   # clips that would last 30 s
    closing.append(voice)
    names = started_log(voice)
    voice.start(Statuses(), Clock())
    voice.play(["prompt", "level5", "level4"], 80)
    _wait(lambda: names == ["prompt"])
    voice.play(["thanks"], 80)
    _wait(lambda: names == ["prompt", "thanks"])
    voice.close()                                  # cuts the thanks clip too
    assert names == ["prompt", "thanks"]


def _wait(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
