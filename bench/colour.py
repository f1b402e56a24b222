"""Benchmark: press → thanks with the 800×480 colour layout (issue 13), next to the OLED
in the same run: two `hcp-device run` processes with sim keys, one with the 128×64 sim
display, one with `[display] size = "800x480"` (each screen drawn by the colour layout and
sent as a PNG)."""

from __future__ import annotations

from bench.context import Context
from bench.measure import Latency, fmt_ms
from bench.press import PERIOD_S, take_turns
from bench.report import Section, Table
from bench.simdevices import COLOUR, SimDevice

BAR_MS = 30.0


def run(ctx: Context) -> Section:
    presses = 30 if ctx.quick else 600
    section = Section(
        "colour", "6. Press to thanks on the 800×480 colour layout",
        f"As benchmark 2 (empty outbox, no broker, keys 5, 4, 3 in turn; from writing "
        f"`press` to the sim socket until the `thanks` screen event arrives back), for two "
        f"devices in the same run taking turns: the OLED (sim display 128×64) and a colour "
        f"device (`[display] kind = \"sim\"`, `size = \"{COLOUR}\"`): the colour layout "
        f"draws each screen at 800×480 (Noto Sans CJK, the five levels as buttons on idle) "
        f"and the sim display encodes it as a PNG for the event, so the colour time includes "
        f"drawing, the PNG and a ~30–60 KB event instead of 1 KB. {presses:,} presses per "
        f"device. Baselines: the OLED device, and the `status` round trip on the same "
        f"sockets (the transport's floor).")
    oled = SimDevice(ctx.scratch("colour-oled"))
    colour = SimDevice(ctx.scratch("colour-800x480"), size=COLOUR)
    try:
        oled.start()
        colour.start()
        samples, floor = take_turns((oled, colour), presses, PERIOD_S)
    finally:
        oled.close()
        colour.close()

    lat_oled = Latency.of_seconds(samples[0])
    lat_colour = Latency.of_seconds(samples[1])
    base = Latency.of_seconds(floor)
    section.check(
        f"press → thanks, colour {COLOUR}, p99",
        f"{fmt_ms(lat_colour.p99)} (p50 {fmt_ms(lat_colour.p50)})",
        f"OLED {fmt_ms(lat_oled.p99)} (p50 {fmt_ms(lat_oled.p50)}); socket round trip "
        f"{fmt_ms(base.p99)}", f"p99 ≤ {BAR_MS:.0f} ms", lat_colour.p99 <= BAR_MS)
    table = Table(["display", "presses", "p50", "p99", "mean", "max"],
                  title="Press → thanks screen")
    for label, lat in ((f"colour {COLOUR}", lat_colour), ("OLED 128×64", lat_oled),
                       ("(baseline: status round trip)", base)):
        table.add(label, lat.n, fmt_ms(lat.p50), fmt_ms(lat.p99), fmt_ms(lat.mean),
                  fmt_ms(lat.max))
    section.tables.append(table)
    section.notes.append(
        f"Colour ÷ OLED: p50 {lat_colour.p50 / lat_oled.p50:.1f}×, "
        f"p99 {lat_colour.p99 / lat_oled.p99:.1f}×.")
    return section
