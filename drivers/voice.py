"""The voice drivers (SPEC §10): the clips of the screens through ALSA's `aplay`, or as
events on the sim socket. Both play on a thread of their own, one clip after another; a
newer `play` cuts whatever is playing at once, and the daemon's loop never waits.

Why `aplay` in a subprocess rather than a Python ALSA binding: every Raspberry Pi OS
image has it (alsa-utils), so the device needs nothing compiled against libasound;
cutting a clip is one signal to one process, which stops the sound at once whatever the
sound card's driver is doing; and a player that hangs or crashes is a process we kill,
not a thread stuck inside the daemon. The volume is applied by scaling the samples here
(a cubic curve, like PulseAudio's software volume) rather than with `amixer`: the mixer
control's name differs per card (PCM, Master, Speaker, Headphone), a mixer setting is
global to the card and outlives the daemon, and some USB speakers have none at all.
The scaling and the WAV packing are drivers/voice_samples.py.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from device.core.model import VOICE_CLIPS
from device.ports import DriverError, DriverStatus, Emit, MonotonicClock
from drivers.clips import CLIPS, ClipAudio, ClipError, load_clips
from drivers.sim import SimServer
from drivers.voice_samples import (
    scale_samples,
    scale_samples_reference,
    volume_factor,
    wav_bytes,
)

log = logging.getLogger("hcp.voice")

# The sample functions live in drivers/voice_samples.py and stay importable from here.
__all__ = ["PLAYER", "PROBE_S", "STALL_S", "AlsaVoice", "SimVoice", "UnavailableVoice",
           "build_voice", "play_and_wait", "scale_samples", "scale_samples_reference",
           "volume_factor", "wav_bytes"]

PLAYER = "aplay"
# How long past its length a clip may take before its player counts as stuck (a USB
# speaker that stopped taking samples): then it is killed and the voice is a fault.
STALL_S = 5.0
PROBE_S = 0.05      # silence played at start: does the device open at all?
ClipStarted = Callable[[str, float], None]   # clip name, monotonic time its player started


class _PlaylistVoice:
    """The Voice port's rules over a way to play one clip (`_play_clip`): one worker
    thread takes the newest request; a newer request cuts the clip playing and drops the
    rest of the older list. Failures go to the daemon as DriverStatus("voice", …)."""

    def __init__(self, clips: Mapping[str, ClipAudio]) -> None:
        missing = [name for name in VOICE_CLIPS if name not in clips]
        if missing:
            raise DriverError(f"voice clips missing: {', '.join(missing)}")
        self.clips = dict(clips)
        self.on_clip: ClipStarted | None = None   # observer (benchmarks, tools)
        self._cond = threading.Condition()
        self._request: tuple[tuple[str, ...], int] | None = None
        self._generation = 0
        self._busy = False
        self._closed = False
        self._emit: Emit | None = None
        self._clock: MonotonicClock | None = None
        self._thread: threading.Thread | None = None

    # --- the port

    def start(self, emit: Emit, clock: MonotonicClock) -> None:
        self._emit, self._clock = emit, clock
        self._ensure_thread()

    def play(self, clips: Sequence[str], volume: int) -> None:
        unknown = [c for c in clips if c not in self.clips]
        if unknown:
            raise DriverError(f"no voice clip {unknown[0][:40]!r}")
        with self._cond:
            if self._closed:
                raise DriverError("voice is closed")
            self._generation += 1
            self._request = (tuple(clips), volume)
            self._interrupt()
            self._cond.notify_all()
        self._ensure_thread()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._generation += 1
            self._interrupt()
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=STALL_S)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Until every requested clip has played (or was cut): for tools and tests."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._busy and self._request is None,
                                       timeout)

    # --- what a kind of voice does

    def _prepare(self) -> None:
        """On the worker thread, before the first request."""

    def _play_clip(self, clip: ClipAudio, volume: int, generation: int) -> str | None:
        """Play one clip to its end or until cut; the failure, or None."""
        raise NotImplementedError

    def _interrupt(self) -> None:
        """Stop the clip playing now (called with the lock held)."""

    # --- the worker

    def _cut(self, generation: int) -> bool:
        return self._closed or self._generation != generation

    def _ensure_thread(self) -> None:
        with self._cond:
            if self._thread is not None or self._closed:
                return
            self._busy = True   # preparing: wait_idle waits for the probe too
            self._thread = threading.Thread(target=self._work, name="voice", daemon=True)
            self._thread.start()

    def _work(self) -> None:
        try:
            self._prepare()
        except Exception as e:  # a broken probe must not end the voice for good
            log.exception("voice: preparing failed")
            self._report(f"unexpected {type(e).__name__}: {e}")
        while True:
            with self._cond:
                while self._request is None and not self._closed:
                    self._busy = False
                    self._cond.notify_all()
                    self._cond.wait()
                if self._closed:
                    self._busy = False
                    self._cond.notify_all()
                    return
                assert self._request is not None
                (names, volume), self._request = self._request, None
                generation = self._generation
                self._busy = True
            for name in names:
                if self._cut(generation):
                    break
                try:
                    error = self._play_clip(self.clips[name], volume, generation)
                except Exception as e:  # the voice thread must outlive a bug in a clip
                    log.exception("voice: playing %s failed", name)
                    error = f"unexpected {type(e).__name__}: {e}"
                if self._cut(generation):
                    break  # cut by a newer clip: neither a failure nor a success
                self._report(error)
                if error is not None:
                    break

    def _started(self, name: str) -> None:
        if self.on_clip is not None and self._clock is not None:
            self.on_clip(name, self._clock.monotonic())

    def _report(self, error: str | None) -> None:
        emit, clock = self._emit, self._clock
        if emit is None or clock is None:
            if error is not None:
                log.warning("voice: %s", error)
            return
        emit(DriverStatus("voice", error, clock.monotonic()))


class AlsaVoice(_PlaylistVoice):
    """Plays clips with `aplay -D <alsa_device>`, the samples scaled to the volume and
    fed through a pipe. A clip cut by a newer one is stopped with SIGTERM at once."""

    def __init__(self, clips: Mapping[str, ClipAudio], device: str = "default",
                 volume: int = 80, player: str = PLAYER) -> None:
        super().__init__(clips)
        self.device = device
        self.player = player
        self._volume_hint = volume
        self._proc: subprocess.Popen[bytes] | None = None
        self._wavs: dict[tuple[str, int], bytes] = {}

    def _prepare(self) -> None:
        # A short silence first: a missing card or player is a fault (and the event
        # voice_unavailable) from the start, not at the first citizen's prompt.
        silence = ClipAudio("probe", 16000, 1, bytes(int(16000 * PROBE_S) * 2),
                            Path("<silence>"))
        error = self._run_player(silence, 100, None)
        if error is not None:
            log.warning("voice: %s; the device rates without it and tries again at each "
                        "clip", error)
            self._report(error)
        # Scale the clips for the configured volume now, off the loop, so the first
        # prompt's player starts without waiting for it.
        for name in self.clips:
            with self._cond:
                if self._request is not None or self._closed:
                    return
            self._wav(self.clips[name], self._volume_hint)

    def _wav(self, clip: ClipAudio, volume: int) -> bytes:
        key = (clip.name, volume)
        data = self._wavs.get(key)
        if data is None:
            if any(v != volume for _, v in self._wavs):
                self._wavs = {k: d for k, d in self._wavs.items() if k[1] == volume}
            data = wav_bytes(scale_samples(clip.frames, volume), clip.rate, clip.channels)
            self._wavs[key] = data
        return data

    def _play_clip(self, clip: ClipAudio, volume: int, generation: int) -> str | None:
        return self._run_player(clip, volume, generation)

    def _run_player(self, clip: ClipAudio, volume: int, generation: int | None) -> str | None:
        data = (self._wav(clip, volume) if generation is not None
                else wav_bytes(clip.frames, clip.rate, clip.channels))
        argv = [self.player, "-q", "-D", self.device, "-t", "wav", "-"]
        try:
            # A session of its own: a cut or a kill reaches whatever the player started
            # (a hall's wrapper script), and nothing keeps the pipes open after it.
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, start_new_session=True)
        except OSError as e:
            return (f"cannot run {self.player}: {e.strerror}"
                    + (" (apt install alsa-utils)" if self.player == PLAYER else ""))
        if generation is not None:  # the probe is not cut: it is over in 50 ms anyway
            with self._cond:
                self._proc = proc
                if self._cut(generation):
                    _signal(proc, signal.SIGTERM)  # a newer clip came while this one started
            self._started(clip.name)
        try:
            _, err = proc.communicate(data, timeout=clip.duration_s + STALL_S)
        except subprocess.TimeoutExpired:
            _signal(proc, signal.SIGKILL)
            proc.communicate()
            return (f"{self.player} -D {self.device} did not finish a {clip.duration_s:.1f} s "
                    f"clip in {clip.duration_s + STALL_S:.1f} s: killed")
        finally:
            if generation is not None:
                with self._cond:
                    self._proc = None
        if proc.returncode == 0:
            return None
        if generation is not None and self._cut(generation):
            return None
        lines = [ln.strip() for ln in err.decode("utf-8", "replace").splitlines() if ln.strip()]
        why = lines[-1] if lines else f"exit status {proc.returncode}"
        return f"{self.player} -D {self.device}: {why[:160]} (see aplay -l, aplay -L)"

    def _interrupt(self) -> None:
        proc = self._proc
        if proc is not None:
            _signal(proc, signal.SIGTERM)


def _signal(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Signal the player's whole process group, while the player is not yet reaped (its
    group id cannot have been reused)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)


class SimVoice(_PlaylistVoice):
    """Tells sim socket clients each clip as it starts (`{"ev": "voice", "clip": …,
    "text": …}`, SPEC §10) and takes the clip's length before the next, as a speaker
    would: what a citizen would hear, and when."""

    def __init__(self, server: SimServer, clips: Mapping[str, ClipAudio]) -> None:
        super().__init__(clips)
        self.server = server
        server.acquire()

    def start(self, emit: Emit, clock: MonotonicClock) -> None:
        super().start(emit, clock)
        try:
            self.server.open()   # clients may listen before the first clip
        except DriverError as e:
            self._report(str(e))

    def _play_clip(self, clip: ClipAudio, volume: int, generation: int) -> str | None:
        event: dict[str, Any] = {"ev": "voice", "clip": clip.name,
                                 "text": CLIPS.get(clip.name, ""), "volume": volume}
        self.server.broadcast(event)
        self._started(clip.name)
        with self._cond:
            self._cond.wait_for(lambda: self._cut(generation), timeout=clip.duration_s)
        return None

    def close(self) -> None:
        super().close()
        self.server.release()


class UnavailableVoice:
    """A voice that cannot be built (its clips do not load: a broken install): a fault
    from the start, and the device rates without it."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def start(self, emit: Emit, clock: MonotonicClock) -> None:
        emit(DriverStatus("voice", self.reason, clock.monotonic()))

    def play(self, clips: Sequence[str], volume: int) -> None:
        raise DriverError(self.reason)

    def close(self) -> None:
        pass


