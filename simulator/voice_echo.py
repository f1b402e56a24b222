"""What `hcp-sim device` does with the sim voice's events (SPEC §10): a line saying which
clip the evaluator is saying now, and the clip played through this computer's own sound
card where there is one (`aplay` and /dev/snd), with the evaluator's own player
(drivers/voice.py), so that a newer clip cuts the one playing here too."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any

from device.ports import DriverStatus
from drivers.clips import CLIPS, load_clips
from drivers.voice import AlsaVoice

SOUND_DEVICES = Path("/dev/snd")


def local_player_problem(sound_devices: Path | None = None) -> str | None:
    """Why clips cannot be played here, or None when they can be tried."""
    sound_devices = sound_devices or SOUND_DEVICES
    if shutil.which("aplay") is None:
        return "no aplay here (apt install alsa-utils)"
    if not sound_devices.is_dir():
        return f"no sound card here ({sound_devices} is missing)"
    return None


class _Monotonic:
    def monotonic(self) -> float:
        return time.monotonic()


class VoiceEcho:
    """`event(ev)` for every sim event; `line()` for the view. `play` False (--mute) or
    no sound card here: the clips are shown only."""

    def __init__(self, play: bool = True, clips_dir: str | None = None,
                 alsa_device: str = "default") -> None:
        self._lock = threading.Lock()
        self._last: dict[str, Any] | None = None
        self.problem: str | None = None if play else "muted"
        self.player: AlsaVoice | None = None
        if self.problem is None:
            self.problem = local_player_problem()
        if self.problem is None:
            self.player = AlsaVoice(load_clips(clips_dir, warn=lambda _m: None), alsa_device)
            self.player.start(self._status, _Monotonic())

    def _status(self, status: object) -> None:
        if isinstance(status, DriverStatus) and status.error is not None:
            with self._lock:
                self.problem = status.error

    def event(self, ev: dict[str, Any]) -> None:
        """Take a sim event (a SimClient listener): voice events change the line."""
        if ev.get("ev") != "voice":
            return
        clip = ev.get("clip")
        with self._lock:
            self._last = ev
            player = self.player if self.problem is None else None
        if player is not None and isinstance(clip, str) and clip in CLIPS:
            volume = ev.get("volume")
            player.play([clip], volume if isinstance(volume, int) else 80)

    def line(self) -> str:
        with self._lock:
            last, problem = self._last, self.problem
        if last is None:
            return "voice: -"
        text = str(last.get("text") or CLIPS.get(str(last.get("clip")), ""))
        where = "" if problem is None else f"  (shown only: {problem})"
        return f"voice: {last.get('clip')} | {text}{where}"

    def close(self) -> None:
        if self.player is not None:
            self.player.close()
