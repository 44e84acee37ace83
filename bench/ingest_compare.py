#!/usr/bin/env python3
"""Side-by-side ingest benchmark: Lookback vs ClickHouse (chdb) vs PostgreSQL 15.

All three systems get the same events: `lookback-bench ingest` sends batch i of
EventGenerator(seed) to Lookback, and `lookback-bench gen` writes the very same events (same
seed, same batch size) to a CSV file that ClickHouse and PostgreSQL load.

What is measured
- Lookback, run 1 (fresh server): `lookback-bench ingest` at maximum rate (--clients producers,
  --batch events per batch, 2 batches in flight each) -> events/s and per-batch ack latency
  p50/p99 (ack = durable); then POST /admin/compact and GET /admin/storage -> bytes per event
  on disk, total and per column.
- Lookback, run 2 (fresh server, unless --sustained-events 0): maximum rate with more events than
  the memtable backlog (memory_bytes_max) can absorb, so flushing sets the rate: the maximum
  rate the server sustains. Run 1's rate is a burst: its events fit in memory.
- The disk alone, just before run 3: a WAL-sized record (one batch's encoded bytes) written into
  a pre-zeroed file and fdatasync'd at run 3's batch rate for --disk-floor-seconds. Every ack
  waits for one such sync, so its p99 is a floor under run 3's ack p99.
- Lookback, run 3 (fresh server): the same events paced at half the maximum sustained rate (run
  2; run 1's rate with --sustained-events 0) -> ack p50/p99 at half load, over the whole run and
  over batches sent after --warmup-seconds. To bound the run time it sends at most
  half_rate * --half-rate-seconds events (default 30 s).
- Lookback, run 4 (fresh server, unless run 2 was skipped): the same at half the burst rate of
  run 1, for comparison (that pace is close to what flushing sustains, so latency queues).
- ClickHouse (embedded chdb, MergeTree, every column CODEC(ZSTD), the DDL is printed):
  INSERT of the CSV file, OPTIMIZE TABLE FINAL, then bytes from system.parts (active parts) and
  system.columns. Its events/s is a bulk file load inside the process: no network, no
  per-batch durability; it is reported for context, not as a like-for-like ingest rate.
- PostgreSQL 15 (temporary cluster, fsync=on): COPY events FROM STDIN (FORMAT csv, HEADER) via
  psql, timed end to end -> rows/s; pg_total_relation_size / rows after a CHECKPOINT.

Requirements (Python 3.11)
- `pip install chdb`
- PostgreSQL 15 server binaries in /usr/lib/postgresql/15/bin
  (Debian/Ubuntu: `apt-get install postgresql-15`, which also creates the `postgres` user).
  When this script runs as root, the cluster runs as the `postgres` user via `runuser`.
- Release builds: `cargo build --release -p lookback -p lookback-bench` (paths via
  --lookback-bin and --bench-bin).

Example
    python3 bench/ingest_compare.py --events 10000000 --out-json /tmp/ingest_compare.json

Every step fails loudly: a non-zero exit with a message naming the step, and the server and
PostgreSQL logs are printed on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

PG_BIN_DIR = Path("/usr/lib/postgresql/15/bin")
HEALTH_TIMEOUT_S = 60
PG_START_TIMEOUT_S = 60
EVENT_ID_FLOOR_BYTES = 16.0

# Column order and types of the events table (Schema::events()).
COLUMNS = [
    # name, ClickHouse type, PostgreSQL type
    ("event_id", "UUID", "uuid NOT NULL"),
    ("app_id", "LowCardinality(String)", "text NOT NULL"),
    ("ts", "DateTime64(6, 'UTC')", "timestamptz NOT NULL"),
    ("event_type", "LowCardinality(String)", "text NOT NULL"),
    ("device_id", "Nullable(String)", "text"),
    ("user_id", "Nullable(String)", "text"),
    ("ip", "Nullable(String)", "text"),
    ("user_agent", "Nullable(String)", "text"),
    ("platform", "LowCardinality(Nullable(String))", "text"),
    ("channel", "LowCardinality(Nullable(String))", "text"),
    ("campaign", "LowCardinality(Nullable(String))", "text"),
    ("revenue", "Nullable(Float64)", "double precision"),
    ("currency", "LowCardinality(Nullable(String))", "text"),
    ("properties", "Nullable(String)", "text"),
]

CLICKHOUSE_DDL = (
    "CREATE TABLE bench.events (\n"
    + ",\n".join(f"    {name} {ch} CODEC(ZSTD)" for name, ch, _ in COLUMNS)
    + "\n) ENGINE = MergeTree ORDER BY (app_id, device_id, ts) SETTINGS allow_nullable_key = 1"
)

POSTGRES_DDL = (
    "CREATE TABLE events (\n" + ",\n".join(f"    {name} {pg}" for name, _, pg in COLUMNS) + "\n)"
)


class StepError(Exception):
    """A benchmark step failed; the message names the step."""


def log(message: str) -> None:
    print(f"[ingest_compare] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_checked(step: str, cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Runs a command; raises StepError with its output when it fails."""
    log(f"{step}: {' '.join(cmd)}")
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    except OSError as e:
        raise StepError(f"{step}: cannot run {cmd[0]}: {e}") from e
    if result.returncode != 0:
        raise StepError(
            f"{step}: {cmd[0]} exited with {result.returncode}\n"
            f"--- stdout ---\n{result.stdout[-4000:]}\n--- stderr ---\n{result.stderr[-4000:]}"
        )
    return result


