"""Benchmarks of the city platform (`hcp-platform`, SPEC §11):

1. ingest through the §9 HTTP API in batches of 100, into PostgreSQL and into SQLite in
   the same run (`hcp-platform run` in its own process, four client connections);
   and the same stores with the bridge in front: `hcp-sim fleet` → mosquitto →
   `hcp-bridge run` → `hcp-platform run` (bench/citychain.py; a figure, no bar);
2. `hcp-platform report` for one month of a province-sized city (10 M ratings over
   2,000 windows in PostgreSQL), against the old load-everything report
   (`hcp-bridge report`, every record read into Python) on a 1 M subset in SQLite.

    python -m bench.cityplatform [--quick] [--ratings N] [--subset N]

`run(ctx)` is the `python -m bench` entry (register "cityplatform" in bench/__main__.py).
"""

from __future__ import annotations

import argparse
import http.client
import json
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from bench.citychain import CityPlatform, chain_method, chain_table, run_chain
from bench.context import Context
from bench.report import Section, Table
from simulator.localpostgres import PostgresServer

BATCH = 100
CLIENTS = 4
WINDOWS = 2000
MONTH_FIRST, MONTH_LAST = date(2026, 11, 1), date(2026, 11, 30)


def _rating(i: int) -> dict[str, Any]:
    window = i % WINDOWS
    level = 1 + (i * 7) % 5
    day = MONTH_FIRST + timedelta(days=i % 30)
    return {
        "schema": "hcp.rating/1", "rating_id": uuid.uuid4().hex, "seq": i + 1,
        "device_id": f"421100-HG{window // 50:02d}-W{window % 50:02d}",
        "region_code": "421100", "hall_id": f"HG{window // 50:02d}",
        "window_id": f"W{window % 50:02d}", "level": level,
        "reason": f"R0{1 + i % 4}" if level <= 2 else None, "trigger": "case",
        "input": "button",
        "case": {"case_id": f"CASE-{i:09d}", "service_code": "11421100MB1234567X",
                 "service_name": "不动产登记（转移登记）", "dept_code": "421100-ZRZY",
                 "completed_at": f"{day}T10:31:02+08:00"},
        "staff": {"staff_id": "S0042", "staff_name": "王晓红"},
        "rated_at": f"{day}T02:{(i // 60) % 60:02d}:{i % 60:02d}.000Z",
        "clock_synced": True,
    }


# 1. Ingest ----------------------------------------------------------------------------

