#!/usr/bin/env python3
"""Side-by-side dashboard-query benchmark: Lookback (over the Postgres protocol) vs DuckDB.

Both systems get the same events: `lookback-bench ingest` sends batch i of EventGenerator(seed)
to a fresh Lookback server, and `lookback-bench gen` writes the very same events (same seed,
same batch size) to a CSV file that DuckDB loads into a native table.

What is measured, per dashboard query (each run --repetitions times after --warmup runs):
- Lookback: the query sent with psycopg 3 over TCP to `lookback serve` (release build), after
  POST /admin/compact, timed at the client: wall time from sending the query to the last row
  (p50, p99, max, in ms), and events scanned per second at the p50 (table rows / p50).
- DuckDB (in process, same machine, `SET threads` = the machine's cores): the same SQL on the
  same rows, timed the same way around `execute(...).fetchall()`. DuckDB pays no network or
  protocol cost, Lookback does: the comparison favours DuckDB.
- Freshness (Lookback): --freshness-samples times, one event is INSERTed (acknowledged when it
  is durable in the WAL, the same admission and durability point as an ingest-protocol ack) and
  then polled for with SELECT until visible; the lag from the acknowledgement to the first
  SELECT that sees it (p50, p99).

Requirements (Python 3.11): `pip install duckdb pytz 'psycopg[binary]'`; release builds:
`cargo build --release -p lookback-engine -p lookback-bench`.

Example
    python3 bench/sql_compare.py --events 10000000 --out-json bench/results/sql-compare.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest_compare import LookbackServer, StepError, run_checked  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
# The most active app of the generator (bench/src/catalog.rs APP_IDS[0]).
APP = "com.puzzlequest.match3"
QUERIES = {
    "filtered_count": (
        f"SELECT count(*) FROM events WHERE app_id = '{APP}' "
        "AND ts >= now() - interval '30 days' AND event_type = 'install'"
    ),
    "group_by_channel_sum_revenue": "SELECT channel, sum(revenue) FROM events GROUP BY channel ORDER BY channel",
    "date_trunc_day_series": "SELECT date_trunc('day', ts) AS day, count(*) FROM events GROUP BY 1 ORDER BY 1",
}


def log(message: str) -> None:
    print(f"[sql_compare] {message}", file=sys.stderr, flush=True)


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    rank = max(0, min(len(ordered) - 1, int(round(p / 100 * len(ordered) + 0.5)) - 1))
    return ordered[rank]


def summarize(samples_s: list[float], rows: int) -> dict:
    ms = [s * 1000 for s in samples_s]
    p50 = percentile(ms, 50)
    return {
        "p50_ms": round(p50, 2),
        "p99_ms": round(percentile(ms, 99), 2),
        "max_ms": round(max(ms), 2),
        "mean_ms": round(statistics.fmean(ms), 2),
        "rows_per_s_at_p50": round(rows / (p50 / 1000)),
    }


def time_queries(run, rows: int, warmup: int, repetitions: int) -> tuple[dict, dict]:
    results, answers = {}, {}
    for name, sql in QUERIES.items():
        for _ in range(warmup):
            answers[name] = run(sql)
        samples = []
        for _ in range(repetitions):
            started = time.perf_counter()
            run(sql)
            samples.append(time.perf_counter() - started)
        results[name] = summarize(samples, rows)
        log(f"{name}: {results[name]}")
    return results, answers


def bench_lookback(args, workdir: Path) -> tuple[dict, dict, int]:
    import psycopg

    server = LookbackServer(args.lookback_bin, workdir, "lookback")
    server.start()
    try:
        run_checked("ingest", [
            str(args.bench_bin), "ingest", "--addr", server.ingest_addr, "--clients", "4",
            "--batch", str(args.batch), "--events", str(args.events), "--seed", str(args.seed),
        ])
        started = time.monotonic()
        urllib.request.urlopen(urllib.request.Request(f"http://{server.http_addr}/admin/compact", method="POST"), timeout=3600).read()
        log(f"compacted in {time.monotonic() - started:.1f} s")
        host, port = server.pg_addr.rsplit(":", 1)
        with psycopg.connect(host=host, port=int(port), user="lookback", dbname="lookback", autocommit=True) as conn:
            rows = conn.execute("SELECT count(*) FROM events").fetchone()[0]
            if rows != args.events:
                raise StepError(f"lookback holds {rows} events, expected {args.events}")

            def run(sql: str):
                return conn.execute(sql).fetchall()

            results, answers = time_queries(run, rows, args.warmup, args.repetitions)
            results["freshness"] = freshness(conn, args.freshness_samples)
        return results, answers, rows
    finally:
        server.stop()


def freshness(conn, samples: int) -> dict:
    lags = []
    for _ in range(samples):
        event_id = str(uuid.uuid4())
        conn.execute(
            "INSERT INTO events (event_id, app_id, ts, event_type) VALUES (%s, 'fresh.app', now(), 'open')",
            (event_id,),
        )
        acked = time.perf_counter()
        while conn.execute("SELECT count(*) FROM events WHERE app_id = 'fresh.app' AND event_id = %s", (event_id,)).fetchone()[0] == 0:
            pass
        lags.append(time.perf_counter() - acked)
    ms = [s * 1000 for s in lags]
    result = {"samples": samples, "p50_ms": round(percentile(ms, 50), 2), "p99_ms": round(percentile(ms, 99), 2)}
    log(f"freshness: {result}")
    return result


def gen_csv(args, csv_path: Path) -> None:
    """The benchmark's events as CSV (`lookback-bench gen`, the same events the server gets)."""
    run_checked("gen csv", [str(args.bench_bin), "gen", "--events", str(args.events), "--seed", str(args.seed),
                            "--batch", str(args.batch), "--format", "csv", "--out", str(csv_path)])


