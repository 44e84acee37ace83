//! `lookback-jepsen`: runs fault-injection scenarios against a `lookback` binary and prints
//! the table of `docs/reliability.md`. Long mode is this binary with large `--cycles` and
//! `--stride 1`; the tests run the same scenarios briefly.

use anyhow::{Context, Result};
use clap::Parser;
use lookback_jepsen::{markdown_table, run, RunOptions, FAULTS};
use std::path::PathBuf;

#[derive(Parser)]
#[command(about = "Fault injection against the real lookback binary")]
struct Args {
    /// The lookback binary (e.g. target/release/lookback).
    #[arg(long, default_value = "target/release/lookback")]
    bin: PathBuf,
    /// Faults to run (comma-separated), or "all".
    #[arg(long, default_value = "all")]
    faults: String,
    /// Cycles per fault (kills, pauses, power cuts, flips, disk-full episodes).
    #[arg(long, default_value_t = 20)]
    cycles: usize,
    /// Torn writes and crash points: every Nth offset / data write (1 = every one).
    #[arg(long, default_value_t = 1)]
    stride: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where sites are created (default: a temporary directory, removed afterwards).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Also write the reports as JSON here.
    #[arg(long)]
    out_json: Option<PathBuf>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let temp = tempfile::tempdir()?;
    let work_dir = args
        .work_dir
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    let bin = std::fs::canonicalize(&args.bin)
        .with_context(|| format!("lookback binary {}", args.bin.display()))?;
    let options = RunOptions {
        bin,
        work_dir,
        cycles: args.cycles,
        seed: args.seed,
        stride: args.stride,
    };
    let faults: Vec<&str> = if args.faults == "all" {
        FAULTS.to_vec()
    } else {
        args.faults.split(',').map(str::trim).collect()
    };
    let mut reports = Vec::new();
    for fault in faults {
        let started = std::time::Instant::now();
        eprintln!("running {fault} ({} cycles)...", args.cycles);
        let report = run(fault, &options).with_context(|| format!("fault {fault}"))?;
        eprintln!(
            "{fault}: {} in {:.0} s; checks: {:?}; failures: {:?}",
            if report.passed() { "ok" } else { "FAILED" },
            started.elapsed().as_secs_f64(),
            report.checks,
            report.failures
        );
        reports.push(report);
    }
    println!("{}", markdown_table(&reports));
    if let Some(path) = &args.out_json {
        std::fs::write(path, serde_json::to_string_pretty(&reports)?)?;
    }
    if reports.iter().any(|r| !r.passed()) {
        std::process::exit(1);
    }
    Ok(())
}