def _post_all(port: int, bodies: list[bytes]) -> tuple[float, list[float]]:
    """Post every body over CLIENTS kept-alive connections; (seconds, latencies)."""
    latencies: list[float] = []
    lock = threading.Lock()
    errors: list[str] = []

    def client(part: list[bytes]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine = []
        for body in part:
            t0 = time.perf_counter()
            conn.request("POST", "/api/ratings", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            data = response.read()
            mine.append(time.perf_counter() - t0)
            if response.status != 200 or b'"rejected"' in data:
                errors.append(f"HTTP {response.status}: {data[:200]!r}")
        conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(bodies[i::CLIENTS],))
               for i in range(CLIENTS)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{len(errors)} batches failed, e.g. {errors[0]}")
    return time.perf_counter() - started, latencies


def ingest(workdir: Path, pg: PostgresServer, n: int) -> dict[str, tuple[float, float]]:
    """store name -> (ratings per second, p99 batch latency in ms)."""
    records = [_rating(i) for i in range(n)]
    bodies = [json.dumps({"ratings": records[i:i + BATCH]}, ensure_ascii=False).encode()
              for i in range(0, n, BATCH)]
    out = {}
    for name, url in (("PostgreSQL", pg.create_database()),
                      ("SQLite", f"sqlite:///{workdir / 'ingest.db'}")):
        platform = CityPlatform(workdir, url)
        try:
            _post_all(platform.port, bodies[:5])   # warm up: connections, partitions
            done = 5 * BATCH
            seconds, latencies = _post_all(platform.port, bodies[5:])
            total = platform.counts()["total"]
            if total != n:
                raise RuntimeError(f"{name}: {total} stored of {n}")
        finally:
            platform.stop()
        latencies.sort()
        p99 = latencies[max(0, int(len(latencies) * 0.99) - 1)]
        out[name] = ((n - done) / seconds, p99 * 1000)
    return out


# 2. Report ----------------------------------------------------------------------------

def fill_month(url: str, n: int) -> float:
    """n ratings of November 2026 over 2,000 windows straight into the store's tables
    (generated in SQL: the point is the report, not the ingest), the roll-up as ingest
    keeps it. Returns seconds."""
    import psycopg

    from city_platform.store import Store

    store = Store.open(url)   # the schema and this month's partitions
    store._ensure_months([(2026, 10), (2026, 11), (2026, 12)])
    store.close()
    started = time.perf_counter()
    with psycopg.connect(url) as conn:
        with conn.transaction():
            conn.execute(f"""
                INSERT INTO ratings (rating_id, device_id, region_code, hall_id, window_id,
                    level, reason, spontaneous, case_id, staff_id, rated_at, local_day, gov,
                    received_at, record)
                SELECT md5(i::text), 'D' || (i % {WINDOWS}), '421100',
                       'HG' || lpad(((i % {WINDOWS}) / 50)::text, 2, '0'),
                       'W' || lpad(((i % {WINDOWS}) % 50)::text, 2, '0'),
                       lv, CASE WHEN lv <= 2 THEN 'R0' || (1 + i % 4) END, i % 10 = 0,
                       'C' || i, 'S0042', ts, (ts AT TIME ZONE 'Asia/Shanghai')::date, false,
                       ts, '{{}}'
                FROM (SELECT i, 1 + (i * 7) % 5 AS lv,
                             timestamptz '2026-11-01 00:00:00+08'
                               + ((i * 7919) % 2592000) * interval '1 second' AS ts
                      FROM generate_series(1::bigint, {int(n)}) AS i) AS g""")
            conn.execute("""
                INSERT INTO daily_tally (local_day, hall_id, window_id, level, reason,
                                         spontaneous, n)
                SELECT local_day, hall_id, window_id, level,
                       CASE WHEN level <= 2 THEN COALESCE(reason, '') ELSE '' END,
                       spontaneous, COUNT(*)
                FROM ratings GROUP BY 1, 2, 3, 4, 5, 6""")
        conn.execute("ANALYZE")
    return time.perf_counter() - started


def time_report(url: str, repeat: int = 3) -> tuple[float, int]:
    """Median seconds of build_report for the month; and the ratings it counted."""
    from city_platform.report import build_report

    times, total = [], 0
    for _ in range(repeat):
        from city_platform.store import Store

        store = Store.open(url, read_only=True)
        t0 = time.perf_counter()
        report = build_report(store, MONTH_FIRST, MONTH_LAST)
        times.append(time.perf_counter() - t0)
        total = sum(h.total.total for h in report.halls)
        store.close()
    return statistics.median(times), total


def time_group_by_raw(url: str) -> float:
    """The same counts by GROUP BY over the ratings themselves (no roll-up)."""
    import psycopg

    with psycopg.connect(url) as conn:
        t0 = time.perf_counter()
        conn.execute("SELECT hall_id, window_id, level, reason, spontaneous, COUNT(*) "
                     "FROM ratings WHERE local_day BETWEEN %s AND %s GROUP BY 1, 2, 3, 4, 5",
                     (MONTH_FIRST, MONTH_LAST)).fetchall()
        return time.perf_counter() - t0


def time_old_report(workdir: Path, n: int) -> tuple[float, int]:
    """The old report (every record of the range read into Python) on an SQLite store of
    n records in the reference platform's layout; (seconds, ratings counted)."""
    from bench.old_report import build_report, read_store
    from broker_bridge.timezones import load_timezone

    path = workdir / "old.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE ratings (rating_id TEXT PRIMARY KEY, device_id TEXT NOT NULL, "
               "level INTEGER NOT NULL, rated_at TEXT NOT NULL, received_at TEXT NOT NULL, "
               "times_seen INTEGER NOT NULL DEFAULT 1, record TEXT NOT NULL)")
    chunk = 50_000
    for start in range(0, n, chunk):
        rows = []
        for i in range(start, min(n, start + chunk)):
            r = _rating(i)
            rows.append((r["rating_id"], r["device_id"], r["level"], r["rated_at"],
                         r["rated_at"], json.dumps(r, ensure_ascii=False)))
        db.executemany("INSERT INTO ratings (rating_id, device_id, level, rated_at, "
                       "received_at, record) VALUES (?, ?, ?, ?, ?, ?)", rows)
        db.commit()
    db.close()
    tz = load_timezone("Asia/Shanghai")
    t0 = time.perf_counter()
    store = read_store(path, tz, MONTH_FIRST, MONTH_LAST)
    report = build_report(store, MONTH_FIRST, MONTH_LAST, "Asia/Shanghai")
    seconds = time.perf_counter() - t0
    return seconds, sum(h.total.total for h in report.halls)


