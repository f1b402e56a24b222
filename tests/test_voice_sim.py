"""`hcp-sim device` and the voice (SPEC §10): a line under the screen says which clip the
evaluator is saying, through a whole rating; on a computer with a sound card it is also
played here (this machine has none: the line says it is shown only)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from drivers.clips import CLIPS
from simulator import voice_echo
from simulator.voice_echo import VoiceEcho, local_player_problem
from tests.support.device import ROOT
from tests.test_sim_terminal import Pty


def test_the_simulator_shows_each_clip_through_a_rating(tmp_path: Path) -> None:
    t = Pty([sys.executable, "-m", "simulator.cli", "device", "--data-dir", str(tmp_path),
             "--broker", "127.0.0.1:9"], ROOT)
    try:
        t.expect(r"screen: idle")
        t.expect(r"voice: -")
        t.send("c")
        t.expect(r"voice: prompt \| 您好，请对本次服务进行评价")
        t.send("2")
        t.expect(r"voice: reasons \| 请选择不满意的原因")
        t.send("1")
        t.expect(r"voice: thanks \| 感谢您的评价")
        t.send("q")
        assert t.wait() == 0
    finally:
        t.close()
    # The daemon it started ran with the sim voice.
    assert 'kind = "sim"' in (tmp_path / "device-sim.toml").read_text(encoding="utf-8")


def test_without_a_sound_card_clips_are_shown_only(tmp_path: Path) -> None:
    echo = VoiceEcho(play=True)
    try:
        assert echo.line() == "voice: -"
        echo.event({"ev": "screen", "screen": "prompt"})
        assert echo.line() == "voice: -"
        echo.event({"ev": "voice", "clip": "thanks", "text": CLIPS["thanks"], "volume": 80})
        line = echo.line()
        assert line.startswith("voice: thanks | 感谢您的评价")
        if local_player_problem() is not None:
            assert echo.player is None and "(shown only: no " in line
    finally:
        echo.close()
    muted = VoiceEcho(play=False)
    muted.event({"ev": "voice", "clip": "prompt", "text": CLIPS["prompt"]})
    assert muted.line().endswith("(shown only: muted)")


@pytest.mark.skipif(shutil.which("aplay") is None, reason="needs aplay")
def test_where_there_is_a_card_the_clip_is_played_here(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A computer with a sound card: the echo plays through the evaluator's own player
    (here ALSA's null device stands in for the card)."""
    monkeypatch.setattr(voice_echo, "SOUND_DEVICES", tmp_path)   # "a card is here"
    echo = VoiceEcho(play=True, alsa_device="null")
    try:
        assert echo.player is not None
        played: list[str] = []
        echo.player.on_clip = lambda name, t: played.append(name)
        echo.event({"ev": "voice", "clip": "prompt", "text": CLIPS["prompt"], "volume": 50})
        assert echo.player.wait_idle(10)
        assert played == ["prompt"]
        assert echo.line() == f"voice: prompt | {CLIPS['prompt']}"
    finally:
        echo.close()