def require_file(path: Path, what: str, hint: str) -> None:
    if not path.is_file() or not os.access(path, os.X_OK):
        raise StepError(f"{what} not found or not executable at {path}: {hint}")


# ---------------------------------------------------------------------------------------------
# Lookback
# ---------------------------------------------------------------------------------------------


class LookbackServer:
    """A `lookback serve` process on a fresh data dir and free ports."""

    def __init__(self, binary: Path, workdir: Path, name: str):
        self.data_dir = workdir / f"{name}-data"
        self.log_path = workdir / f"{name}.log"
        self.ingest_addr = f"127.0.0.1:{free_port()}"
        self.pg_addr = f"127.0.0.1:{free_port()}"
        self.http_addr = f"127.0.0.1:{free_port()}"
        self.binary = binary
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        # Each run starts from a quiet disk: the previous run's files (a GB of WAL and segments)
        # would otherwise still be in writeback, queued ahead of this run's WAL syncs.
        os.sync()
        self.data_dir.mkdir(parents=True)
        cmd = [
            str(self.binary), "serve",
            "--data-dir", str(self.data_dir),
            "--ingest-addr", self.ingest_addr,
            "--pg-addr", self.pg_addr,
            "--http-addr", self.http_addr,
        ]
        log(f"start lookback: {' '.join(cmd)}")
        self.log_file = open(self.log_path, "wb")
        self.process = subprocess.Popen(cmd, stdout=self.log_file, stderr=subprocess.STDOUT)
        self.wait_healthy()

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + HEALTH_TIMEOUT_S
        url = f"http://{self.http_addr}/health"
        last_error = "no attempt"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise StepError(f"lookback serve exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        log(f"lookback healthy at {self.http_addr}")
                        return
                    last_error = f"status {response.status}"
            except (urllib.error.URLError, OSError) as e:
                last_error = str(e)
            time.sleep(0.2)
        raise StepError(f"lookback did not report GET /health == 200 within {HEALTH_TIMEOUT_S} s "
                        f"({last_error}):\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            log("lookback did not stop within 30 s of SIGTERM; killing it")
            self.process.kill()
            self.process.wait()
        self.log_file.close()


def run_ingest(bench_bin: Path, server: LookbackServer, args, events: int, rate: float | None,
               with_storage: bool, step: str, warmup_seconds: float = 0.0) -> dict:
    cmd = [
        str(bench_bin), "ingest",
        "--addr", server.ingest_addr,
        "--clients", str(args.clients),
        "--batch", str(args.batch),
        "--events", str(events),
        "--seed", str(args.seed),
    ]
    if rate is not None:
        cmd += ["--rate", f"{rate:.0f}"]
    if warmup_seconds > 0:
        cmd += ["--warmup-seconds", f"{warmup_seconds}"]
    if with_storage:
        cmd += ["--http-addr", server.http_addr]
    log(f"{step}: {' '.join(cmd)}")
    result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None, text=True)
    if result.returncode != 0:
        raise StepError(f"{step}: lookback-bench ingest exited with {result.returncode}\n"
                        f"--- server log ---\n{server.log_tail()}")
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    if not lines:
        raise StepError(f"{step}: lookback-bench ingest printed no JSON report")
    try:
        return json.loads(lines[-1])
    except json.JSONDecodeError as e:
        raise StepError(f"{step}: last stdout line is not JSON: {lines[-1]!r}") from e


def bench_lookback(args, workdir: Path) -> dict:
    require_file(args.lookback_bin, "lookback binary", "build it with cargo build --release -p lookback")
    server = LookbackServer(args.lookback_bin, workdir, "lookback-max")
    try:
        server.start()
        max_run = run_ingest(args.bench_bin, server, args, args.events, None, True, "lookback max rate")
    finally:
        server.stop()
    results = {"max_rate": max_run}
    if args.sustained_events > 0:
        server = LookbackServer(args.lookback_bin, workdir, "lookback-sustained")
        try:
            server.start()
            results["sustained"] = run_ingest(args.bench_bin, server, args, args.sustained_events, None,
                                              False, "lookback sustained max rate")
        finally:
            server.stop()
    sustained = results.get("sustained")
    half_rate = (sustained or max_run)["events_per_s"] / 2
    if args.disk_floor_seconds > 0:
        # One group commit per batch at half rate, of the batch's WAL record size.
        record_bytes = int(max_run.get("encoded_bytes_per_event", 100) * args.batch)
        log(f"disk floor: {record_bytes} B + fdatasync, {half_rate / args.batch:.0f}/s")
        results["disk_floor"] = disk_floor(workdir, record_bytes, half_rate / args.batch, args.disk_floor_seconds)
    results["half_rate"] = run_paced(args, workdir, "lookback-half", half_rate)
    results["half_rate_target_events_per_s"] = half_rate
    if sustained:
        burst_half = max_run["events_per_s"] / 2
        results["half_burst_rate"] = run_paced(args, workdir, "lookback-half-burst", burst_half)
    return results


def disk_floor(workdir: Path, record_bytes: int, per_second: float, seconds: float) -> dict:
    """The disk alone, as the WAL uses it: `record_bytes` written into a pre-zeroed file and
    fdatasync'd, `per_second` times a second. Every ack waits for one such sync, so its p99 is a
    floor under the ack p99 that no engine on this disk goes below."""
    path = workdir / "disk-floor.bin"
    file_bytes = 256 << 20
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        zeros = b"\0" * (8 << 20)
        for offset in range(0, file_bytes, len(zeros)):
            os.pwrite(fd, zeros, offset)
        os.fsync(fd)
        record = os.urandom(record_bytes)
        latencies, offset = [], 0
        started = time.monotonic()
        for i in range(int(per_second * seconds)):
            due = started + i / per_second
            time.sleep(max(0.0, due - time.monotonic()))
            t = time.perf_counter()
            os.pwrite(fd, record, offset)
            os.fdatasync(fd)
            latencies.append((time.perf_counter() - t) * 1000)
            offset = (offset + record_bytes) % (file_bytes - record_bytes)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(len(latencies) * q))]
    return {"record_bytes": record_bytes, "per_second": per_second, "syncs": len(latencies),
            "sync_p50_ms": pick(0.50), "sync_p99_ms": pick(0.99), "sync_max_ms": latencies[-1]}


