//! `lookback-bench`: Lookback's load generator.
//!
//! - `gen`: write generated events as CSV/TSV (for ClickHouse, PostgreSQL);
//! - `ingest`: send the same events to a Lookback server over the binary ingest protocol and
//!   report throughput, ack latency and (with `--http-addr`) bytes on disk per event.
//!
//! Both draw batch `i` of a run from `EventGenerator::plan_batch(plan, i)`, so for one seed and
//! batch size they produce identical events. The last line of `ingest`'s stdout is a JSON report.

mod gen;
mod ingest;
mod storage;

use clap::{Parser, Subcommand, ValueEnum};
use lookback_bench::export::{Delimited, ExportFormat, TsFormat};
use lookback_bench::RunPlan;
use std::path::PathBuf;

/// Default seed of generated data.
const DEFAULT_SEED: u64 = 42;
/// Default events per batch.
const DEFAULT_BATCH_ROWS: usize = 10_000;
/// Largest batch accepted on the command line (the server's decode limit is 2^20 rows).
const BATCH_ROWS_MAX: usize = 1 << 20;

#[derive(Parser)]
#[command(
    name = "lookback-bench",
    about = "Lookback's load generator and benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write the events an ingest run would send, as CSV/TSV with a header line.
    Gen(GenArgs),
    /// Send generated events to a Lookback server; print a JSON report as the last stdout line.
    Ingest(IngestArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Csv,
    Tsv,
}

#[derive(Clone, Copy, ValueEnum)]
enum TsFormatArg {
    /// `2026-11-01 00:00:00.123456+00` (PostgreSQL timestamptz; ClickHouse best_effort)
    Iso,
    /// Integer microseconds since the Unix epoch
    Micros,
}

#[derive(clap::Args)]
struct GenArgs {
    /// Number of events to write
    #[arg(long)]
    events: u64,
    #[arg(long, default_value_t = DEFAULT_SEED)]
    seed: u64,
    /// Events per batch (must match the ingest run for identical events)
    #[arg(long, default_value_t = DEFAULT_BATCH_ROWS)]
    batch: usize,
    /// csv: NULL is an empty unquoted field; tsv: NULL is \N
    #[arg(long, value_enum, default_value = "csv")]
    format: FormatArg,
    #[arg(long, value_enum, default_value = "iso")]
    ts_format: TsFormatArg,
    #[arg(long)]
    out: PathBuf,
}

/// Default pre-generation memory budget (encoded batches held before the clock starts).
const DEFAULT_PREGEN_BYTES_MAX: u64 = 8 << 30;

#[derive(clap::Args)]
struct IngestArgs {
    /// Ingest server address, HOST:PORT
    #[arg(long)]
    addr: String,
    /// Concurrent producers (one connection each)
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Events per batch
    #[arg(long, default_value_t = DEFAULT_BATCH_ROWS)]
    batch: usize,
    /// Events to send (all pre-generated before the clock starts)
    #[arg(long)]
    events: Option<u64>,
    /// Stop sending after this many seconds
    #[arg(long)]
    duration: Option<f64>,
    #[arg(long, default_value_t = DEFAULT_SEED)]
    seed: u64,
    /// Unacknowledged batches per client
    #[arg(long, default_value_t = 2)]
    inflight: usize,
    /// Total events per second across all clients (paced by batch); default: unpaced
    #[arg(long)]
    rate: Option<f64>,
    /// Also report ack latency percentiles over only the batches sent after this many seconds
    /// (`ack_p50_ms_after_warmup`, ...); the whole-run figures are reported as well
    #[arg(long, default_value_t = 0.0)]
    warmup_seconds: f64,
    /// Server HTTP address; when given, compact and report bytes on disk at the end
    #[arg(long)]
    http_addr: Option<String>,
    /// producer_id of client 0; client i uses base + i
    #[arg(long, default_value_t = 1)]
    producer_base: u64,
    #[arg(long, default_value = "")]
    api_key: String,
    /// Memory budget for pre-generated encoded batches, in bytes
    #[arg(long, default_value_t = DEFAULT_PREGEN_BYTES_MAX)]
    pregen_bytes_max: u64,
    /// Consecutive failed connection attempts before giving up
    #[arg(long, default_value_t = 5)]
    reconnect_attempts: u32,
    /// Tokio worker threads of the client
    #[arg(long, default_value_t = 2)]
    worker_threads: usize,
}

fn ingest_config(args: &IngestArgs) -> anyhow::Result<ingest::IngestConfig> {
    check_batch_rows(args.batch)?;
    if args.clients == 0 || args.inflight == 0 {
        anyhow::bail!("--clients and --inflight must be positive");
    }
    if args.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        anyhow::bail!("--rate must be a positive number of events per second");
    }
    if !(args.warmup_seconds >= 0.0 && args.warmup_seconds.is_finite()) {
        anyhow::bail!("--warmup-seconds must be a non-negative number of seconds");
    }
    if args.duration.is_some_and(|d| !(d > 0.0 && d.is_finite())) {
        anyhow::bail!("--duration must be a positive number of seconds");
    }
    Ok(ingest::IngestConfig {
        addr: args.addr.clone(),
        clients: args.clients,
        batch_rows: args.batch,
        events: args.events,
        duration: args.duration.map(std::time::Duration::from_secs_f64),
        seed: args.seed,
        inflight: args.inflight,
        rate: args.rate,
        warmup: std::time::Duration::from_secs_f64(args.warmup_seconds),
        http_addr: args.http_addr.clone(),
        producer_base: args.producer_base,
        api_key: args.api_key.clone(),
        pregen_bytes_max: args.pregen_bytes_max,
        reconnect_attempts_max: args.reconnect_attempts,
    })
}

fn run_ingest(args: &IngestArgs) -> anyhow::Result<()> {
    let config = ingest_config(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.worker_threads.max(1))
        .enable_all()
        .build()?;
    let report = runtime.block_on(ingest::run(config))?;
    println!("{report}");
    Ok(())
}

fn check_batch_rows(batch: usize) -> anyhow::Result<()> {
    if batch == 0 || batch > BATCH_ROWS_MAX {
        anyhow::bail!("--batch must be in 1..={BATCH_ROWS_MAX}, got {batch}");
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lookback-bench: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Gen(args) => {
            check_batch_rows(args.batch)?;
            let delimited = match args.format {
                FormatArg::Csv => Delimited::Csv,
                FormatArg::Tsv => Delimited::Tsv,
            };
            let ts = match args.ts_format {
                TsFormatArg::Iso => TsFormat::Iso,
                TsFormatArg::Micros => TsFormat::Micros,
            };
            let plan = RunPlan::new(args.events, args.batch);
            gen::run(plan, args.seed, ExportFormat { delimited, ts }, &args.out)
        }
        Command::Ingest(args) => run_ingest(&args),
    }
}
