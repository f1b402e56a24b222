"""Benchmark: the voice clip's player starts within 100 ms of its screen (issue 13).

The real daemon runs in-process in real time (its loop on a thread of its own, the system
clock), with the real ALSA voice: `aplay` started for every clip, playing to ALSA's
`null` device (no sound card is needed; the process, the pipe and the ALSA open are all
real). A recording display stamps each screen as the panel accepts it; the voice's
observer stamps each player the moment its process has started. A window system on a
fake serial link completes a case, a sim key rates it 2, another skips the reasons:
prompt, reasons and thanks, each screen timed against its clip.

    python -m bench.voice [--ratings N]       # prints the numbers
"""

from __future__ import annotations

import argparse
import json
import queue
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.context import Context
from bench.measure import Latency, fmt_ms
from bench.report import Section, Table
from common.serial_codec import encode_frame
from device.clock import SystemClock
from device.config import load_device_config
from device.core.model import Feedback, KeyDown, KeyUp, Screen
from device.daemon import Daemon
from device.mqtt_events import MqttMessage
from device.ports import Drivers, Emit, MonotonicClock
from drivers.clips import load_clips
from drivers.voice import AlsaVoice
from simulator.tomlfile import toml_text

BAR_MS = 100.0
CLIPS = ("prompt", "reasons", "thanks")


class _Display:
    """Stamps each screen when shown (the loop's thread)."""

    def __init__(self) -> None:
        self.shown: queue.Queue[tuple[str, float]] = queue.Queue()

    def show(self, screen: Screen) -> None:
        self.shown.put((screen.name, time.monotonic()))

    def close(self) -> None:
        pass


class _Quiet:
    def feedback(self, feedback: Feedback) -> None:
        pass

    def close(self) -> None:
        pass


class _Keys:
    def __init__(self) -> None:
        self.emit: Emit | None = None

    def start(self, emit: Emit, clock: MonotonicClock) -> None:
        self.emit = emit

    def press(self, level: int) -> None:
        assert self.emit is not None
        t = time.monotonic()
        self.emit(KeyDown(level, t, input="sim"))
        self.emit(KeyUp(level, t))

    def close(self) -> None:
        pass


class _Serial:
    """The window system's end: frames go in as lines; answers are dropped."""

    def __init__(self) -> None:
        self.on_line: Callable[[bytes], None] | None = None
        self.seq = 0

    def start(self, on_line: Callable[[bytes], None], on_open: Callable[[bool], None]) -> None:
        self.on_line = on_line
        on_open(True)

    def send(self, data: bytes) -> bool:
        return True

    def frame(self, type: str, **fields: Any) -> None:
        assert self.on_line is not None
        self.seq += 1
        self.on_line(encode_frame({"type": type, "seq": self.seq, **fields}).rstrip(b"\n"))

    def close(self) -> None:
        pass


def measure(workdir: Path, ratings: int, new_volume: bool = False) -> dict[str, list[float]]:
    """{clip: [seconds from its screen to its player's start, …]} over `ratings` ratings;
    `new_volume`: the config topic sets a new volume before each rating, so no clip is
    scaled in advance (the worst case: the samples are scaled between screen and player)."""
    data_dir = workdir / "data"
    config_path = workdir / "device.toml"
    config_path.write_text(toml_text({
        "device": {"id": "421100-HG01-W03", "region_code": "421100", "hall_id": "HG01",
                   "window_id": "W03", "window_name": "03号窗口", "data_dir": str(data_dir)},
        "serial": {"port": "loop://"},
        "input": {"kind": "sim"},
        "display": {"kind": "none"},
        "ui": {"thanks_s": 0.1, "lockout_s": 0.0},
        "voice": {"kind": "alsa", "alsa_device": "null"},
        "clock": {"assume_synced": True},
    }), encoding="utf-8")
    config = load_device_config(config_path)
    display, keys, serial = _Display(), _Keys(), _Serial()
    voice = AlsaVoice(load_clips(), config.voice.alsa_device, config.ui.volume)
    started: queue.Queue[tuple[str, float]] = queue.Queue()
    voice.on_clip = lambda name, t: started.put((name, t))
    daemon = Daemon(config, Drivers(keys, display, _Quiet(), serial, voice=voice),
                    clock=SystemClock(config.clock.sync_file, True), mqtt=False)
    daemon.start()
    loop = threading.Thread(target=daemon.serve, name="daemon", daemon=True)
    loop.start()
    voice.wait_idle(10)                       # the probe and the scaled clips are ready
    samples: dict[str, list[float]] = {clip: [] for clip in CLIPS}
    try:
        for n in range(ratings):
            if new_volume:
                payload = json.dumps({"volume": 20 + n % 70}).encode()
                daemon.emit(MqttMessage("config", payload, True, time.monotonic()))
            for clip in CLIPS:
                if clip == "prompt":
                    serial.frame("case_completed", case_id=f"B-{n}")
                else:
                    keys.press(2 if clip == "reasons" else 1)   # a 2, then skip the reasons
                shown_at = _next(display.shown, clip)
                _, playing_at = _next_clip(started, clip)
                samples[clip].append(playing_at - shown_at)
            _next(display.shown, "idle")
            voice.wait_idle(10)
    finally:
        daemon.request_stop("benchmark done")
        loop.join(10)
        daemon.shutdown()
    return samples


def _next(shown: queue.Queue[tuple[str, float]], name: str) -> float:
    while True:
        screen, t = shown.get(timeout=10)
        if screen == name:
            return t


def _next_clip(started: queue.Queue[tuple[str, float]], name: str) -> tuple[str, float]:
    while True:
        clip, t = started.get(timeout=10)
        if clip == name:
            return clip, t


def run(ctx: Context) -> Section:
    ratings = 10 if ctx.quick else 300
    section = Section(
        "voice", "Voice: screen to clip",
        "The daemon in-process in real time with the real ALSA voice: `aplay` is started "
        "for every clip and plays to ALSA's `null` device. From the moment the display "
        "accepts a screen to the moment the clip's player process has started, for the "
        f"prompt, reasons and thanks of {ratings} ratings (a case, key 2, skip).")
    table = Table(["volume", "clip", "n", "p50", "p99", "max"],
                  title="Screen → its clip's player")
    for label, new_volume in (("as configured", False), ("new before each rating", True)):
        samples = measure(ctx.scratch("voice"), ratings, new_volume)
        for clip in CLIPS:
            lat = Latency.of_seconds(samples[clip])
            table.add(label, clip, lat.n, fmt_ms(lat.p50), fmt_ms(lat.p99), fmt_ms(lat.max))
        every = Latency.of_seconds([s for clip in CLIPS for s in samples[clip]])
        section.check(f"screen → its clip's player, volume {label}, p99",
                      f"{fmt_ms(every.p99)} (p50 {fmt_ms(every.p50)})", "—",
                      f"p99 ≤ {BAR_MS:.0f} ms", every.p99 <= BAR_MS)
    section.tables.append(table)
    return section


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.voice", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ratings", type=int, default=300)
    p.add_argument("--new-volume", action="store_true",
                   help="a new volume before each rating: no clip scaled in advance")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hcp-bench-voice-") as tmp:
        samples = measure(Path(tmp), args.ratings, args.new_volume)
    every: list[float] = []
    for clip in CLIPS:
        every += samples[clip]
        print(f"{clip:8} {Latency.of_seconds(samples[clip])}")
    lat = Latency.of_seconds(every)
    print(f"{'all':8} {lat}  bar p99 ≤ {BAR_MS:.0f} ms: "
          f"{'met' if lat.p99 <= BAR_MS else 'MISSED'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
