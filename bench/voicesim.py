"""Benchmark: a screen and its clip on the sim socket (issue 13, SPEC §10): the real
`hcp-device run` with `[voice] kind = "sim"`, which sends `{"ev": "voice", …}` when a clip
starts; the time from a screen event to its clip's voice event, as a client of the socket
sees them, for the prompt, the reasons and the thanks."""

from __future__ import annotations

from bench.context import Context
from bench.measure import Latency, fmt_ms
from bench.report import Section, Table
from bench.simdevices import COLOUR, SimDevice

BAR_MS = 100.0
CLIPS = ("prompt", "reasons", "thanks")


def measure(device: SimDevice, ratings: int) -> dict[str, list[float]]:
    """{clip: [seconds from the screen event's arrival to its voice event's]}: a case, key
    2 (the reasons), key 1 (skip them: thanks); and "floor": a status round trip after
    each rating."""
    events, window = device.events, device.window
    assert events is not None and device.sim is not None
    samples: dict[str, list[float]] = {clip: [] for clip in (*CLIPS, "floor")}
    for n in range(ratings):
        device.wait_idle()
        for clip in CLIPS:
            mark = events.mark()
            if clip == "prompt":
                window.send("case_completed", case_id=f"V-{n}", service_name="不动产转移登记")
            else:
                device.sim.press(2 if clip == "reasons" else 1)
            try:
                shown = events.wait("screen", clip, mark)
                spoken = events.wait("voice", clip, mark)
            except RuntimeError as e:
                seen = [(k, name) for k, name, _ in events.events[mark - 3:]]
                raise RuntimeError(f"rating {n}: {e}; events since: {seen}\n"
                                   f"{device.log()}") from None
            samples[clip].append(spoken - shown)
        samples["floor"].append(device.status_round_trip())
    device.wait_idle()
    return samples


def run(ctx: Context) -> Section:
    ratings = 10 if ctx.quick else 200
    section = Section(
        "voicesim", "8. Voice: from a screen to its clip, on the sim socket",
        f"`hcp-device run` with sim keys, `[voice] kind = \"sim\"` and the OLED or the "
        f"{COLOUR} colour sim display. The sim voice sends `{{\"ev\": \"voice\", \"clip\": …}}` "
        f"from the voice's worker thread at the moment a real player would be started "
        f"(where ALSA's voice starts `aplay`); the benchmark stamps each screen and voice "
        f"event as it arrives on the socket and takes the difference, for the prompt (a "
        f"case from the window system), the reasons (key 2) and the thanks (key 1 skips "
        f"the reasons) of {ratings} ratings per display. What it measures is the daemon's "
        f"part: the loop handing the clip to the voice thread after the screen was shown, "
        f"and that thread getting to run. The player's own start is in \"Voice: screen to "
        f"clip\" (`--only voice`: the real `aplay`). Baseline: a `status` round trip on "
        f"the same socket after each rating (the transport's floor).")
    table = Table(["display", "clip", "n", "p50", "p99", "max"],
                  title="Screen event → its voice event")
    for label, size in (("OLED 128×64", None), (f"colour {COLOUR}", COLOUR)):
        device = SimDevice(ctx.scratch("voicesim"), size=size, voice=True,
                           ui={"allow_spontaneous": False})
        try:
            device.start()
            samples = measure(device, ratings)
        finally:
            device.close()
        for clip in CLIPS:
            lat = Latency.of_seconds(samples[clip])
            table.add(label, clip, lat.n, fmt_ms(lat.p50), fmt_ms(lat.p99), fmt_ms(lat.max))
        every = Latency.of_seconds([s for clip in CLIPS for s in samples[clip]])
        floor = Latency.of_seconds(samples["floor"])
        table.add(label, "(baseline: status round trip)", floor.n, fmt_ms(floor.p50),
                  fmt_ms(floor.p99), fmt_ms(floor.max))
        section.check(f"screen → voice event, {label}, p99", f"{fmt_ms(every.p99)} (p50 "
                      f"{fmt_ms(every.p50)})", f"{fmt_ms(floor.p99)} (p50 "
                      f"{fmt_ms(floor.p50)}; socket round trip)",
                      f"p99 ≤ {BAR_MS:.0f} ms", every.p99 <= BAR_MS)
    section.tables.append(table)
    return section