def duckdb_connect():
    """An in-process DuckDB using every core of the machine."""
    import duckdb

    con = duckdb.connect()
    con.execute(f"SET threads = {os.cpu_count()}")
    return con


def bench_duckdb(args, workdir: Path) -> tuple[dict, dict]:
    csv_path = workdir / "events.csv"
    gen_csv(args, csv_path)
    con = duckdb_connect()
    started = time.monotonic()
    con.execute(f"CREATE TABLE events AS SELECT * FROM read_csv('{csv_path}', header = true)")
    log(f"duckdb loaded in {time.monotonic() - started:.1f} s")
    csv_path.unlink()
    rows = con.execute("SELECT count(*) FROM events").fetchone()[0]
    if rows != args.events:
        raise StepError(f"duckdb holds {rows} events, expected {args.events}")
    types = dict(con.execute("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'events'").fetchall())
    log(f"duckdb column types: {types}")

    def run(sql: str):
        return con.execute(sql).fetchall()

    results, answers = time_queries(run, rows, args.warmup, args.repetitions)
    import duckdb

    results["version"] = duckdb.__version__
    return results, answers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repetitions", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--freshness-samples", type=int, default=200)
    parser.add_argument("--lookback-bin", type=Path, default=REPO / "target/release/lookback")
    parser.add_argument("--bench-bin", type=Path, default=REPO / "target/release/lookback-bench")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--out-json", type=Path)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="sql_compare-"))
    try:
        lookback, lookback_answers, rows = bench_lookback(args, workdir)
        duck, duck_answers = bench_duckdb(args, workdir)
    except StepError as e:
        log(f"FAILED: {e}")
        return 1
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    for name in QUERIES:
        same = len(lookback_answers[name]) == len(duck_answers[name])
        log(f"{name}: {len(lookback_answers[name])} result rows from lookback, {len(duck_answers[name])} from duckdb"
            + ("" if same else " (DIFFERENT)"))
    report = {"events": rows, "cores": os.cpu_count(), "queries": QUERIES, "lookback": lookback, "duckdb": duck}
    print(json.dumps(report, indent=2))
    if args.out_json:
        args.out_json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
