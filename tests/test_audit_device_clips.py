"""A hall's own recordings (`[voice] clips_dir`) with a damaged header: a warning and the
built-in clip, never a daemon that cannot start."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device.config import load_device_config
from drivers.clips import BUILTIN_DIR, ClipError, load_clips, read_wav
from tests.support.device import device_config

GOOD = (BUILTIN_DIR / "thanks.wav").read_bytes()


def with_fmt_size(data: bytes, size: int) -> bytes:
    """`data` (a WAV) with its fmt chunk's size field changed: wave then seeks past the
    end of the RIFF chunk."""
    at = data.index(b"fmt ") + 4
    return data[:at] + size.to_bytes(4, "little") + data[at + 4:]


def test_a_wav_whose_fmt_chunk_is_too_long_is_a_warning_not_a_crash_at_start(
        tmp_path: Path) -> None:
    """The stdlib wave module raises a bare RuntimeError for it, which read_wav let
    through: build_drivers raised, and `hcp-device run` died with a traceback at every
    start (a crash loop) over one damaged recording."""
    from device.compose import build_drivers
    from drivers.voice import AlsaVoice
    clips_dir = tmp_path / "clips"
    clips_dir.mkdir()
    (clips_dir / "thanks.wav").write_bytes(with_fmt_size(GOOD, 0x15000010))
    warnings: list[str] = []
    assert load_clips(clips_dir, warnings.append)["thanks"].source == BUILTIN_DIR / "thanks.wav"
    assert len(warnings) == 1 and "a chunk reaches past the end of the file" in warnings[0]
    path = tmp_path / "device.toml"
    path.write_text(device_config(tmp_path / "data", "loop://", voice={
        "kind": "alsa", "alsa_device": "null", "clips_dir": str(clips_dir)}), encoding="utf-8")
    drivers = build_drivers(load_device_config(path))
    try:
        assert isinstance(drivers.voice, AlsaVoice)
        assert drivers.voice.clips["thanks"].source == BUILTIN_DIR / "thanks.wav"
    finally:
        drivers.close()


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(changes=st.lists(st.tuples(st.integers(0, 59), st.integers(0, 255)), min_size=1,
                        max_size=4),
       size=st.none() | st.integers(0, 2**32 - 1), cut=st.none() | st.integers(0, 200))
def test_any_damaged_header_is_a_clip_or_a_clip_error(
        changes: list[tuple[int, int]], size: int | None, cut: int | None) -> None:
    data = bytearray(GOOD[:4000])
    for at, value in changes:
        data[at] = value
    if size is not None:
        data[16:20] = size.to_bytes(4, "little")
    if cut is not None:
        data = data[:cut]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "thanks.wav"
        path.write_bytes(bytes(data))
        try:
            read_wav("thanks", path)
        except ClipError as e:
            assert str(path) in str(e)


def test_a_fifo_named_like_a_clip_is_refused_not_waited_on(tmp_path: Path) -> None:
    """wave.open() of a FIFO waits for a writer that never comes: build_drivers hung and
    the daemon never started (nor said why)."""
    import os
    import threading
    os.mkfifo(tmp_path / "reasons.wav")
    found: list[object] = []
    loader = threading.Thread(target=lambda: found.append(load_clips(tmp_path, found.append)),
                              daemon=True)
    loader.start()
    loader.join(5)
    if loader.is_alive():   # let the thread go: open the FIFO's other end once
        with open(tmp_path / "reasons.wav", "wb"):
            pass
        loader.join(5)
        raise AssertionError("loading the clips waited on a FIFO")
    warning, clips = found
    assert "not a regular file" in str(warning)
    assert clips["reasons"].source == BUILTIN_DIR / "reasons.wav"  # type: ignore[index]