def run_paced(args, workdir: Path, name: str, rate: float) -> dict:
    """A fresh server fed the same events paced at `rate` events/s."""
    events = int(min(args.events, max(rate * args.half_rate_seconds, args.batch)))
    server = LookbackServer(args.lookback_bin, workdir, name)
    try:
        server.start()
        return run_ingest(args.bench_bin, server, args, events, rate, False, f"{name} at {rate:,.0f} events/s",
                          args.warmup_seconds)
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------------
# ClickHouse (chdb)
# ---------------------------------------------------------------------------------------------


def bench_clickhouse(csv_path: Path, events: int, workdir: Path) -> dict:
    try:
        import chdb.session as chs
    except ImportError as e:
        raise StepError("clickhouse: the chdb module is missing: pip install chdb") from e
    session = chs.Session(str(workdir / "chdb"))

    def query(sql: str, fmt: str = "JSON"):
        try:
            result = session.query(sql, fmt)
        except Exception as e:  # chdb raises its own error types
            raise StepError(f"clickhouse: query failed: {sql[:300]}\n{e}") from e
        return json.loads(str(result))["data"] if fmt == "JSON" else result

    query("CREATE DATABASE IF NOT EXISTS bench", "CSV")
    log(f"clickhouse DDL:\n{CLICKHOUSE_DDL}")
    query(CLICKHOUSE_DDL, "CSV")
    structure = ", ".join(f"{name} {ch}" for name, ch, _ in COLUMNS).replace("'", "\\'")
    insert = (
        f"INSERT INTO bench.events SELECT * FROM file('{csv_path}', 'CSVWithNames', '{structure}') "
        "SETTINGS date_time_input_format = 'best_effort'"
    )
    started = time.monotonic()
    query(insert, "CSV")
    insert_seconds = time.monotonic() - started
    started = time.monotonic()
    query("OPTIMIZE TABLE bench.events FINAL", "CSV")
    optimize_seconds = time.monotonic() - started
    parts = query(
        "SELECT sum(rows) AS rows, sum(data_compressed_bytes) AS compressed, "
        "sum(bytes_on_disk) AS on_disk, count() AS parts FROM system.parts "
        "WHERE database = 'bench' AND table = 'events' AND active"
    )[0]
    rows = int(parts["rows"])
    if rows != events:
        raise StepError(f"clickhouse: loaded {rows} rows, expected {events}")
    columns = query(
        "SELECT name, data_compressed_bytes AS bytes FROM system.columns "
        "WHERE database = 'bench' AND table = 'events'"
    )
    return {
        "ddl": CLICKHOUSE_DDL,
        "rows": rows,
        "parts": int(parts["parts"]),
        "insert_seconds": insert_seconds,
        "optimize_seconds": optimize_seconds,
        "events_per_s": rows / insert_seconds,
        "data_compressed_bytes": int(parts["compressed"]),
        "bytes_on_disk": int(parts["on_disk"]),
        "bytes_on_disk_per_event": int(parts["on_disk"]) / rows,
        "compressed_bytes_per_event": int(parts["compressed"]) / rows,
        "columns_bytes_per_event": {c["name"]: int(c["bytes"]) / rows for c in columns},
    }


