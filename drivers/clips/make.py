"""Makes the built-in voice clips from the table in drivers/clips (a deliberate act, like
the golden images: no test and no daemon ever writes them).

Each text is spoken by espeak-ng's Mandarin voice (Debian `espeak-ng`), then made 16 kHz
mono 16-bit and normalised to -1 dBFS by sox (Debian `sox`), so that one `[voice] volume`
sounds the same on every clip. The manifest records each text's and each file's sha256:
a test then tells a text changed without its clip made again.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from drivers.clips import BUILTIN_DIR, CLIPS, MANIFEST, file_sha256, read_wav, text_sha256

VOICE = "cmn"
# espeak-ng's default rate; its Mandarin voice then says about 2.5 syllables a second,
# slower than a clerk speaks: unhurried for an elderly listener without dragging.
SPEED_WPM = 175
RATE = 16000
TOOLS = {"espeak-ng": "espeak-ng", "sox": "sox"}   # binary -> Debian package


class MakeError(Exception):
    """A tool is missing or failed; the message says which and how to get it."""


def _run(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except OSError as e:
        raise MakeError(f"{argv[0]}: {e.strerror}") from None
    if done.returncode != 0:
        raise MakeError(f"{' '.join(argv)} failed ({done.returncode}): "
                        f"{done.stderr.strip()[-300:]}")
    return done.stdout


def espeak_version() -> str:
    # "eSpeak NG text-to-speech: 1.51  Data at: /usr/lib/…": the version, not the path
    return _run(["espeak-ng", "--version"]).split("Data at")[0].strip()


def write_clips(directory: Path = BUILTIN_DIR, table: dict[str, str] = CLIPS) -> list[str]:
    """Speak every text of `table` into `<directory>/<clip>.wav` and write the manifest;
    the names written."""
    missing = [f"{tool} (apt install {pkg})" for tool, pkg in TOOLS.items()
               if shutil.which(tool) is None]
    if missing:
        raise MakeError("needs " + ", ".join(missing))
    entries: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory(prefix="hcp-clips-") as tmp:
        for name, text in table.items():
            spoken = Path(tmp) / f"{name}.espeak.wav"
            out = directory / f"{name}.wav"
            _run(["espeak-ng", "-v", VOICE, "-s", str(SPEED_WPM), "-w", str(spoken), text])
            # Silence off both ends (the clip starts with its screen, the next clip follows
            # at once), 16 kHz mono 16-bit, peak-normalised: one volume for every clip.
            # -D: no dither, so the same text makes the same bytes (no churn in git).
            _run(["sox", "-D", str(spoken), "-r", str(RATE), "-c", "1", "-b", "16", str(out),
                  "silence", "1", "0.02", "0.5%", "reverse", "silence", "1", "0.02", "0.5%",
                  "reverse", "gain", "-n", "-1"])
            read_wav(name, out)  # what we wrote must pass the rules a hall's clips meet
            entries[name] = {"text": text, "text_sha256": text_sha256(text),
                             "wav_sha256": file_sha256(out)}
    manifest = {
        "made_by": f"{espeak_version()}, voice {VOICE}, {SPEED_WPM} wpm; sox, "
                   f"{RATE} Hz mono 16-bit, -1 dBFS",
        "command": "python -m drivers.clips --write",
        "clips": entries,
    }
    (directory / MANIFEST.name).write_text(
        json.dumps(manifest, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    for stale in directory.glob("*.wav"):
        if stale.stem not in table:
            stale.unlink()
    return list(entries)
