//! Scoring throughput of one model over batch sizes, on the CPU (per thread count) and on the
//! GPU when there is one. `bench/scoring_compare.py` runs it beside xgboost's own predict.
//!
//! ```text
//! lookback-scoring-bench --model model.json [--check sample.csv expected.txt]
//!     [--batches 1000,10000,100000,1000000,10000000] [--threads 1,2] [--devices cpu,cuda]
//!     [--seconds 1.0] [--missing 0.1]
//! ```
//!
//! Rows are drawn from N(0, 1) per feature with `--missing` of them NaN (the same distribution
//! the Python side trains and scores on). `--check` first scores a sample of rows (CSV, one row
//! per line, `nan` for missing) and compares with xgboost's predictions (1e-6 relative): a
//! benchmark of wrong answers is no benchmark. Each (device, threads, batch) prints one JSON
//! line: rows, seconds per batch (best and median of the repetitions), rows/s at the median.

use lookback_scoring::{cuda, Forest, Model};
use std::time::Instant;

struct Args {
    model: String,
    check: Option<(String, String)>,
    batches: Vec<usize>,
    threads: Vec<usize>,
    devices: Vec<String>,
    seconds: f64,
    missing: f64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        model: String::new(),
        check: None,
        batches: vec![1_000, 10_000, 100_000, 1_000_000, 10_000_000],
        threads: vec![1, 2],
        devices: vec!["cpu".into(), "cuda".into()],
        seconds: 1.0,
        missing: 0.1,
    };
    let mut it = std::env::args().skip(1);
    let list = |v: Option<String>| -> Result<Vec<usize>, String> {
        v.ok_or("missing value")?.split(',').map(|s| s.trim().parse::<usize>().map_err(|e| format!("{s}: {e}"))).collect()
    };
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--model" => args.model = it.next().ok_or("--model needs a path")?,
            "--check" => args.check = Some((it.next().ok_or("--check needs two paths")?, it.next().ok_or("--check needs two paths")?)),
            "--batches" => args.batches = list(it.next())?,
            "--threads" => args.threads = list(it.next())?,
            "--devices" => args.devices = it.next().ok_or("--devices needs a list")?.split(',').map(str::to_string).collect(),
            "--seconds" => args.seconds = it.next().ok_or("--seconds needs a number")?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--missing" => args.missing = it.next().ok_or("--missing needs a number")?.parse().map_err(|e| format!("--missing: {e}"))?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.model.is_empty() {
        return Err("--model is required".into());
    }
    Ok(args)
}

/// xorshift64* and Box-Muller: seeded, reproducible N(0, 1) values.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545F4914F6CDD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let (u, v) = (self.next_f64().max(1e-300), self.next_f64());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

fn columns(features: usize, rows: usize, missing: f64) -> Vec<Vec<f32>> {
    let mut rng = Rng(0x9E3779B97F4A7C15);
    (0..features)
        .map(|_| (0..rows).map(|_| if rng.next_f64() < missing { f32::NAN } else { rng.normal() as f32 }).collect())
        .collect()
}

fn check(forest: &Forest, sample: &str, expected: &str) -> Result<usize, String> {
    let read = |p: &str| std::fs::read_to_string(p).map_err(|e| format!("{p}: {e}"));
    let rows: Vec<Vec<f32>> = read(sample)?
        .lines()
        .map(|l| l.split(',').map(|v| v.parse::<f32>().map_err(|e| format!("{v}: {e}"))).collect())
        .collect::<Result<_, _>>()?;
    let want: Vec<f32> = read(expected)?.lines().map(|l| l.parse::<f32>().map_err(|e| format!("{l}: {e}"))).collect::<Result<_, _>>()?;
    let cols: Vec<Vec<f32>> = (0..forest.num_features()).map(|f| rows.iter().map(|r| r[f]).collect()).collect();
    let refs: Vec<&[f32]> = cols.iter().map(Vec::as_slice).collect();
    let mut got = vec![0f32; rows.len()];
    forest.predict(&refs, &mut got, 1).map_err(|e| e.to_string())?;
    for (r, (g, w)) in got.iter().zip(&want).enumerate() {
        if (g - w).abs() > 1e-6 * w.abs().max(1.0) {
            return Err(format!("row {r}: lookback {g}, xgboost {w}"));
        }
    }
    Ok(rows.len())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("lookback-scoring-bench: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    let text = std::fs::read(&args.model).map_err(|e| format!("{}: {e}", args.model))?;
    let model = Model::from_json(&text).map_err(|e| e.to_string())?;
    let forest = Forest::compile(&model);
    if let Some((sample, expected)) = &args.check {
        let rows = check(&forest, sample, expected)?;
        eprintln!("checked {rows} rows against xgboost: equal within 1e-6");
    }
    let largest = args.batches.iter().copied().max().unwrap_or(0);
    let data = columns(forest.num_features(), largest, args.missing);
    let gpu = match cuda::gpu() {
        Ok(g) => Some(g),
        Err(e) => {
            eprintln!("{e}: GPU runs skipped");
            None
        }
    };
    for device in &args.devices {
        let threads: Vec<usize> = if device == "cuda" { vec![1] } else { args.threads.clone() };
        for &t in &threads {
            for &batch in &args.batches {
                let refs: Vec<&[f32]> = data.iter().map(|c| &c[..batch]).collect();
                let mut out = vec![0f32; batch];
                let mut run_once = || -> Result<f64, String> {
                    let started = Instant::now();
                    match (device.as_str(), gpu) {
                        ("cpu", _) => forest.predict(&refs, &mut out, t).map_err(|e| e.to_string())?,
                        ("cuda", Some(g)) => g.predict(&forest, &refs, &mut out).map_err(|e| e.to_string())?,
                        ("cuda", None) => return Err("no GPU".into()),
                        (other, _) => return Err(format!("unknown device {other}")),
                    }
                    Ok(started.elapsed().as_secs_f64())
                };
                if device == "cuda" && gpu.is_none() {
                    continue;
                }
                run_once()?; // warm-up (and the GPU upload)
                let mut samples = Vec::new();
                let budget = Instant::now();
                while samples.len() < 3 || (budget.elapsed().as_secs_f64() < args.seconds && samples.len() < 1000) {
                    samples.push(run_once()?);
                }
                samples.sort_by(f64::total_cmp);
                let median = samples[samples.len() / 2];
                println!(
                    "{{\"system\": \"lookback\", \"device\": \"{device}\", \"threads\": {t}, \"batch_rows\": {batch}, \"trees\": {}, \"features\": {}, \"repetitions\": {}, \"best_s\": {:.6}, \"median_s\": {:.6}, \"rows_per_s\": {:.0}}}",
                    forest.tree_count(),
                    forest.num_features(),
                    samples.len(),
                    samples[0],
                    median,
                    batch as f64 / median
                );
            }
        }
    }
    Ok(())
}