def build_voice(kind: str, clips_dir: str, alsa_device: str, volume: int,
                sim: SimServer | None) -> AlsaVoice | SimVoice | UnavailableVoice:
    """The voice `[voice] kind` asks for ("alsa" or "sim"), with a hall's own clips from
    `clips_dir` where they are playable."""
    try:
        clips = load_clips(clips_dir or None)
    except ClipError as e:
        log.error("voice: the built-in clips do not load (%s): reinstall the package", e)
        return UnavailableVoice(f"built-in clips broken: {e}")
    if kind == "sim":
        assert sim is not None
        return SimVoice(sim, clips)
    return AlsaVoice(clips, alsa_device, volume)


class _Monotonic:
    def monotonic(self) -> float:
        return time.monotonic()


def play_and_wait(clips: Mapping[str, ClipAudio], names: Sequence[str], device: str,
                  volume: int, timeout: float = 120.0) -> str | None:
    """Play `names` through ALSA and wait for them (`python -m drivers.clips --play`): the
    first failure, or None."""
    failures: list[str] = []

    def emit(event: object) -> None:
        if isinstance(event, DriverStatus) and event.error is not None:
            failures.append(event.error)

    voice = AlsaVoice(clips, device, volume)
    voice.start(emit, _Monotonic())
    try:
        voice.play(names, volume)
        voice.wait_idle(timeout)
    finally:
        voice.close()
    return failures[0] if failures else None
