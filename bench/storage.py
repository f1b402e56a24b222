"""Benchmark 1: the cost of storing one rating durably, at backlogs 0, 1,000 and 10,000,
for our outbox, TinyDB's default JSON storage and SQLite in WAL mode."""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.context import Context
from bench.measure import Latency, fmt_bytes, fmt_ms, write_bytes
from bench.ratings import make_rating
from bench.report import Section, Table
from bench.stores import OurOutbox, RatingStore, SqliteWal, TinyDBDefault

OURS, TINYDB, SQLITE = "ours", "tinydb", "sqlite"
FACTORIES: dict[str, Callable[[Path], RatingStore]] = {
    OURS: OurOutbox, TINYDB: TinyDBDefault, SQLITE: SqliteWal}
NAMES = {OURS: OurOutbox.name, TINYDB: TinyDBDefault.name, SQLITE: SqliteWal.name}


@dataclass(frozen=True)
class Cell:
    """Stores timed at one backlog for one store."""

    backlog: int
    latency: Latency
    bytes_per_rating: float


def samples(kind: str, backlog: int, quick: bool) -> int:
    """How many consecutive stores are timed at a backlog. TinyDB rewrites its whole file
    on every insert (about 25 ms at 10,000), so it gets a sample there, not 10,000."""
    if quick:
        return 10 if kind == TINYDB and backlog else 50
    if kind == TINYDB:
        return {0: 200, 1000: 100}.get(backlog, 50)
    return 1000


def measure(kind: str, directory: Path, backlog: int, n: int) -> Cell:
    store = FACTORIES[kind](directory)
    try:
        store.fill(make_rating(seq) for seq in range(1, backlog + 1))
        ratings = [make_rating(seq) for seq in range(backlog + 1, backlog + n + 1)]
        os.sync()  # what filling left dirty must not be counted against the timed stores
        gc.collect()
        times: list[float] = []
        before = write_bytes()
        for rating in ratings:
            started = time.perf_counter()
            store.store(rating)
            times.append(time.perf_counter() - started)
        written = write_bytes() - before
    finally:
        store.close()
    return Cell(backlog, Latency.of_seconds(times), written / n)


def run(ctx: Context) -> Section:
    backlogs = (0, 1000) if ctx.quick else (0, 1000, 10_000)
    section = Section(
        "storage", "1. Outbox storage: one durable rating",
        "Each store is a fresh directory filled to the backlog (not timed), then "
        "`n` consecutive ratings (about 600 bytes of JSON each) are stored one by one, each "
        "durable before the call returns, and timed with `perf_counter`. Bytes are "
        "`write_bytes` from `/proc/self/io` over the timed stores, divided by `n`: what "
        "the process sent to the block layer, page by page (the file system's own journal "
        "writes, done by a kernel thread, are not in it for any of the three). Baselines: "
        "(b) TinyDB 4.9 with its default `JSONStorage` (each insert re-reads and rewrites "
        "the whole file, then fsyncs); (c) `sqlite3` in WAL mode with `synchronous=FULL`, "
        "one autocommitted INSERT per rating. The cost of a rating is taken as its median "
        "latency (the machine is shared, so the median resists other people's work) and its "
        "bytes written; mean, p99 and max are shown too.")
    results: dict[tuple[str, int], Cell] = {}
    for kind in (OURS, SQLITE, TINYDB):
        for backlog in backlogs:
            n = samples(kind, backlog, ctx.quick)
            results[kind, backlog] = measure(kind, ctx.scratch(f"{kind}-{backlog}"), backlog, n)

    table = Table(["store", "backlog", "n timed", "p50", "p99", "mean", "max",
                   "bytes written / rating"], title="Per stored rating")
    for kind in (OURS, TINYDB, SQLITE):
        for backlog in backlogs:
            c = results[kind, backlog]
            table.add(NAMES[kind], f"{backlog:,}", c.latency.n, fmt_ms(c.latency.p50),
                      fmt_ms(c.latency.p99), fmt_ms(c.latency.mean), fmt_ms(c.latency.max),
                      fmt_bytes(c.bytes_per_rating))
    section.tables.append(table)

    top = backlogs[-1]
    ours0, ours_top = results[OURS, 0], results[OURS, top]
    tiny, lite = results[TINYDB, top], results[SQLITE, top]
    growth_t = ours_top.latency.p50 / ours0.latency.p50
    growth_b = ours_top.bytes_per_rating / max(1.0, ours0.bytes_per_rating)
    section.check(f"ours: latency at {top:,} ÷ at 0 (p50)",
                  f"{growth_t:.2f}× ({fmt_ms(ours_top.latency.p50)} vs "
                  f"{fmt_ms(ours0.latency.p50)})", "—", "≤ 2×", growth_t <= 2)
    section.check(f"ours: bytes at {top:,} ÷ at 0",
                  f"{growth_b:.2f}× ({fmt_bytes(ours_top.bytes_per_rating)} vs "
                  f"{fmt_bytes(ours0.bytes_per_rating)})", "—", "≤ 2×", growth_b <= 2)
    fewer = tiny.bytes_per_rating / max(1.0, ours_top.bytes_per_rating)
    section.check(f"bytes per rating at {top:,}: TinyDB ÷ ours",
                  f"{fmt_bytes(ours_top.bytes_per_rating)}",
                  f"{fmt_bytes(tiny.bytes_per_rating)} (TinyDB)",
                  "≥ 100× fewer than TinyDB", fewer >= 100)
    vs_t = ours_top.latency.p50 / lite.latency.p50
    section.check(f"latency at {top:,} (p50): ours ÷ SQLite",
                  f"{fmt_ms(ours_top.latency.p50)} ({vs_t:.2f}×)",
                  f"{fmt_ms(lite.latency.p50)} (SQLite)", "≤ 2×", vs_t <= 2)
    vs_b = ours_top.bytes_per_rating / max(1.0, lite.bytes_per_rating)
    section.check(f"bytes per rating at {top:,}: ours ÷ SQLite",
                  f"{fmt_bytes(ours_top.bytes_per_rating)} ({vs_b:.2f}×)",
                  f"{fmt_bytes(lite.bytes_per_rating)} (SQLite)", "≤ 2×", vs_b <= 2)
    # TinyDB's cost grows linearly with the file: single inserts up to `top` average half
    # the cost of one at `top`.
    minutes = top * tiny.latency.mean / 2 / 1000 / 60
    section.notes.append(
        f"TinyDB was timed on {tiny.latency.n} consecutive inserts at backlog {top:,}, not "
        f"{top:,}: its {top:,}-document file is built once with one `insert_multiple`, and "
        f"each timed insert then rewrites all of it ({top:,} single inserts would take about "
        f"{minutes:.0f} minutes at these speeds). Its p99 over so few samples is close to its "
        "max.")
    section.notes.append(
        "Our store writes more than the rating: its record also carries the case memory "
        "(for the 24 h duplicate-case rule) and the next seq. An append of ~700 bytes "
        "dirties one or two 4 KiB pages, hence ~4–8 KiB per rating in `write_bytes`.")
    return section
