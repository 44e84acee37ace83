#!/usr/bin/env python3
"""Side-by-side scoring benchmark: Lookback's forest scorer vs xgboost's own predict.

In one run: trains the issue's forest (100 trees of depth 6 on 32 float features, 10 % of the
values missing, binary:logistic) with xgboost, saves it as JSON, writes a 10,000-row sample
with xgboost's predictions, then times
- xgboost `inplace_predict` on numpy float32 batches (its fastest path: no DMatrix copy), with
  nthread 1 and 2;
- `lookback-scoring-bench` (release build) on the same model and batch sizes, with 1 and 2
  threads, after it checked the sample against xgboost's predictions (1e-6 relative), and on
  the GPU when the machine has one.
Both score rows from the same distribution (N(0, 1) per feature, NaN at the same rate).
Reports rows/s per (system, threads, batch) and Lookback / xgboost.

Requirements: `pip install xgboost-cpu numpy` (or xgboost), and
`cargo build --release -p lookback-scoring --bin lookback-scoring-bench`.

Example
    python3 bench/scoring_compare.py --out-json bench/results/scoring-2026-12-02.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
FEATURES = 32
TREES = 100
DEPTH = 6
MISSING = 0.1
TRAIN_ROWS = 200_000
SAMPLE_ROWS = 10_000


def log(message: str) -> None:
    print(f"[scoring_compare] {message}", file=sys.stderr, flush=True)


def rows(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.normal(0, 1, (n, FEATURES)).astype(np.float32)
    x[rng.random(x.shape) < MISSING] = np.nan
    return x


def train(workdir: Path):
    import xgboost as xgb

    rng = np.random.default_rng(4)
    x = rows(rng, TRAIN_ROWS)
    v = np.nan_to_num(x)
    signal = v[:, 0] - v[:, 1] + 0.5 * v[:, 2] * v[:, 3] + np.sin(v[:, 4]) + 0.3 * v[:, 5:15].sum(axis=1)
    y = (signal + rng.normal(0, 1, TRAIN_ROWS) > 0).astype(np.float32)
    params = {"objective": "binary:logistic", "max_depth": DEPTH, "eta": 0.1, "tree_method": "hist", "seed": 1, "nthread": 2}
    started = time.monotonic()
    booster = xgb.train(params, xgb.DMatrix(x, label=y, missing=np.nan), num_boost_round=TREES)
    log(f"trained {TREES} trees of depth {DEPTH} on {TRAIN_ROWS:,} rows in {time.monotonic() - started:.1f} s")
    model = workdir / "model.json"
    booster.save_model(str(model))
    sample = rows(rng, SAMPLE_ROWS)
    expected = booster.inplace_predict(sample)
    with open(workdir / "sample.csv", "w") as f:
        for row in sample:
            f.write(",".join("nan" if np.isnan(v) else repr(float(v)) for v in row) + "\n")
    with open(workdir / "expected.txt", "w") as f:
        for p in expected.astype(np.float32):
            f.write(f"{float(p):.9g}\n")
    return booster, model


def time_xgboost(booster, batches: list[int], threads: list[int], seconds: float) -> list[dict]:
    rng = np.random.default_rng(9)
    data = rows(rng, max(batches))
    results = []
    for t in threads:
        booster.set_param({"nthread": t})
        for batch in batches:
            x = data[:batch]
            booster.inplace_predict(x)
            samples = []
            budget = time.perf_counter()
            while len(samples) < 3 or (time.perf_counter() - budget < seconds and len(samples) < 1000):
                started = time.perf_counter()
                booster.inplace_predict(x)
                samples.append(time.perf_counter() - started)
            samples.sort()
            median = samples[len(samples) // 2]
            result = {"system": "xgboost", "device": "cpu", "threads": t, "batch_rows": batch, "repetitions": len(samples),
                      "best_s": samples[0], "median_s": median, "rows_per_s": batch / median}
            log(f"xgboost threads={t} batch={batch:,}: {result['rows_per_s']:,.0f} rows/s")
            results.append(result)
    return results


def time_lookback(args, model: Path, workdir: Path) -> list[dict]:
    binary = Path(args.bench_bin)
    if not binary.exists():
        raise SystemExit(f"{binary} is missing: cargo build --release -p lookback-scoring --bin lookback-scoring-bench")
    cmd = [str(binary), "--model", str(model), "--check", str(workdir / "sample.csv"), str(workdir / "expected.txt"),
           "--batches", ",".join(map(str, args.batches)), "--threads", ",".join(map(str, args.threads)),
           "--devices", "cpu,cuda", "--seconds", str(args.seconds), "--missing", str(MISSING)]
    log(" ".join(cmd))
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"lookback-scoring-bench exited with {done.returncode}")
    results = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    for r in results:
        log(f"lookback {r['device']} threads={r['threads']} batch={r['batch_rows']:,}: {r['rows_per_s']:,.0f} rows/s")
    return results


def table(results: list[dict]) -> str:
    xgb = {(r["threads"], r["batch_rows"]): r for r in results if r["system"] == "xgboost"}
    lines = ["| batch rows | threads | Lookback CPU rows/s | xgboost rows/s | Lookback / xgboost |", "|---:|---:|---:|---:|---:|"]
    for r in results:
        if r["system"] != "lookback" or r["device"] != "cpu":
            continue
        peer = xgb.get((r["threads"], r["batch_rows"]))
        ratio = f"{r['rows_per_s'] / peer['rows_per_s']:.1f}×" if peer else ""
        peer_rate = f"{peer['rows_per_s']:,.0f}" if peer else ""
        lines.append(f"| {r['batch_rows']:,} | {r['threads']} | {r['rows_per_s']:,.0f} | {peer_rate} | {ratio} |")
    gpu = [r for r in results if r["system"] == "lookback" and r["device"] == "cuda"]
    if gpu:
        lines += ["", "| batch rows | Lookback GPU rows/s (with transfers) |", "|---:|---:|"]
        lines += [f"| {r['batch_rows']:,} | {r['rows_per_s']:,.0f} |" for r in gpu]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=lambda s: [int(v) for v in s.split(",")], default=[1_000, 10_000, 100_000, 1_000_000, 10_000_000])
    parser.add_argument("--threads", type=lambda s: [int(v) for v in s.split(",")], default=[1, 2])
    parser.add_argument("--seconds", type=float, default=2.0, help="time budget per measurement (at least 3 repetitions)")
    parser.add_argument("--bench-bin", default=str(REPO / "target/release/lookback-scoring-bench"))
    parser.add_argument("--out-json", type=Path)
    args = parser.parse_args()
    import xgboost

    with tempfile.TemporaryDirectory(prefix="scoring_compare-") as tmp:
        workdir = Path(tmp)
        booster, model = train(workdir)
        results = time_xgboost(booster, args.batches, args.threads, args.seconds)
        results += time_lookback(args, model, workdir)
    report = {"xgboost_version": xgboost.__version__, "trees": TREES, "depth": DEPTH, "features": FEATURES,
              "missing": MISSING, "results": results}
    print(table(results))
    print(f"\nxgboost {xgboost.__version__} inplace_predict vs lookback-scoring-bench; {TREES} trees of depth {DEPTH}, "
          f"{FEATURES} features, {MISSING:.0%} missing.")
    if args.out_json:
        args.out_json.parent.mkdir(parents=True, exist_ok=True)
        args.out_json.write_text(json.dumps(report, indent=2) + "\n")
        log(f"wrote {args.out_json}")


if __name__ == "__main__":
    main()