# ---------------------------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------------------------


class PostgresCluster:
    """A temporary PostgreSQL 15 cluster, run as `postgres` when this script is root."""

    def __init__(self, workdir: Path):
        self.dir = workdir / "pg"
        self.data = self.dir / "data"
        self.socket_dir = self.dir / "sock"
        self.log_path = self.dir / "postgres.log"
        self.port = free_port()
        self.as_user = "postgres" if os.geteuid() == 0 else None
        self.started = False

    def cmd(self, binary: str, *args: str) -> list[str]:
        full = [str(PG_BIN_DIR / binary), *args]
        return ["runuser", "-u", self.as_user, "--", *full] if self.as_user else full

    def init_and_start(self) -> None:
        require_file(PG_BIN_DIR / "initdb", "PostgreSQL 15 initdb",
                     "install PostgreSQL 15 (apt-get install postgresql-15)")
        self.socket_dir.mkdir(parents=True)
        if self.as_user:
            try:
                shutil.chown(self.dir, self.as_user)
                shutil.chown(self.socket_dir, self.as_user)
            except (LookupError, PermissionError) as e:
                raise StepError(f"postgres: cannot hand {self.dir} to user {self.as_user}: {e}") from e
            # The postgres user must be able to reach the work dir.
            for parent in [self.dir.parent, *self.dir.parent.parents]:
                os.chmod(parent, os.stat(parent).st_mode | 0o001)
        run_checked("postgres initdb", self.cmd("initdb", "-D", str(self.data), "-U", "postgres",
                                                "--auth=trust", "-E", "UTF8", "--no-locale"))
        options = (f"-p {self.port} -k {self.socket_dir} -c listen_addresses='' -c fsync=on "
                   "-c synchronous_commit=on -c full_page_writes=on")
        run_checked("postgres start", self.cmd("pg_ctl", "-D", str(self.data), "-l", str(self.log_path),
                                               "-o", options, "-w", "-t", str(PG_START_TIMEOUT_S), "start"))
        self.started = True

    def psql(self, sql: str, step: str, stdin=None) -> str:
        cmd = self.cmd("psql", "-h", str(self.socket_dir), "-p", str(self.port), "-U", "postgres",
                       "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-X", "-q", "-A", "-t", "-c", sql)
        return run_checked(step, cmd, stdin=stdin).stdout.strip()

    def stop(self) -> None:
        if self.started:
            subprocess.run(self.cmd("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop"),
                           capture_output=True)
            self.started = False


