#!/usr/bin/env python3
"""End-to-end scoring in SQL: `SELECT count(*) FROM events WHERE score('fraud_v1', ...) > 0.9`.

In one run, on the same generated events (`lookback-bench gen` / `ingest`, seed 42):
- DuckDB loads the events from CSV; 32 numeric features are computed from event columns
  (hour, minute, weekday of ts; lengths of text columns; event type, platform and channel
  indicators; revenue and products of them), a 200,000-row sample is drawn, a synthetic fraud
  label made from them, and xgboost trains 100 trees of depth 6 (binary:logistic), saved as JSON;
- Lookback ingests the same events over the ingest protocol, compacts, loads the model with
  `load_model`, and times the query above (one scan computing the 32 expressions, scoring
  every row, filtering, counting);
- the glue-stack peer: DuckDB computes the same 32 features into numpy (`fetchnumpy`), xgboost's
  `inplace_predict` (nthread 2) scores them, numpy counts the scores above 0.9.
The two counts are compared (they may differ by a few rows whose score is within float
rounding of 0.9: DuckDB computes features in double, both then score in float32).

Requirements: `pip install duckdb xgboost-cpu numpy psycopg[binary]`,
`cargo build --release -p lookback-engine -p lookback-bench`.

Example
    python3 bench/scoring_sql_compare.py --events 10000000 --out-json bench/results/scoring-sql-2026-12-02.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest_compare import LookbackServer, StepError, require_file, run_ingest  # noqa: E402
from sql_compare import duckdb_connect, gen_csv, percentile  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
THRESHOLD = 0.9
TREES = 100
DEPTH = 6
TRAIN_ROWS = 200_000


def log(message: str) -> None:
    print(f"[scoring_sql_compare] {message}", file=sys.stderr, flush=True)


def indicator(condition: str) -> str:
    return f"CASE WHEN {condition} THEN 1.0 ELSE 0.0 END"


# 32 feature expressions, written once in SQL both engines read the same way.
FEATURES = [
    "extract(hour FROM ts)", "extract(minute FROM ts)", "extract(second FROM ts)", "extract(dow FROM ts)",
    "extract(day FROM ts)", "revenue", "revenue * extract(hour FROM ts)", "length(device_id)",
    "length(user_id)", "length(ip)", "length(user_agent)", "length(campaign)",
    "length(channel)", "length(app_id)", "length(properties)", "length(currency)",
    indicator("event_type = 'install'"), indicator("event_type = 'click'"), indicator("event_type = 'impression'"),
    indicator("event_type = 'purchase'"), indicator("event_type = 'open'"), indicator("platform = 'ios'"),
    indicator("platform = 'android'"), indicator("channel = 'meta'"), indicator("channel = 'google'"),
    indicator("channel = 'tiktok'"), indicator("user_id IS NULL"), indicator("revenue > 10"),
    "extract(hour FROM ts) * length(user_agent)", "extract(minute FROM ts) - extract(second FROM ts)",
    "length(campaign) * extract(dow FROM ts)", "extract(epoch FROM ts) / 86400.0 - 20000.0",
]
assert len(FEATURES) == 32
FEATURE_LIST = ", ".join(f"CAST({f} AS DOUBLE PRECISION)" for f in FEATURES)
LOOKBACK_SQL = f"SELECT count(*) FROM events WHERE score('fraud_v1', {FEATURE_LIST}) > {THRESHOLD}"
DUCKDB_FEATURES_SQL = f"SELECT {FEATURE_LIST} FROM events"


def feature_matrix(con, sql: str) -> np.ndarray:
    columns = con.execute(sql).fetchnumpy()
    out = np.empty((len(next(iter(columns.values()))), len(columns)), dtype=np.float32)
    for i, values in enumerate(columns.values()):
        if np.ma.isMaskedArray(values):
            values = values.astype(np.float64).filled(np.nan)
        out[:, i] = np.asarray(values, dtype=np.float64)
    return out


def train(con, workdir: Path):
    import xgboost as xgb

    x = feature_matrix(con, f"{DUCKDB_FEATURES_SQL} USING SAMPLE {TRAIN_ROWS} ROWS (reservoir, 7)")
    v = np.nan_to_num(x)
    rng = np.random.default_rng(3)
    # A made-up fraud signal: night clicks from short user agents, installs seconds after, ...
    signal = (1.5 * v[:, 17] * (v[:, 0] < 6) - 0.05 * v[:, 10] + 2.0 * v[:, 16] * (v[:, 2] < 10)
              + 0.8 * v[:, 21] * v[:, 25] + 0.02 * v[:, 5] + rng.normal(0, 1, len(v)))
    y = (signal > np.quantile(signal, 0.9)).astype(np.float32)
    params = {"objective": "binary:logistic", "max_depth": DEPTH, "eta": 0.3, "tree_method": "hist", "seed": 1, "nthread": 2}
    started = time.monotonic()
    booster = xgb.train(params, xgb.DMatrix(x, label=y, missing=np.nan), num_boost_round=TREES)
    log(f"trained {TREES} trees of depth {DEPTH} on {len(x):,} rows in {time.monotonic() - started:.1f} s")
    model = workdir / "fraud_v1.json"
    booster.save_model(str(model))
    return booster, model


def timed(fn, warmup: int, repetitions: int) -> tuple[dict, object]:
    answer = None
    for _ in range(warmup):
        answer = fn()
    samples = []
    for _ in range(repetitions):
        started = time.perf_counter()
        answer = fn()
        samples.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": round(percentile(samples, 50), 1), "p99_ms": round(percentile(samples, 99), 1),
            "min_ms": round(min(samples), 1), "repetitions": repetitions}, answer


def bench_peer(con, booster, args) -> tuple[dict, int]:
    booster.set_param({"nthread": 2})

    def run() -> int:
        x = feature_matrix(con, DUCKDB_FEATURES_SQL)
        return int((booster.inplace_predict(x) > THRESHOLD).sum())

    timing, count = timed(run, args.warmup, args.repetitions)
    log(f"duckdb + xgboost: {timing}, count {count:,}")
    return timing, count


def bench_lookback(args, workdir: Path, model: Path) -> tuple[dict, int, dict]:
    import psycopg

    require_file(args.lookback_bin, "lookback binary", "cargo build --release -p lookback-engine")
    server = LookbackServer(args.lookback_bin, workdir, "lookback")
    server.start()
    try:
        load = run_ingest(args.bench_bin, server, args, args.events, None, False, "ingest")
        import urllib.request
        urllib.request.urlopen(urllib.request.Request(f"http://{server.http_addr}/admin/compact", method="POST"), timeout=3600).read()
        host, port = server.pg_addr.rsplit(":", 1)
        with psycopg.connect(host=host, port=int(port), user="lookback", dbname="lookback", autocommit=True) as conn:
            rows = conn.execute("SELECT count(*) FROM events").fetchone()[0]
            if rows != args.events:
                raise StepError(f"lookback holds {rows} events, expected {args.events}")
            log(conn.execute("SELECT load_model('fraud_v1', %s)", (str(model),)).fetchone()[0])
            timing, count = timed(lambda: conn.execute(LOOKBACK_SQL).fetchone()[0], args.warmup, args.repetitions)
            log(f"lookback score(): {timing}, count {count:,}")
            # The same scan and expressions without the model: what scoring adds.
            floor_sql = f"SELECT count(*) FROM events WHERE greatest({FEATURE_LIST}) > -1e300"
            floor, _ = timed(lambda: conn.execute(floor_sql).fetchone()[0], args.warmup, args.repetitions)
            log(f"lookback, the 32 features alone: {floor}")
        return timing, count, {"features_only": floor, "load": load}
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--lookback-bin", type=Path, default=REPO / "target/release/lookback")
    parser.add_argument("--bench-bin", type=Path, default=REPO / "target/release/lookback-bench")
    parser.add_argument("--out-json", type=Path)
    args = parser.parse_args()
    import duckdb
    import xgboost

    with tempfile.TemporaryDirectory(prefix="scoring_sql_compare-") as tmp:
        workdir = Path(tmp)
        csv_path = workdir / "events.csv"
        gen_csv(args, csv_path)
        con = duckdb_connect()
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"CREATE TABLE events AS SELECT * FROM read_csv('{csv_path}', header = true)")
        csv_path.unlink()
        booster, model = train(con, workdir)
        peer, peer_count = bench_peer(con, booster, args)
        con.close()
        lookback, count, extra = bench_lookback(args, workdir, model)
    report = {"events": args.events, "query": LOOKBACK_SQL, "threshold": THRESHOLD,
              "lookback": {**lookback, "count": count, **extra},
              "duckdb_xgboost": {**peer, "count": peer_count},
              "duckdb_version": duckdb.__version__, "xgboost_version": xgboost.__version__}
    ratio = peer["p50_ms"] / lookback["p50_ms"]
    print(f"| system | p50 ms | p99 ms | count > {THRESHOLD} |\n|---|---:|---:|---:|\n"
          f"| Lookback `score()` in SQL | {lookback['p50_ms']:,} | {lookback['p99_ms']:,} | {count:,} |\n"
          f"| Lookback, the 32 features without the model | {extra['features_only']['p50_ms']:,} | {extra['features_only']['p99_ms']:,} | |\n"
          f"| DuckDB {duckdb.__version__} features + xgboost {xgboost.__version__} inplace_predict | {peer['p50_ms']:,} | {peer['p99_ms']:,} | {peer_count:,} |\n"
          f"\nLookback is {ratio:.1f}x the glue stack on {args.events:,} events; counts differ by {abs(count - peer_count):,}.")
    if args.out_json:
        args.out_json.parent.mkdir(parents=True, exist_ok=True)
        args.out_json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
