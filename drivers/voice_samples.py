"""The samples the voice plays: a clip's 16-bit PCM scaled to a 0..100 volume on a
cubic curve (like PulseAudio's software volume; drivers/voice.py says why not `amixer`),
with Pillow's C loop and a plain-Python reference it must match, and packed as a WAV for
`aplay`'s stdin. Pure: a change of the volume curve or the sample format lands here;
playing, cutting and reporting the player, in drivers/voice.py."""

from __future__ import annotations

import array
import io
import sys
import wave

from PIL import Image

__all__ = ["scale_samples", "scale_samples_reference", "volume_factor", "wav_bytes"]


def volume_factor(volume: int) -> float:
    """The amplitude factor of a 0..100 volume: cubic, so that each step sounds like an
    equal step (80 is about -6 dB, 50 about -18 dB), as PulseAudio maps its volume."""
    v = min(100, max(0, volume)) / 100
    return v * v * v


def scale_samples(frames: bytes, volume: int) -> bytes:
    """16-bit little-endian PCM at `volume`: Pillow's C loop does the multiplying (a
    5-second clip in 3 ms here instead of 17, which matters on a Pi's slow core the
    first time a clip plays at a new volume)."""
    if volume >= 100:
        return frames
    if volume <= 0:
        return bytes(len(frames))
    n = len(frames) // 2
    if sys.byteorder != "little" or n == 0:
        return scale_samples_reference(frames, volume)
    factor = volume_factor(volume)
    # One row of 32-bit pixels holding the samples; point() truncates towards zero as
    # int() does. The low two bytes of each little-endian int32 are the int16 sample.
    wide = Image.frombytes("I", (n, 1), frames[:2 * n], "raw", "I;16S")
    scaled = wide.point(lambda x: x * factor).tobytes("raw", "I")
    out = bytearray(2 * n)
    out[0::2] = scaled[0::4]
    out[1::2] = scaled[1::4]
    return bytes(out)


def scale_samples_reference(frames: bytes, volume: int) -> bytes:
    """The same in plain Python: the rule scale_samples must follow (tests compare)."""
    if volume >= 100:
        return frames
    if volume <= 0:
        return bytes(len(frames))
    samples = array.array("h")
    samples.frombytes(frames)
    if sys.byteorder == "big":
        samples.byteswap()
    factor = volume_factor(volume)
    scaled = array.array("h", [int(s * factor) for s in samples])
    if sys.byteorder == "big":
        scaled.byteswap()
    return scaled.tobytes()


def wav_bytes(frames: bytes, rate: int, channels: int) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames)
    return out.getvalue()