def bench_postgres(csv_path: Path, events: int, workdir: Path) -> dict:
    cluster = PostgresCluster(workdir)
    try:
        cluster.init_and_start()
        log(f"postgres DDL:\n{POSTGRES_DDL}")
        cluster.psql(POSTGRES_DDL, "postgres create table")
        started = time.monotonic()
        with open(csv_path, "rb") as csv_file:
            cluster.psql("COPY events FROM STDIN (FORMAT csv, HEADER)", "postgres copy", stdin=csv_file)
        copy_seconds = time.monotonic() - started
        cluster.psql("CHECKPOINT", "postgres checkpoint")
        rows = int(cluster.psql("SELECT count(*) FROM events", "postgres count"))
        if rows != events:
            raise StepError(f"postgres: loaded {rows} rows, expected {events}")
        total = int(cluster.psql("SELECT pg_total_relation_size('events')", "postgres size"))
        return {
            "ddl": POSTGRES_DDL,
            "rows": rows,
            "copy_seconds": copy_seconds,
            "events_per_s": rows / copy_seconds,
            "total_relation_bytes": total,
            "bytes_on_disk_per_event": total / rows,
        }
    except StepError as e:
        tail = cluster.log_path.read_text(errors="replace")[-3000:] if cluster.log_path.exists() else ""
        raise StepError(f"{e}\n--- postgres log ---\n{tail}") from e
    finally:
        cluster.stop()


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def fmt(value, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and value >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown(results: dict) -> str:
    lines = ["| system | events/s | ack p50 ms | ack p99 ms | bytes/event |",
             "|---|---:|---:|---:|---:|"]
    lookback = results.get("lookback")
    if lookback:
        def row(label: str, events_per_s, p50, p99, bytes_per_event=None) -> str:
            rate = "" if events_per_s is None else fmt(events_per_s)
            bytes_cell = "" if bytes_per_event is None else fmt(bytes_per_event)
            return f"| {label} | {rate} | {fmt(p50)} | {fmt(p99)} | {bytes_cell} |"

        mx, half = lookback["max_rate"], lookback["half_rate"]
        lines.append(row(f"Lookback (max rate, burst: {mx['events']:,} events fit in memory)", mx["events_per_s"],
                         mx["ack_p50_ms"], mx["ack_p99_ms"], mx.get("bytes_on_disk_per_event")))
        sustained = lookback.get("sustained")
        if sustained:
            lines.append(row(f"Lookback (max rate, sustained: {sustained['events']:,} events)",
                             sustained["events_per_s"], sustained["ack_p50_ms"], sustained["ack_p99_ms"]))
        paced = [("half the sustained rate" if sustained else "half the max rate", half)]
        if lookback.get("half_burst_rate"):
            paced.append(("half the burst rate", lookback["half_burst_rate"]))
        for label, run in paced:
            lines.append(row(f"Lookback ({label})", run["events_per_s"], run["ack_p50_ms"], run["ack_p99_ms"]))
            if run.get("ack_p99_ms_after_warmup") is not None:
                lines.append(row(f"Lookback ({label}, batches sent after {fmt(run['warmup_seconds'])} s)", None,
                                 run["ack_p50_ms_after_warmup"], run["ack_p99_ms_after_warmup"]))
    floor = (lookback or {}).get("disk_floor")
    if floor:
        lines.append(f"| Disk alone: {floor['record_bytes']:,} B write + fdatasync, {floor['per_second']:.0f}/s "
                     f"(a floor under ack latency; max {fmt(floor['sync_max_ms'])} ms) | | "
                     f"{fmt(floor['sync_p50_ms'])} | {fmt(floor['sync_p99_ms'])} | |")
    ch = results.get("clickhouse")
    if ch:
        lines.append(f"| ClickHouse (chdb, INSERT from CSV) | {fmt(ch['events_per_s'])} | n/a | n/a "
                     f"| {fmt(ch['bytes_on_disk_per_event'])} |")
    pg = results.get("postgres")
    if pg:
        lines.append(f"| PostgreSQL 15 (COPY, fsync=on) | {fmt(pg['events_per_s'])} | n/a | n/a "
                     f"| {fmt(pg['bytes_on_disk_per_event'])} |")
    lines.append("")
    lb_cols = (lookback or {}).get("max_rate", {}).get("columns_bytes_per_event") or {}
    ch_cols = (ch or {}).get("columns_bytes_per_event") or {}
    if lb_cols or ch_cols:
        lines += ["| column | Lookback B/event | ClickHouse B/event | lookback/clickhouse |",
                  "|---|---:|---:|---:|"]
        for name, _, _ in COLUMNS:
            lb, chv = lb_cols.get(name), ch_cols.get(name)
            ratio = lb / chv if lb is not None and chv else None
            lines.append(f"| {name} | {fmt(lb, 2)} | {fmt(chv, 2)} | {fmt(ratio, 2)} |")
        lines.append("")
    ratio = results.get("bytes_ratio_lookback_over_clickhouse")
    lines.append(f"Bytes/event ratio lookback/clickhouse: {fmt(ratio, 2)}")
    lines.append(f"event_id floor: {EVENT_ID_FLOOR_BYTES:.0f} B/event (random UUIDv4s do not compress)")
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--lookback-bin", type=Path, default=Path("target/release/lookback"))
    parser.add_argument("--bench-bin", type=Path, default=Path("target/release/lookback-bench"))
    parser.add_argument("--out-json", type=Path)
    parser.add_argument("--half-rate-seconds", type=float, default=30.0,
                        help="length of the half-rate run (caps its events)")
    parser.add_argument("--warmup-seconds", type=float, default=5.0,
                        help="half-rate run: also report latency over batches sent after this long")
    parser.add_argument("--sustained-events", type=int, default=30_000_000,
                        help="a third fresh server at maximum rate with this many events, to show the "
                             "rate once the memtable backlog is full (0 = skip)")
    parser.add_argument("--disk-floor-seconds", type=float, default=20.0,
                        help="before the half-rate run, time the disk alone doing the WAL's syncs (0 = skip)")
    parser.add_argument("--systems", default="lookback,clickhouse,postgres",
                        help="comma-separated subset to run")
    parser.add_argument("--workdir", type=Path, help="keep files here instead of a temp dir")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    args.lookback_bin, args.bench_bin = args.lookback_bin.resolve(), args.bench_bin.resolve()
    systems = {s.strip() for s in args.systems.split(",") if s.strip()}
    unknown = systems - {"lookback", "clickhouse", "postgres"}
    if unknown:
        log(f"unknown --systems {sorted(unknown)}")
        return 2
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="lookback-compare-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results: dict = {"events": args.events, "clients": args.clients, "batch": args.batch,
                     "seed": args.seed, "event_id_floor_bytes_per_event": EVENT_ID_FLOOR_BYTES}
    try:
        require_file(args.bench_bin, "lookback-bench binary",
                     "build it with cargo build --release -p lookback-bench")
        if "lookback" in systems:
            results["lookback"] = bench_lookback(args, workdir)
        if systems & {"clickhouse", "postgres"}:
            csv_path = workdir / "events.csv"
            run_checked("gen csv", [str(args.bench_bin), "gen", "--events", str(args.events),
                                    "--seed", str(args.seed), "--batch", str(args.batch),
                                    "--format", "csv", "--out", str(csv_path)])
            os.chmod(csv_path, 0o644)
            if "clickhouse" in systems:
                results["clickhouse"] = bench_clickhouse(csv_path, args.events, workdir)
            if "postgres" in systems:
                results["postgres"] = bench_postgres(csv_path, args.events, workdir)
    except StepError as e:
        log(f"FAILED: {e}")
        return 1
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    lb = results.get("lookback", {}).get("max_rate", {}).get("bytes_on_disk_per_event")
    ch = results.get("clickhouse", {}).get("bytes_on_disk_per_event")
    results["bytes_ratio_lookback_over_clickhouse"] = lb / ch if lb and ch else None
    report = markdown(results)
    results["markdown"] = report
    print(report)
    if args.out_json:
        args.out_json.write_text(json.dumps(results, indent=2))
        log(f"wrote {args.out_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
