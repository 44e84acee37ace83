//! The `lookback` binary: `serve` runs the server; `dump` prints a table's rows.

mod config;
mod demo;
mod dump;
mod faults_env;
mod http;
mod ingest_sink;
mod metrics;
mod server;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// mimalloc keeps freed memory for reuse: the write path allocates and frees batch-sized
/// buffers continuously, and with the system allocator each one came back as fresh pages the
/// kernel had to clear (a quarter of the CPU under sustained ingest).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "lookback", version, about = "Lookback: a database engine for marketing and mobile attribution")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        /// TOML configuration file (flags override it).
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long)]
        ingest_addr: Option<String>,
        #[arg(long)]
        pg_addr: Option<String>,
        #[arg(long)]
        http_addr: Option<String>,
        /// "text" or "json".
        #[arg(long)]
        log_format: Option<String>,
        /// Load a small demo dataset when the events table is empty.
        #[arg(long)]
        demo: bool,
    },
    /// Print a table's rows as JSON lines (the server must be stopped).
    Dump {
        #[arg(long, default_value = "./lookback-data")]
        data_dir: PathBuf,
        #[arg(long, default_value = "events")]
        table: String,
    },
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LOOKBACK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// mimalloc's `purge_delay` option (milliseconds before freed memory is returned to the OS).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// Keep freed memory this long: under sustained ingest the same amount is allocated again
/// within a flush interval, and memory the OS must fault in anew is slow (each first touch of a
/// page costs a fault and a clear; on the VMs measured here ~2.7 s per GiB).
const ALLOCATOR_PURGE_DELAY_MS: std::ffi::c_long = 30_000;
// Transparent huge pages stay enabled (an earlier build turned them off with PR_SET_THP_DISABLE):
// measured side by side on a fresh server, 10 M events, they cut page faults from ~670,000 to
// ~11,000, server CPU from 13-15 s to 11-12 s, and ack p50 at 650 k events/s from ~6 to 3.8 ms.
// On a VM every TLB miss walks two page tables, and the dedup window is probed at random.

fn main() -> Result<()> {
    // SAFETY: sets a process-wide allocator option before any other thread exists.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, ALLOCATOR_PURGE_DELAY_MS) };
    match Cli::parse().command {
        Command::Serve { config, data_dir, ingest_addr, pg_addr, http_addr, log_format, demo } => {
            let mut c = config::Config::load(config.as_deref())?;
            c.data_dir = data_dir.unwrap_or(c.data_dir);
            c.ingest_addr = ingest_addr.unwrap_or(c.ingest_addr);
            c.pg_addr = pg_addr.unwrap_or(c.pg_addr);
            c.http_addr = http_addr.unwrap_or(c.http_addr);
            c.log_format = log_format.unwrap_or(c.log_format);
            init_logging(&c.log_format);
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("lookback").build()?;
            runtime.block_on(server::serve(c, demo))
        }
        Command::Dump { data_dir, table } => {
            init_logging("text");
            let options = lookback_storage::DbOptions::new(data_dir);
            let stdout = std::io::stdout();
            let rows = dump::dump(options, &table, &mut stdout.lock())?;
            eprintln!("{rows} rows");
            Ok(())
        }
    }
}
