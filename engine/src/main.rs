//! The `lookback` binary: `serve` runs the server; `dump` prints a table's rows.

mod config;
mod demo;
mod dump;
mod faults_env;
mod heap;
mod http;
mod ingest_sink;
mod metrics;
mod server;
mod sql;

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
        /// Load the demo dataset (about 1 M events and a campaign_costs table) when the events table
        /// is empty, and print how to connect.
        #[arg(long)]
        demo: bool,
        /// Memory to pre-fault at start-up, in MiB (config: memory_prefault_bytes; 0: off).
        #[arg(long)]
        memory_prefault_mib: Option<usize>,
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

// Transparent huge pages stay enabled (an earlier build turned them off with PR_SET_THP_DISABLE):
// measured side by side on a fresh server, 10 M events, they cut page faults from ~670,000 to
// ~11,000, server CPU from 13-15 s to 11-12 s, and ack p50 at 650 k events/s from ~6 to 3.8 ms.
// On a VM every TLB miss walks two page tables, and the dedup window is probed at random.

/// Pre-faults the heap (see [`heap`]) while the process is still single-threaded.
fn prefault_heap(bytes: usize) {
    if bytes == 0 {
        return;
    }
    heap::keep_freed_memory(true);
    match heap::prefault(bytes) {
        Ok(done) => tracing::info!(mib = done.bytes >> 20, arenas = done.arenas, ms = done.elapsed.as_millis() as u64, "pre-faulted the heap"),
        Err(reason) => tracing::warn!(reason, "heap not pre-faulted; first touches of memory will be slower"),
    }
}

fn main() -> Result<()> {
    heap::keep_freed_memory(false);
    match Cli::parse().command {
        Command::Serve { config, data_dir, ingest_addr, pg_addr, http_addr, log_format, demo, memory_prefault_mib } => {
            let mut c = config::Config::load(config.as_deref())?;
            c.data_dir = data_dir.unwrap_or(c.data_dir);
            c.ingest_addr = ingest_addr.unwrap_or(c.ingest_addr);
            c.pg_addr = pg_addr.unwrap_or(c.pg_addr);
            c.http_addr = http_addr.unwrap_or(c.http_addr);
            c.log_format = log_format.unwrap_or(c.log_format);
            c.memory_prefault_bytes = memory_prefault_mib.map_or(c.memory_prefault_bytes, |mib| mib << 20);
            init_logging(&c.log_format);
            prefault_heap(c.memory_prefault_bytes);
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