# The benchmark ------------------------------------------------------------------------

def run(ctx: Context, ratings: int | None = None, subset: int | None = None) -> Section:
    quick = ctx.quick
    n_ingest = 2_000 if quick else 50_000
    n_month = ratings or (200_000 if quick else 10_000_000)
    n_old = subset or (20_000 if quick else 1_000_000)
    section = Section(
        "cityplatform", "City platform: ingest and report",
        f"Ingest: `hcp-platform run` in its own process, {CLIENTS} kept-alive client "
        f"connections posting {n_ingest:,} ratings in batches of {BATCH} (after 5 warm-up "
        "batches); PostgreSQL (a private server, fsync on, synchronous_commit on) and SQLite "
        f"(WAL, synchronous=FULL) in the same run. Report: {n_month:,} ratings of one month "
        f"over {WINDOWS:,} windows generated in PostgreSQL, `build_report` for the month "
        f"(median of 3); baseline: the old `hcp-bridge report` code on {n_old:,} records "
        "in SQLite, same month. " + chain_method(quick))
    workdir = ctx.scratch("cityplatform")
    pg = PostgresServer(settings=("shared_buffers=256MB", "work_mem=64MB",
                                  "max_wal_size=4GB", "checkpoint_timeout=30min"))
    try:
        rates = ingest(workdir, pg, n_ingest)
        pg_rate, pg_p99 = rates["PostgreSQL"]
        lite_rate, lite_p99 = rates["SQLite"]
        section.check("ingest, PostgreSQL, batches of 100", f"{pg_rate:,.0f} ratings/s",
                      f"SQLite {lite_rate:,.0f} ratings/s", "≥ 5,000/s", pg_rate >= 5000)
        table = Table(["store", "ratings/s", "p99 per batch"], title="Ingest")
        table.add("PostgreSQL", f"{pg_rate:,.0f}", f"{pg_p99:.1f} ms")
        table.add("SQLite", f"{lite_rate:,.0f}", f"{lite_p99:.1f} ms")
        section.tables.append(table)
        section.tables.append(chain_table(run_chain(ctx, pg)))

        month_url = pg.create_database()
        fill_s = fill_month(month_url, n_month)
        report_s, counted = time_report(month_url)
        raw_s = time_group_by_raw(month_url)
        old_s, old_counted = time_old_report(workdir, n_old)
        section.check(f"report, one month of {n_month:,} ratings", f"{report_s:.2f} s",
                      f"old report on {n_old:,}: {old_s:.1f} s", "≤ 2 s", report_s <= 2.0)
        table = Table(["what", "ratings", "seconds"], title="Report")
        table.add("hcp-platform report (daily_tally roll-up)", f"{counted:,}",
                  f"{report_s:.3f}")
        table.add("GROUP BY over the ratings themselves (no roll-up)", f"{n_month:,}",
                  f"{raw_s:.2f}")
        table.add("old hcp-bridge report (every record into Python)", f"{old_counted:,}",
                  f"{old_s:.2f}")
        table.add("generating the month in SQL (context)", f"{n_month:,}", f"{fill_s:.0f}")
        section.tables.append(table)
        section.notes.append(
            "The report reads `daily_tally` (one row per local day, window, level, reason "
            "and spontaneous flag, kept in the ingest transaction), `followups` and "
            "`expired_prompts` through indexes that start with the local day: its cost "
            "grows with windows × days, not with ratings.")
    finally:
        pg.stop()
    return section


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.cityplatform")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--ratings", type=int, help="ratings of the report's month")
    p.add_argument("--subset", type=int, help="records for the old report")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hcp-bench-") as tmp:
        t0 = time.monotonic()
        section = run(Context(Path(tmp), args.quick), args.ratings, args.subset)
        section.seconds = time.monotonic() - t0
        print(section.markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
