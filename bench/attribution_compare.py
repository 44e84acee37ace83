#!/usr/bin/env python3
"""Side-by-side attribution benchmark: Lookback's attribute(...) / attribute_channels(...) vs DuckDB.

Both systems get the same events: `lookback-bench ingest` sends batch i of EventGenerator(seed)
to a fresh Lookback server, and `lookback-bench gen` writes the very same events (same seed,
same batch size) to a CSV file that DuckDB loads into a native table (as bench/sql_compare.py).

What is measured
- Lookback (release `lookback serve`, data ingested at full speed with `lookback-bench ingest`,
  then POST /admin/compact), queried with psycopg 3 over TCP, each query run --repetitions times
  after --warmup runs, timed at the client (p50, p99, max ms): last touch, last touch by channel
  (for installs, and for purchases, whose revenue makes the revenue check meaningful), linear,
  time decay, and attribute_channels for last_touch, linear, time_decay, markov and shapley
  (LOOKBACK_QUERIES below).
- Single-conversion latency (Lookback): --single-conversions installs (the first ones by
  event_id, i.e. a random-looking sample) each attributed on its own with
  attribute(model => 'last_touch', app => ..., since => ts, until => ts + 1 µs): p50, p99.
- Attribution under ingest (Lookback, unless --skip-ingest-concurrent): `lookback-bench ingest`
  paced at --ingest-rate events/s (default: half the rate of the unthrottled initial load) for
  about --concurrent-seconds into the same server (new events: seed + 1, other producer ids),
  while the last_touch query runs back to back: achieved ingest events/s and ack latency,
  attribution queries/s and their p50/p99.
- DuckDB (in process, `SET threads` = the machine's cores): the same attribution rules written
  in SQL (bench/attribution_duckdb.sql: ASOF joins for last touch, a range join for linear and
  time decay), timed the same way around `execute(...).fetchall()`. DuckDB pays no network or
  protocol cost, Lookback does. Markov and Shapley have no DuckDB peer.

Agreement: every Lookback query with a DuckDB peer must give the same answer (equal counts per
channel, sums within 1e-6 relative); the Markov and Shapley results must put DuckDB's organic
conversions under 'organic' and split exactly the attributed ones (or none, when the model's
effects sum to 0); the single-conversion answers must name the touch DuckDB picks. Any
difference is printed and the script exits 1 (after writing the report).

The DuckDB side assumes Lookback's defaults are the ones docs/attribution.md shows: conversion
'install', click_window 7 days, view_window 1 day, probabilistic_window 0, half_life 7 days.

Requirements (Python 3.11): `pip install duckdb pytz 'psycopg[binary]'`; release builds:
`cargo build --release -p lookback-engine -p lookback-bench`.

Example
    python3 bench/attribution_compare.py --events 10000000 --out-json bench/results/attribution-compare.json
    python3 bench/attribution_compare.py --systems duckdb --csv events.csv   # the DuckDB side alone
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest_compare import LookbackServer, StepError, require_file, run_ingest  # noqa: E402
from sql_compare import duckdb_connect, gen_csv, percentile, summarize  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DUCKDB_SQL = Path(__file__).resolve().parent / "attribution_duckdb.sql"

WINDOWS = "conversion => 'install', click_window => INTERVAL '7 days', view_window => INTERVAL '1 day'"
LOOKBACK_QUERIES = {
    "last_touch": f"SELECT count(*), sum(credit) FROM attribute(model => 'last_touch', {WINDOWS})",
    "last_touch_by_channel": (
        "SELECT channel, count(*), sum(revenue) FROM attribute(model => 'last_touch') GROUP BY channel ORDER BY channel"
    ),
    "last_touch_purchase_by_channel": (
        "SELECT channel, count(*), sum(revenue) FROM attribute(model => 'last_touch', conversion => 'purchase') "
        "GROUP BY channel ORDER BY channel"
    ),
    "linear": f"SELECT count(*), sum(credit) FROM attribute(model => 'linear', {WINDOWS})",
    "time_decay": f"SELECT count(*), sum(credit) FROM attribute(model => 'time_decay', {WINDOWS})",
    "channels_last_touch": "SELECT * FROM attribute_channels(model => 'last_touch')",
    "channels_linear": "SELECT * FROM attribute_channels(model => 'linear')",
    "channels_time_decay": "SELECT * FROM attribute_channels(model => 'time_decay')",
    "channels_markov": "SELECT * FROM attribute_channels(model => 'markov')",
    "channels_shapley": "SELECT * FROM attribute_channels(model => 'shapley')",
}
SINGLE_SAMPLE_SQL = "SELECT event_id, ts, app_id FROM events WHERE event_type = 'install' ORDER BY event_id LIMIT {n}"
SINGLE_SQL = "SELECT * FROM attribute(model => 'last_touch', app => {app}, since => {since}, until => {until})"

# How each Lookback answer is compared with its DuckDB peer (a query of the same name in
# attribution_duckdb.sql): one spec per result column. "key": rows are matched on this column
# (the channel; None for a NULL channel); "exact": equal numbers; "rel": within REL_TOL.
REL_TOL = 1e-6
COMPARE = {
    "last_touch": ("exact", "rel"),
    "last_touch_by_channel": ("key", "exact", "rel"),
    "last_touch_purchase_by_channel": ("key", "exact", "rel"),
    "linear": ("exact", "rel"),
    "time_decay": ("exact", "rel"),
    "channels_last_touch": ("key", "exact", "rel"),
    "channels_linear": ("key", "rel", "rel"),
    "channels_time_decay": ("key", "rel", "rel"),
}
# Data-driven models without a DuckDB peer: 'organic' must hold the organic conversions and the
# channels must split exactly the attributed ones and their revenue (see check_split).
SPLIT_CHECKS = ("channels_markov", "channels_shapley")

# The concurrent ingest sends new events (seed + 1) under producer ids the initial load did not
# use. lookback-bench ingest pre-generates them all (~160 B each, 8 GiB budget by default).
CONCURRENT_PRODUCER_BASE = 1001
CONCURRENT_EVENTS_MAX = 50_000_000


def log(message: str) -> None:
    print(f"[attribution_compare] {message}", file=sys.stderr, flush=True)


def time_queries(run, queries: dict[str, str], rows: int, warmup: int, repetitions: int,
                 system: str) -> tuple[dict, dict]:
    """Runs each query warmup + repetitions times; returns (timings, last answer) per query."""
    results, answers = {}, {}
    for name, sql in queries.items():
        for _ in range(warmup):
            run(name, sql)
        samples = []
        for _ in range(repetitions):
            started = time.perf_counter()
            answers[name] = run(name, sql)
            samples.append(time.perf_counter() - started)
        results[name] = summarize(samples, rows)
        log(f"{system} {name}: {results[name]} -> {short(answers[name])}")
    return results, answers


def short(rows: list) -> str:
    text = repr(rows)
    return text if len(text) <= 300 else text[:300] + "..."


def post(url: str) -> None:
    urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=3600).read()


# ---------------------------------------------------------------------------------------------
# Lookback
# ---------------------------------------------------------------------------------------------


def lookback_runner(conn, server: LookbackServer):
    """run(name, sql) -> rows; a failed query is a StepError naming it, with the server log."""
    import psycopg

    def run(name: str, sql: str, params=None) -> list:
        try:
            return conn.execute(sql, params).fetchall()
        except psycopg.Error as e:
            raise StepError(f"lookback query {name} failed: {type(e).__name__}: {e}\n  SQL: {sql}\n"
                            f"--- server log ---\n{server.log_tail()}") from e
    return run


def bench_lookback(args, workdir: Path) -> tuple[dict, dict, list]:
    import psycopg

    require_file(args.lookback_bin, "lookback binary", "build it with cargo build --release -p lookback-engine")
    server = LookbackServer(args.lookback_bin, workdir, "lookback")
    server.start()
    try:
        load = run_ingest(args.bench_bin, server, args, args.events, None, False, "ingest")
        log(f"ingested {load['events']:,} events at {load['events_per_s']:,.0f} events/s")
        started = time.monotonic()
        post(f"http://{server.http_addr}/admin/compact")
        log(f"compacted in {time.monotonic() - started:.1f} s")
        host, port = server.pg_addr.rsplit(":", 1)
        with psycopg.connect(host=host, port=int(port), user="lookback", dbname="lookback", autocommit=True) as conn:
            run = lookback_runner(conn, server)
            rows = run("count", "SELECT count(*) FROM events")[0][0]
            if rows != args.events:
                raise StepError(f"lookback holds {rows} events, expected {args.events}")
            queries = {name: sql for name, sql in LOOKBACK_QUERIES.items() if name in args.query_set}
            timings, answers = time_queries(run, queries, rows, args.warmup, args.repetitions, "lookback")
            results = {"load": load, "rows": rows, "queries": timings}
            single, sample = {}, []
            if args.single_conversions > 0:
                single, sample = single_conversions(conn, run, args)
                results["single_conversion"] = single
            if not args.skip_ingest_concurrent:
                results["under_ingest"] = under_ingest(args, server, run, load)
        return results, answers, sample
    finally:
        server.stop()


def iso_utc(value) -> dt.datetime:
    """A timestamp from the server as an aware UTC datetime (a naive one is taken as UTC)."""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError as e:
            raise StepError(f"cannot read the timestamp {value!r} returned by lookback") from e
    if not isinstance(value, dt.datetime):
        raise StepError(f"lookback returned ts as {type(value).__name__} ({value!r}), expected a timestamp")
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)


def quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def single_conversions(conn, run, args) -> tuple[dict, list]:
    """Attributes each sampled install alone (app + [ts, ts + 1 µs)); returns timings and, per
    conversion, the row attribute(...) gave for it."""
    sample = run("single_conversion sample", SINGLE_SAMPLE_SQL.format(n=args.single_conversions))
    if not sample:
        raise StepError("lookback: no install events to sample")
    prepared = []
    for event_id, ts, app in sample:
        since = iso_utc(ts)
        until = since + dt.timedelta(microseconds=1)
        prepared.append((str(event_id).lower(), app, since.isoformat(sep=" ", timespec="microseconds"),
                         until.isoformat(sep=" ", timespec="microseconds")))
    # Parameters are sent as text (psycopg's "unknown" type); a server that cannot take bind
    # parameters in table-function arguments gets the same values as quoted literals instead.
    mode = "bind parameters"
    server_side = SINGLE_SQL.format(app="%s", since="%s", until="%s")
    _, app, since, until = prepared[0]
    try:
        conn.execute(server_side, (app, since, until)).fetchall()
    except Exception as e:  # psycopg.Error; the query is retried below with literals
        mode = "inline literals"
        log(f"single conversion: bind parameters failed ({type(e).__name__}: {e}); using inline literals")

    def attribute_one(app: str, since: str, until: str):
        if mode == "bind parameters":
            cursor = conn.execute(server_side, (app, since, until))
        else:
            cursor = conn.execute(SINGLE_SQL.format(app=quote(app), since=quote(since), until=quote(until)))
        return [d.name for d in cursor.description], cursor.fetchall()

    try:
        for _, app, since, until in prepared[: args.warmup]:
            attribute_one(app, since, until)
        samples, rows_by_conversion = [], {}
        for event_id, app, since, until in prepared:
            started = time.perf_counter()
            columns, rows = attribute_one(app, since, until)
            samples.append(time.perf_counter() - started)
            found = [dict(zip(columns, row)) for row in rows if str(row[columns.index("conversion_id")]).lower() == event_id]
            if len(found) != 1:
                raise StepError(f"lookback: attribute(app => {app!r}, since => {since!r}, until => {until!r}) "
                                f"returned {len(found)} rows for conversion {event_id} (last touch gives exactly 1): {rows}")
            rows_by_conversion[event_id] = found[0]
    except StepError:
        raise
    except Exception as e:
        raise StepError(f"lookback single-conversion query failed ({mode}): {type(e).__name__}: {e}\n"
                        f"  SQL: {SINGLE_SQL}") from e
    ms = [s * 1000 for s in samples]
    # The floor of this machine and connection at the same moment: `SELECT 1` as many times
    # (the VM's scheduling noise shows in its p99 as much as in the lookups').
    control = []
    for _ in samples:
        started = time.perf_counter()
        conn.execute("SELECT 1").fetchall()
        control.append((time.perf_counter() - started) * 1000)
    result = {"conversions": len(samples), "parameters": mode, "sql": SINGLE_SQL,
              "p50_ms": round(percentile(ms, 50), 2), "p99_ms": round(percentile(ms, 99), 2),
              "max_ms": round(max(ms), 2),
              "select_1_p50_ms": round(percentile(control, 50), 2), "select_1_p99_ms": round(percentile(control, 99), 2)}
    log(f"single conversion: {result}")
    picked = [{"conversion_id": cid, "touch_id": None if row.get("touch_id") is None else str(row["touch_id"]).lower(),
               "channel": row.get("channel")} for cid, row in rows_by_conversion.items()]
    return result, picked


class IngestProcess:
    """A background `lookback-bench ingest`; its stderr is drained by a thread (the clock starts
    after the "pre-generated" line)."""

    def __init__(self, cmd: list[str]):
        log(f"concurrent ingest: {' '.join(cmd)}")
        self.process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.clock_started = threading.Event()
        self.stderr_lines: collections.deque[str] = collections.deque(maxlen=200)
        self.reader = threading.Thread(target=self._drain, daemon=True)
        self.reader.start()

    def _drain(self) -> None:
        for line in self.process.stderr:
            self.stderr_lines.append(line.rstrip())
            if "pre-generated" in line:
                self.clock_started.set()
        self.clock_started.set()  # EOF: the process ended; the waiter checks why

    def stderr_tail(self) -> str:
        return "\n".join(self.stderr_lines)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def under_ingest(args, server: LookbackServer, run, load: dict) -> dict:
    rate = args.ingest_rate or load["events_per_s"] / 2
    events = max(args.batch, int(rate * args.concurrent_seconds))
    if events > CONCURRENT_EVENTS_MAX:
        log(f"concurrent ingest: {events:,} events at {rate:,.0f}/s exceed the pre-generation budget; "
            f"sending {CONCURRENT_EVENTS_MAX:,}")
        events = CONCURRENT_EVENTS_MAX
    cmd = [
        str(args.bench_bin), "ingest", "--addr", server.ingest_addr, "--clients", str(args.clients),
        "--batch", str(args.batch), "--events", str(events), "--rate", f"{rate:.0f}",
        "--duration", f"{max(1.0, 3 * args.concurrent_seconds):.1f}",  # a cap, should the server fall behind
        "--seed", str(args.seed + 1), "--producer-base", str(CONCURRENT_PRODUCER_BASE),
    ]
    ingest = IngestProcess(cmd)
    sql = LOOKBACK_QUERIES["last_touch"]
    try:
        if not ingest.clock_started.wait(timeout=600) or ingest.process.poll() not in (None, 0):
            raise StepError(f"concurrent ingest did not start:\n{ingest.stderr_tail()}\n"
                            f"--- server log ---\n{server.log_tail()}")
        latencies, answers = [], []
        first_started = time.perf_counter()
        last_ended = first_started
        while ingest.process.poll() is None:
            started = time.perf_counter()
            answers.append(run("last_touch (under ingest)", sql)[0])
            last_ended = time.perf_counter()
            latencies.append(last_ended - started)
        returncode = ingest.process.wait()
        ingest.reader.join(timeout=10)
        stdout = ingest.process.stdout.read()
    finally:
        ingest.kill()
    if returncode != 0:
        raise StepError(f"concurrent ingest exited with {returncode}:\n{ingest.stderr_tail()}\n"
                        f"--- server log ---\n{server.log_tail()}")
    lines = [line for line in stdout.splitlines() if line.strip()]
    try:
        report = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError) as e:
        raise StepError(f"concurrent ingest printed no JSON report: {stdout[-2000:]!r}") from e
    if not latencies:
        raise StepError("no attribution query completed while the concurrent ingest ran")
    ms = [s * 1000 for s in latencies]
    result = {
        "ingest_target_events_per_s": round(rate),
        "ingest_events_per_s": report["events_per_s"],
        "ingest_events": report["events"],
        "ingest_seconds": report["seconds"],
        "ingest_ack_p50_ms": report.get("ack_p50_ms"),
        "ingest_ack_p99_ms": report.get("ack_p99_ms"),
        "query": "last_touch",
        "queries": len(latencies),
        "queries_per_s": round(len(latencies) / max(last_ended - first_started, 1e-9), 2),
        "query_p50_ms": round(percentile(ms, 50), 2),
        "query_p99_ms": round(percentile(ms, 99), 2),
        "query_max_ms": round(max(ms), 2),
        "last_touch_first_answer": list(answers[0]),
        "last_touch_last_answer": list(answers[-1]),
        "ingest_report": report,
    }
    log(f"under ingest: {({k: v for k, v in result.items() if k != 'ingest_report'})}")
    return result


# ---------------------------------------------------------------------------------------------
# DuckDB
# ---------------------------------------------------------------------------------------------


def read_duckdb_sql(path: Path) -> tuple[str, dict[str, str]]:
    """(setup statements, {query name: SQL}) from attribution_duckdb.sql."""
    try:
        text = path.read_text()
    except OSError as e:
        raise StepError(f"cannot read {path}: {e}") from e
    setup, *blocks = re.split(r"^-- name: ", text, flags=re.MULTILINE)
    queries = {}
    for block in blocks:
        name, _, body = block.partition("\n")
        queries[name.strip()] = body.strip()
    return setup, queries


def bench_duckdb(args, workdir: Path, sample: list) -> tuple[dict, dict, dict]:
    try:
        import duckdb
    except ImportError as e:
        raise StepError("duckdb: the duckdb module is missing: pip install duckdb pytz") from e

    setup, duck_queries = read_duckdb_sql(args.duckdb_sql)
    if args.csv:
        csv_path = args.csv.resolve()
    else:
        csv_path = workdir / "events.csv"
        gen_csv(args, csv_path)
    con = duckdb_connect()
    started = time.monotonic()
    # event_id stays text (the canonical lower-case UUID: its order is the order of the bytes).
    con.execute(f"CREATE TABLE events AS SELECT * FROM read_csv('{csv_path}', header = true, "
                "types = {'event_id': 'VARCHAR', 'ts': 'TIMESTAMPTZ'})")
    load_seconds = time.monotonic() - started
    log(f"duckdb loaded in {load_seconds:.1f} s")
    if not args.csv and not args.keep_data:
        csv_path.unlink()
    rows = con.execute("SELECT count(*) FROM events").fetchone()[0]
    if not args.csv and rows != args.events:
        raise StepError(f"duckdb holds {rows} events, expected {args.events}")
    try:
        con.execute(setup)
    except duckdb.Error as e:
        raise StepError(f"duckdb: the setup of {args.duckdb_sql} failed: {e}") from e

    def run(name: str, sql: str) -> list:
        try:
            return con.execute(sql).fetchall()
        except duckdb.Error as e:
            raise StepError(f"duckdb query {name} failed: {e}\n  SQL: {sql}") from e

    queries = {name: sql for name, sql in duck_queries.items() if name in args.query_set}
    timings, answers = time_queries(run, queries, rows, args.warmup, args.repetitions, "duckdb")
    if args.query_set & set(SPLIT_CHECKS) and "last_touch_by_channel" not in answers:
        # The Markov / Shapley checks need the conversions by channel; once, untimed.
        answers["last_touch_by_channel"] = run("last_touch_by_channel", duck_queries["last_touch_by_channel"])
    picked = {}
    if sample:
        ids = [s["conversion_id"] for s in sample]
        found = con.execute("SELECT conversion_id, touch_id, channel FROM attribute_last_touch() "
                            "WHERE conversion_id IN (SELECT unnest($ids))", {"ids": ids}).fetchall()
        picked = {cid: {"touch_id": touch, "channel": channel} for cid, touch, channel in found}
    return {"version": duckdb.__version__, "rows": rows, "load_seconds": round(load_seconds, 1),
            "sql_file": str(args.duckdb_sql), "queries": timings}, answers, picked


# ---------------------------------------------------------------------------------------------
# Agreement
# ---------------------------------------------------------------------------------------------


def same_number(a, b, spec: str) -> bool:
    if a is None or b is None:
        return a is None and b is None
    a, b = float(a), float(b)
    if spec == "exact":
        return a == b
    return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=1e-9)


def compare_rows(lookback: list, duck: list, specs: tuple[str, ...]) -> list[str]:
    """Differences between two answers (empty when they agree)."""
    problems = []
    for source, answer in (("lookback", lookback), ("duckdb", duck)):
        bad = [row for row in answer if len(row) != len(specs)]
        if bad:
            problems.append(f"{source} rows have {len(bad[0])} columns, expected {len(specs)}: {bad[0]}")
    if problems:
        return problems
    if "key" in specs:
        k = specs.index("key")
        index = lambda answer: {row[k]: row for row in answer}  # noqa: E731
        lb, dk = index(lookback), index(duck)
        if len(lb) != len(lookback) or len(dk) != len(duck):
            problems.append("duplicate keys in an answer")
        pairs = []
        for key in sorted(set(lb) | set(dk), key=lambda x: (x is None, str(x))):
            if key not in lb or key not in dk:
                problems.append(f"{key!r}: lookback {lb.get(key)} vs duckdb {dk.get(key)}")
            else:
                pairs.append((lb[key], dk[key]))
    else:
        if len(lookback) != len(duck):
            return [f"lookback gave {len(lookback)} rows, duckdb {len(duck)}"]
        pairs = list(zip(lookback, duck))
    for lrow, drow in pairs:
        for i, spec in enumerate(specs):
            if spec != "key" and not same_number(lrow[i], drow[i], spec):
                problems.append(f"lookback {tuple(lrow)} vs duckdb {tuple(drow)} (column {i + 1}, {spec})")
                break
    return problems


def check_split(name: str, lookback: list, duck_by_channel: list | None) -> tuple[list[str], str | None]:
    """A data-driven model splits the attributed (non-organic) conversions and their revenue over
    the channels, and 'organic' holds the organic conversions: checked against DuckDB's last
    touch by channel (same conversions, same organic ones). When the model's effects sum to 0
    (Shapley efficiency: the values sum to v(all channels), 0 when no path has every channel)
    nothing is split and every channel gets 0, as in query/tests/reference/attribution_ref.py;
    that is accepted, with a note. Returns (problems, note)."""
    if duck_by_channel is None:
        return ["no DuckDB last_touch_by_channel answer to check against"], None
    organic = next((row for row in duck_by_channel if row[0] == "organic"), ("organic", 0, 0.0))
    attributed = sum(row[1] for row in duck_by_channel) - organic[1]
    attributed_revenue = sum(row[2] or 0.0 for row in duck_by_channel) - (organic[2] or 0.0)
    got_organic = next((row for row in lookback if row[0] == "organic"), ("organic", 0.0, 0.0))
    channels = [row for row in lookback if row[0] != "organic"]
    got = sum(float(row[1] or 0.0) for row in channels)
    got_revenue = sum(float(row[2] or 0.0) for row in channels)
    problems, note = [], None
    if float(got_organic[1] or 0.0) != organic[1] or not same_number(got_organic[2] or 0.0, organic[2] or 0.0, "rel"):
        problems.append(f"{name}: organic {tuple(got_organic)}, duckdb {tuple(organic)}")
    if got == 0.0 and got_revenue == 0.0 and attributed > 0:
        note = f"{name}: the model's effects sum to 0, so none of the {attributed} attributed conversions is split"
    else:
        if not math.isclose(got, attributed, rel_tol=REL_TOL):
            problems.append(f"{name}: channels hold {got} conversions, duckdb attributes {attributed}")
        if not math.isclose(got_revenue, attributed_revenue, rel_tol=REL_TOL, abs_tol=1e-6):
            problems.append(f"{name}: channels hold revenue {got_revenue}, duckdb attributes {attributed_revenue}")
    return problems, note


def agreement(lookback_answers: dict, duck_answers: dict, sample: list, duck_picked: dict) -> dict:
    report = {}
    for name, specs in COMPARE.items():
        if name in lookback_answers and name in duck_answers:
            problems = compare_rows(lookback_answers[name], duck_answers[name], specs)
            report[name] = {"agree": not problems, "problems": problems[:20]}
    for name in SPLIT_CHECKS:
        if name in lookback_answers and "last_touch_by_channel" in duck_answers:
            problems, note = check_split(name, lookback_answers[name], duck_answers["last_touch_by_channel"])
            report[name] = {"agree": not problems, "problems": problems, "note": note}
            if note:
                log(f"note: {note}")
    if sample and duck_picked is not None:
        problems = []
        for picked in sample:
            duck = duck_picked.get(picked["conversion_id"])
            if duck is None:
                problems.append(f"{picked['conversion_id']}: not an install in duckdb")
            elif (duck["touch_id"], duck["channel"]) != (picked["touch_id"], picked["channel"]):
                problems.append(f"{picked['conversion_id']}: lookback touch {picked['touch_id']} ({picked['channel']}), "
                                f"duckdb {duck['touch_id']} ({duck['channel']})")
        report["single_conversion"] = {"agree": not problems, "checked": len(sample), "problems": problems[:20]}
    return report


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def fmt(value, digits: int = 1) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown(report: dict) -> str:
    lookback = report.get("lookback") or {}
    duck = report.get("duckdb") or {}
    checks = report.get("agreement") or {}
    lq, dq = lookback.get("queries", {}), duck.get("queries", {})
    lines = ["| query | Lookback p50 ms | p99 ms | max ms | DuckDB p50 ms | p99 ms | max ms | DuckDB/Lookback p50 | agree |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    names = [n for n in LOOKBACK_QUERIES if n in lq or n in dq]
    for name in names:
        lt, dk = lq.get(name, {}), dq.get(name, {})
        ratio = dk["p50_ms"] / lt["p50_ms"] if lt.get("p50_ms") and dk.get("p50_ms") else None
        check = checks.get(name)
        agree = "" if check is None else ("yes" if check["agree"] else "**NO**")
        if check and check["agree"] and check.get("note"):
            agree = "yes (nothing split: the effects sum to 0)"
        lines.append(f"| {name} | {fmt(lt.get('p50_ms'))} | {fmt(lt.get('p99_ms'))} | {fmt(lt.get('max_ms'))} "
                     f"| {fmt(dk.get('p50_ms'))} | {fmt(dk.get('p99_ms'))} | {fmt(dk.get('max_ms'))} "
                     f"| {fmt(ratio, 2)} | {agree} |")
    single = lookback.get("single_conversion")
    if single:
        check = checks.get("single_conversion")
        agree = "" if check is None else ("yes" if check["agree"] else "**NO**")
        lines.append(f"| one conversion (last_touch, app + [ts, ts + 1 µs), {single['conversions']} installs) "
                     f"| {fmt(single['p50_ms'], 2)} | {fmt(single['p99_ms'], 2)} | {fmt(single['max_ms'], 2)} "
                     f"| | | | | {agree} |")
        if "select_1_p50_ms" in single:
            lines.append(f"| `SELECT 1` on the same connection, as many times (the floor) "
                         f"| {fmt(single['select_1_p50_ms'], 2)} | {fmt(single['select_1_p99_ms'], 2)} | | | | | | |")
    ingest = lookback.get("under_ingest")
    if ingest:
        lines += ["",
                  "| under ingest | target events/s | achieved events/s | ack p50 ms | ack p99 ms "
                  "| last_touch queries/s | query p50 ms | query p99 ms |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|",
                  f"| Lookback | {fmt(float(ingest['ingest_target_events_per_s']))} "
                  f"| {fmt(float(ingest['ingest_events_per_s']))} | {fmt(ingest['ingest_ack_p50_ms'])} "
                  f"| {fmt(ingest['ingest_ack_p99_ms'])} | {fmt(ingest['queries_per_s'], 2)} "
                  f"| {fmt(ingest['query_p50_ms'])} | {fmt(ingest['query_p99_ms'])} |"]
    load = lookback.get("load")
    if load:
        lines += ["", f"Lookback initial load: {load['events']:,} events at {load['events_per_s']:,.0f} events/s "
                      f"(unthrottled, {report.get('clients')} clients)."]
    if duck:
        lines.append(f"DuckDB {duck['version']}, {report.get('cores')} threads, in process; CSV load "
                     f"{duck['load_seconds']} s. SQL: {Path(duck['sql_file']).name}.")
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=4, help="ingest producers (initial load and concurrent run)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repetitions", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--single-conversions", type=int, default=200,
                        help="installs attributed one at a time for the single-conversion latency (0 = skip)")
    parser.add_argument("--skip-ingest-concurrent", action="store_true",
                        help="skip the attribution-while-ingesting run")
    parser.add_argument("--ingest-rate", type=float,
                        help="events/s of the concurrent ingest (default: half the initial load's rate)")
    parser.add_argument("--concurrent-seconds", type=float, default=20.0,
                        help="length of the concurrent ingest (it sends rate * this many events)")
    parser.add_argument("--queries", default=",".join(LOOKBACK_QUERIES),
                        help="comma-separated subset of the queries to run")
    parser.add_argument("--systems", default="lookback,duckdb", help="comma-separated subset to run")
    parser.add_argument("--csv", type=Path,
                        help="DuckDB: load this CSV (lookback-bench gen format) instead of generating one; "
                             "its row count is not checked against --events")
    parser.add_argument("--duckdb-sql", type=Path, default=DUCKDB_SQL)
    parser.add_argument("--lookback-bin", type=Path, default=REPO / "target/release/lookback")
    parser.add_argument("--bench-bin", type=Path, default=REPO / "target/release/lookback-bench")
    parser.add_argument("--workdir", type=Path, help="keep files here instead of a temp dir")
    parser.add_argument("--keep-data", action="store_true",
                        help="keep the work dir (Lookback data dir, server log, events CSV) at the end")
    parser.add_argument("--out-json", type=Path)
    args = parser.parse_args()
    args.query_set = {q.strip() for q in args.queries.split(",") if q.strip()}
    unknown = args.query_set - set(LOOKBACK_QUERIES)
    if unknown:
        parser.error(f"unknown --queries {sorted(unknown)}; known: {', '.join(LOOKBACK_QUERIES)}")
    args.system_set = {s.strip() for s in args.systems.split(",") if s.strip()}
    if not args.system_set or args.system_set - {"lookback", "duckdb"}:
        parser.error(f"--systems must be a subset of lookback,duckdb, got {args.systems!r}")
    if "last_touch" not in args.query_set and not args.skip_ingest_concurrent and "lookback" in args.system_set:
        parser.error("the concurrent run times last_touch: add it to --queries or pass --skip-ingest-concurrent")
    if args.repetitions < 1 or args.warmup < 0:
        parser.error("--repetitions must be >= 1 and --warmup >= 0")
    args.lookback_bin, args.bench_bin = args.lookback_bin.resolve(), args.bench_bin.resolve()
    return args


def main() -> int:
    args = parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="attribution_compare-"))
    workdir.mkdir(parents=True, exist_ok=True)
    report: dict = {"events": args.events, "seed": args.seed, "batch": args.batch, "clients": args.clients,
                    "cores": os.cpu_count(), "repetitions": args.repetitions, "warmup": args.warmup,
                    "queries": {name: sql for name, sql in LOOKBACK_QUERIES.items() if name in args.query_set}}
    lookback_answers, duck_answers, sample, duck_picked = {}, {}, [], None
    try:
        if "lookback" in args.system_set or not args.csv:
            require_file(args.bench_bin, "lookback-bench binary", "build it with cargo build --release -p lookback-bench")
        if "lookback" in args.system_set:
            report["lookback"], lookback_answers, sample = bench_lookback(args, workdir)
        if "duckdb" in args.system_set:
            report["duckdb"], duck_answers, duck_picked = bench_duckdb(args, workdir, sample)
    except StepError as e:
        log(f"FAILED: {e}")
        return 1
    finally:
        if args.keep_data:
            log(f"kept {workdir}")
        elif args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    report["answers"] = {"lookback": jsonable(lookback_answers), "duckdb": jsonable(duck_answers)}
    if lookback_answers and duck_answers:
        report["agreement"] = agreement(lookback_answers, duck_answers, sample, duck_picked if sample else None)
    disagreements = {name: check["problems"] for name, check in (report.get("agreement") or {}).items()
                     if not check["agree"]}
    report["agree"] = None if "agreement" not in report else not disagreements
    text = markdown(report)
    report["markdown"] = text
    print(text)
    if args.out_json:
        args.out_json.write_text(json.dumps(report, indent=2, default=str) + "\n")
        log(f"wrote {args.out_json}")
    if disagreements:
        for name, problems in disagreements.items():
            log(f"MISMATCH {name}:\n  " + "\n  ".join(problems))
        log(f"FAILED: Lookback and DuckDB disagree on {', '.join(disagreements)}")
        return 1
    return 0


def jsonable(answers: dict) -> dict:
    return {name: [[v if isinstance(v, (int, float, str, type(None))) else str(v) for v in row] for row in rows]
            for name, rows in answers.items()}


if __name__ == "__main__":
    sys.exit(main())
