"""The voice clips (SPEC §10): one table of what each clip says, the WAV files made from
it (checked in beside this file, written only by `python -m drivers.clips --write`), and
the rules a clip file must meet, whether built in or a hall's own recording in
`[voice] clips_dir`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import stat
import wave
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("hcp.voice")

# What each clip says, in the order a citizen hears them through a rating. The level
# clips follow the prompt when `[voice] read_levels` is on: the condition first, then
# the key, as the 12345 hotline says "满意请按1", which elderly citizens know.
CLIPS: dict[str, str] = {
    "prompt": "您好，请对本次服务进行评价",
    "level5": "非常满意，请按5号键",
    "level4": "满意，请按4号键",
    "level3": "基本满意，请按3号键",
    "level2": "不满意，请按2号键",
    "level1": "非常不满意，请按1号键",
    "reasons": "请选择不满意的原因",
    "thanks": "感谢您的评价",
    "error": "评价未能保存，请联系工作人员",
}

BUILTIN_DIR = Path(__file__).resolve().parent
MANIFEST = BUILTIN_DIR / "manifest.json"
WRITE_COMMAND = "python -m drivers.clips --write"

# Bounds for any clip file, built-in or a hall's: a clip shorter than this is a cut or
# empty recording, a longer one would still be talking at the next citizen.
MIN_CLIP_S = 0.3
MAX_CLIP_S = 20.0
RATES = range(8000, 48001)
MAX_CLIP_BYTES = 8 * 1024 * 1024   # 20 s of 48 kHz stereo 16-bit is 3.7 MiB


class ClipError(Exception):
    """A clip file that cannot be played; the message names the file and the reason."""


@dataclass(frozen=True)
class ClipAudio:
    """One clip as 16-bit signed little-endian PCM, ready to scale and play."""

    name: str
    rate: int
    channels: int
    frames: bytes
    source: Path

    @property
    def duration_s(self) -> float:
        return len(self.frames) / (2 * self.channels * self.rate)


def read_wav(name: str, path: Path) -> ClipAudio:
    """The clip in `path`, or ClipError saying why it cannot be played."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            # A FIFO would make wave.open wait for a writer: the daemon would never start.
            raise ClipError(f"{path}: not a regular file")
        size = info.st_size
        if size > MAX_CLIP_BYTES:
            raise ClipError(f"{path}: {size} bytes is too large for a clip "
                            f"(at most {MAX_CLIP_S:g} s)")
        with wave.open(str(path), "rb") as w:
            width, channels, rate, count = (w.getsampwidth(), w.getnchannels(),
                                            w.getframerate(), w.getnframes())
            frames = w.readframes(count)
    except ClipError:
        raise
    except (OSError, EOFError, wave.Error, RuntimeError) as e:
        # RuntimeError: wave's word for a chunk size that reaches past the file's end.
        raise ClipError(f"{path}: not a readable WAV file "
                        f"({str(e) or 'a chunk reaches past the end of the file'})") from None
    if width != 2:
        raise ClipError(f"{path}: {8 * width}-bit samples; clips must be 16-bit PCM "
                        f"(sox IN.wav -b 16 {path.name})")
    if channels not in (1, 2):
        raise ClipError(f"{path}: {channels} channels; clips must be mono or stereo")
    if rate not in RATES:
        raise ClipError(f"{path}: {rate} Hz; clips must be 8000..48000 Hz")
    if len(frames) < count * width * channels:
        raise ClipError(f"{path}: truncated ({len(frames)} of "
                        f"{count * width * channels} bytes of samples)")
    clip = ClipAudio(name, rate, channels, frames, path)
    if not MIN_CLIP_S <= clip.duration_s <= MAX_CLIP_S:
        raise ClipError(f"{path}: {clip.duration_s:.2f} s long; a clip must last "
                        f"{MIN_CLIP_S:g}..{MAX_CLIP_S:g} s")
    return clip


def builtin_path(name: str) -> Path:
    return BUILTIN_DIR / f"{name}.wav"


Warn = Callable[[str], None]


def load_clips(clips_dir: str | Path | None = None,
               warn: Warn = log.warning) -> dict[str, ClipAudio]:
    """Every clip of the table: a hall's own recording `<clips_dir>/<clip>.wav` where
    there is a playable one, the built-in clip otherwise. A broken recording, or a file
    there that is no clip's (a typo such as promt.wav), is a warning, never an error:
    the citizen hears the built-in clip."""
    own = Path(clips_dir) if clips_dir else None
    if own is not None:
        if not own.is_dir():
            warn(f"[voice] clips_dir {own}: not a directory; using the built-in clips")
            own = None
        else:
            try:
                strangers = sorted(p.name for p in own.glob("*.wav") if p.stem not in CLIPS)
            except OSError as e:
                strangers = []
                warn(f"[voice] clips_dir {own}: cannot list it ({e.strerror})")
            if strangers:
                warn(f"[voice] clips_dir {own}: {', '.join(strangers[:10])} "
                     f"{'is' if len(strangers) == 1 else 'are'} no clip's name "
                     f"(the clips: {', '.join(CLIPS)})")
    clips: dict[str, ClipAudio] = {}
    for name in CLIPS:
        if own is not None and (own / f"{name}.wav").exists():
            try:
                clips[name] = read_wav(name, own / f"{name}.wav")
                continue
            except ClipError as e:
                warn(f"[voice] clips_dir: {e}; using the built-in {name} clip")
        clips[name] = read_wav(name, builtin_path(name))
    return clips


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_manifest(path: Path = MANIFEST) -> dict[str, dict[str, str]]:
    """{clip: {"text_sha256", "wav_sha256"}} as the last `--write` left it."""
    data = json.loads(path.read_text(encoding="utf-8"))
    clips = data.get("clips") if isinstance(data, dict) else None
    if not isinstance(clips, dict):
        raise ValueError(f"{path}: no clips table")
    return clips


def manifest_problems(table: Mapping[str, str] = CLIPS,
                      directory: Path = BUILTIN_DIR) -> list[str]:
    """Why the checked-in clips do not match the table (empty when they do): a text
    changed without its clip made again, a clip missing, broken or replaced by hand."""
    try:
        manifest = read_manifest(directory / MANIFEST.name)
    except (OSError, ValueError) as e:
        return [f"clip manifest: {e}; run {WRITE_COMMAND}"]
    problems: list[str] = []
    for name, text in table.items():
        entry = manifest.get(name)
        path = directory / f"{name}.wav"
        if not isinstance(entry, dict):
            problems.append(f"{name}: not in the manifest; run {WRITE_COMMAND}")
            continue
        if entry.get("text_sha256") != text_sha256(text):
            problems.append(f"{name}: its text changed since the clip was made; "
                            f"run {WRITE_COMMAND}")
        if not path.is_file():
            problems.append(f"{name}: {path.name} is missing; run {WRITE_COMMAND}")
            continue
        if entry.get("wav_sha256") != file_sha256(path):
            problems.append(f"{name}: {path.name} is not the file {WRITE_COMMAND} wrote "
                            "(a hall's own recording belongs in [voice] clips_dir)")
        try:
            read_wav(name, path)
        except ClipError as e:
            problems.append(str(e))
    problems += [f"{name}: in the manifest but not in the table; run {WRITE_COMMAND}"
                 for name in manifest if name not in table]
    return problems
