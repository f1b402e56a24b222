"""The voice clips (SPEC §10): the table, the checked-in WAV files made from it, and a
hall's own recordings in `[voice] clips_dir`. The clips are never made by a test: a text
changed without `python -m drivers.clips --write` fails here, naming the command."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import wave
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device.core.model import LEVEL_LABELS, VOICE_CLIPS
from drivers.clips import (
    BUILTIN_DIR,
    CLIPS,
    MAX_CLIP_S,
    MIN_CLIP_S,
    WRITE_COMMAND,
    ClipError,
    load_clips,
    manifest_problems,
    read_manifest,
    read_wav,
)
from tests.support.device import ROOT


def write_wav(path: Path, seconds: float = 1.0, rate: int = 16000, channels: int = 1,
              width: int = 2) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(b"\x10\x00" * int(seconds * rate) * channels * (width // 2 or 1))
    return path


# --- the table and the checked-in files -------------------------------------------------

def test_the_table_has_a_clip_for_each_clip_the_core_asks_for() -> None:
    assert set(CLIPS) == set(VOICE_CLIPS)
    assert CLIPS["prompt"] == "您好，请对本次服务进行评价"
    assert CLIPS["reasons"] == "请选择不满意的原因"
    assert CLIPS["thanks"] == "感谢您的评价"
    assert CLIPS["error"] == "评价未能保存，请联系工作人员"
    for level, label in LEVEL_LABELS.items():   # which level, and which key
        text = CLIPS[f"level{level}"]
        assert text.startswith(label + "，") and f"按{level}号键" in text, text


@pytest.mark.parametrize("name", list(CLIPS))
def test_every_clip_is_a_small_16khz_mono_wav_of_a_sane_length(name: str) -> None:
    path = BUILTIN_DIR / f"{name}.wav"
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 16000)
    clip = read_wav(name, path)
    assert MIN_CLIP_S <= clip.duration_s <= 8.0, clip.duration_s
    # Speech, not silence: some sample reaches near full scale (normalised to -1 dBFS).
    peak = max(abs(int.from_bytes(clip.frames[i:i + 2], "little", signed=True))
               for i in range(0, len(clip.frames), 2))
    assert peak > 20000


def test_the_checked_in_clips_match_the_table() -> None:
    assert manifest_problems() == []


def test_a_changed_text_without_new_clips_names_the_command(tmp_path: Path) -> None:
    for f in BUILTIN_DIR.glob("*.wav"):
        shutil.copy(f, tmp_path)
    shutil.copy(BUILTIN_DIR / "manifest.json", tmp_path)
    table = dict(CLIPS, thanks="谢谢您的评价")
    problems = manifest_problems(table, tmp_path)
    assert problems == [f"thanks: its text changed since the clip was made; run {WRITE_COMMAND}"]
    # A new clip in the table without its file, a file replaced by hand.
    (tmp_path / "thanks.wav").write_bytes((BUILTIN_DIR / "error.wav").read_bytes())
    problems = manifest_problems(dict(CLIPS, goodbye="再见"), tmp_path)
    assert any(p.startswith("goodbye: not in the manifest") for p in problems), problems
    assert any(p.startswith("thanks: thanks.wav is not the file") for p in problems), problems
    (tmp_path / "error.wav").unlink()
    assert f"error: error.wav is missing; run {WRITE_COMMAND}" in manifest_problems(
        CLIPS, tmp_path)


def test_the_check_command_agrees() -> None:
    done = subprocess.run([sys.executable, "-m", "drivers.clips", "--check"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"{len(CLIPS)} clips match the table" in done.stdout


def test_the_manifest_records_each_text_as_spoken() -> None:
    manifest = read_manifest()
    assert {name: entry["text"] for name, entry in manifest.items()} == CLIPS


def test_the_clips_ship_with_the_package() -> None:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert '"drivers.clips" = ["*.wav", "manifest.json"]' in text


@pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("sox") is None,
                    reason="making clips needs espeak-ng and sox (a developer's tools)")
def test_the_make_command_makes_clips_that_pass_the_rules(tmp_path: Path) -> None:
    """Into a scratch folder, never over the checked-in clips."""
    from drivers.clips.make import write_clips
    table = {"thanks": CLIPS["thanks"], "level4": CLIPS["level4"]}
    (tmp_path / "stale.wav").write_bytes(b"RIFF")
    assert write_clips(tmp_path, table) == ["thanks", "level4"]
    assert manifest_problems(table, tmp_path) == []
    assert not (tmp_path / "stale.wav").exists()
    manifest = json.loads((tmp_path / "manifest.json").read_text(encoding="utf-8"))
    assert "espeak" in manifest["made_by"].lower() and "16000 Hz" in manifest["made_by"]


# --- a hall's own recordings ------------------------------------------------------------

def test_a_halls_recording_replaces_the_built_in_clip(tmp_path: Path) -> None:
    own = write_wav(tmp_path / "prompt.wav", seconds=2.0, rate=44100, channels=2)
    warnings: list[str] = []
    clips = load_clips(tmp_path, warnings.append)
    assert clips["prompt"].source == own
    assert (clips["prompt"].rate, clips["prompt"].channels) == (44100, 2)
    assert clips["prompt"].duration_s == pytest.approx(2.0)
    assert clips["thanks"].source == BUILTIN_DIR / "thanks.wav"
    assert warnings == []


@pytest.mark.parametrize("content, why", [
    (b"not a wav at all", "not a readable WAV file"),
    (b"", "not a readable WAV file"),
])
def test_a_broken_recording_is_a_warning_and_the_built_in_clip_plays(
        tmp_path: Path, content: bytes, why: str) -> None:
    (tmp_path / "thanks.wav").write_bytes(content)
    warnings: list[str] = []
    clips = load_clips(tmp_path, warnings.append)
    assert clips["thanks"].source == BUILTIN_DIR / "thanks.wav"
    assert len(warnings) == 1 and why in warnings[0] and "built-in thanks clip" in warnings[0]


@pytest.mark.parametrize("make, why", [
    (lambda p: write_wav(p, width=1), "8-bit samples"),
    (lambda p: write_wav(p, seconds=0.1), "0.10 s long"),
    (lambda p: write_wav(p, seconds=MAX_CLIP_S + 1, rate=8000), "s long"),
    (lambda p: write_wav(p, rate=96000), "96000 Hz"),
])
def test_recordings_the_device_cannot_play_well_are_refused(
        tmp_path: Path, make: object, why: str) -> None:
    path = tmp_path / "error.wav"
    make(path)  # type: ignore[operator]
    with pytest.raises(ClipError, match=why):
        read_wav("error", path)
    warnings: list[str] = []
    assert load_clips(tmp_path, warnings.append)["error"].source == BUILTIN_DIR / "error.wav"
    assert warnings and why in warnings[0]


def test_a_truncated_recording_is_refused(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "prompt.wav", seconds=2.0)
    path.write_bytes(path.read_bytes()[:-8000])   # a copy cut short
    with pytest.raises(ClipError, match="truncated"):
        read_wav("prompt", path)


def test_a_misnamed_recording_and_a_missing_folder_are_warnings(tmp_path: Path) -> None:
    write_wav(tmp_path / "promt.wav")
    warnings: list[str] = []
    clips = load_clips(tmp_path, warnings.append)
    assert clips["prompt"].source == BUILTIN_DIR / "prompt.wav"
    assert len(warnings) == 1 and "promt.wav is no clip's name" in warnings[0]
    warnings.clear()
    load_clips(tmp_path / "nowhere", warnings.append)
    assert len(warnings) == 1 and "not a directory" in warnings[0]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_are_a_clip_or_a_clip_error(data: bytes) -> None:
    """Whatever a hall puts in clips_dir, loading it never raises anything else."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "thanks.wav"
        # A valid header in front half the time, so the checks past the header run too.
        header = write_wav(Path(tmp) / "h.wav", seconds=0.5).read_bytes()[:44]
        path.write_bytes(header + data if len(data) % 2 else data)
        try:
            read_wav("thanks", path)
        except ClipError as e:
            assert str(path) in str(e)
