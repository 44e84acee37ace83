//! The ingest server: accepts producer connections and hands each to its own task.
//!
//! The server owns the limits that keep one producer from hurting the rest: at most
//! `connections_max` connections (the next one gets `Overloaded` and is closed), a bounded
//! per-connection queue of unacknowledged batches, bounded frames. It does not decide what a
//! batch means: the engine implements [`IngestSink`] (sequence checks, deduplication, logging,
//! durability). Shutdown is graceful and bounded: stop accepting, let connections ack what was
//! already admitted, wait at most `admit_timeout_ms`, then abort what is left.

use crate::ingest::connection;
use crate::ingest::error::{ErrorCode, IngestError};
use crate::BoxFuture;
use lookback_common::{Batch, Lsn, Schema};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// What the engine implements to receive batches.
///
/// The server calls `admit` for one connection's batches strictly in order and never calls it
/// again for that connection before the previous call resolved. Futures returned by `admit`
/// may be dropped before they resolve (the connection died); the sink must tolerate that.
pub trait IngestSink: Send + Sync + 'static {
    /// The schema of `table`, or `None` if there is no such table.
    fn schema(&self, table: &str) -> Option<Arc<Schema>>;
    /// The last sequence applied for `producer_id`, 0 if none (always 0 for producer 0).
    fn producer_last_seq(&self, producer_id: u64) -> u64;
    /// Admits one decoded batch: waits for room (this is the backpressure point: the
    /// connection reads nothing while it waits), checks the sequence (seq <= last applied is a
    /// duplicate batch, acknowledged with `duplicate_batch` and nothing written), logs it.
    /// Resolves once the batch has its LSN; the returned future resolves once it is durable.
    fn admit<'a>(&'a self, request: IngestRequest<'a>) -> BoxFuture<'a, Result<DurableFuture, IngestError>>;
}

/// One decoded, schema-checked batch on its way into the engine.
#[derive(Debug)]
pub struct IngestRequest<'a> {
    /// 0 = anonymous producer: no deduplication.
    pub producer_id: u64,
    pub seq: u64,
    pub table: String,
    pub batch: Batch,
    /// The batch-codec bytes as received, which decode to `batch`: a sink may log them as they
    /// came instead of encoding `batch` again.
    pub encoded: &'a [u8],
}

/// Resolves when the admitted batch is durable.
pub type DurableFuture = BoxFuture<'static, Result<IngestAck, IngestError>>;

/// What the producer is told once its batch is durable.
#[derive(Clone, Debug, PartialEq)]
pub struct IngestAck {
    pub lsn: Lsn,
    pub events_accepted: u32,
    pub events_deduplicated: u32,
    /// The whole batch was applied earlier (seq <= producer's last applied seq).
    pub duplicate_batch: bool,
}

#[derive(Clone, Debug)]
pub struct IngestServerConfig {
    /// Largest frame body accepted; longer frames get MalformedFrame. Advertised in Welcome.
    pub frame_bytes_max: usize,
    /// Most events (rows) per batch; more gets TooManyEvents. Advertised in Welcome.
    pub batch_events_max: usize,
    /// Largest single text value; larger gets ValueTooLarge.
    pub text_value_bytes_max: usize,
    /// Admitted but unacknowledged batches per connection; when full the connection stops
    /// reading.
    pub inflight_batches_max: usize,
    /// Open connections; the next one gets Overloaded and is closed.
    pub connections_max: usize,
    /// Time from accept to a complete Hello.
    pub handshake_timeout_ms: u64,
    /// Time `IngestSink::admit` may take before the batch gets Overloaded. Also the shutdown
    /// grace: after shutdown is requested, connections get this long to ack what was admitted
    /// before they are aborted.
    pub admit_timeout_ms: u64,
}

impl Default for IngestServerConfig {
    fn default() -> Self {
        IngestServerConfig {
            frame_bytes_max: 64 << 20,
            batch_events_max: 100_000,
            text_value_bytes_max: 1 << 20,
            inflight_batches_max: 16,
            connections_max: 1024,
            handshake_timeout_ms: 10_000,
            admit_timeout_ms: 30_000,
        }
    }
}

/// Counters read by the engine's /metrics. `bytes` counts frame bodies received; `batches`
/// and `events` count acknowledged batches and accepted events; `errors` counts error frames
/// sent.
#[derive(Default, Debug)]
pub struct IngestServerStats {
    pub connections_total: AtomicU64,
    pub connections_open: AtomicU64,
    pub batches: AtomicU64,
    pub events: AtomicU64,
    pub bytes: AtomicU64,
    pub errors: AtomicU64,
}

/// Everything a connection task needs, shared by all of them.
pub(crate) struct Shared {
    pub sink: Arc<dyn IngestSink>,
    pub config: IngestServerConfig,
    pub stats: Arc<IngestServerStats>,
}

/// Accepts connections until `shutdown` becomes true (or its sender is dropped); then stops
/// accepting, lets each connection finish acking batches already admitted (new frames get
/// Error(ShuttingDown)), and returns when all connections closed, waiting at most
/// `admit_timeout_ms` before aborting the rest.
pub async fn serve(
    listener: TcpListener,
    sink: Arc<dyn IngestSink>,
    config: IngestServerConfig,
    stats: Arc<IngestServerStats>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let grace = Duration::from_millis(config.admit_timeout_ms);
    let shared = Arc::new(Shared {
        sink,
        config,
        stats,
    });
    let mut tasks = JoinSet::new();
    let connection_shutdown = shutdown.clone();
    loop {
        tokio::select! {
            biased;
            () = shutdown_requested(&mut shutdown) => break,
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => log_join(joined),
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => spawn_connection(&mut tasks, stream, &shared, &connection_shutdown),
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning on accept.
                    tracing::warn!(error = %e, "ingest accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    drain_connections(tasks, grace).await;
    Ok(())
}

/// Resolves once shutdown is requested; a dropped sender counts as a request, since nothing
/// could ever request it otherwise.
pub(crate) async fn shutdown_requested(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

fn spawn_connection(
    tasks: &mut JoinSet<()>,
    stream: tokio::net::TcpStream,
    shared: &Arc<Shared>,
    shutdown: &watch::Receiver<bool>,
) {
    let stats = &shared.stats;
    stats.connections_total.fetch_add(1, Ordering::Relaxed);
    // Acks are small and latency matters more than packet count.
    let _ = stream.set_nodelay(true);
    let open = stats.connections_open.load(Ordering::Relaxed);
    if open >= shared.config.connections_max as u64 {
        let error = IngestError::new(
            ErrorCode::Overloaded,
            format!(
                "server has {open} connections, the limit is {}",
                shared.config.connections_max
            ),
        );
        tasks.spawn(connection::reject(stream, error, shared.clone()));
        return;
    }
    let guard = OpenConnection::new(stats.clone());
    let (shared, shutdown) = (shared.clone(), shutdown.clone());
    tasks.spawn(async move {
        connection::run(stream, shared, shutdown).await;
        drop(guard);
    });
}

/// Counts a connection as open for exactly as long as it lives, even if its task is aborted.
struct OpenConnection {
    stats: Arc<IngestServerStats>,
}

impl OpenConnection {
    fn new(stats: Arc<IngestServerStats>) -> OpenConnection {
        stats.connections_open.fetch_add(1, Ordering::Relaxed);
        OpenConnection { stats }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.stats.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn drain_connections(mut tasks: JoinSet<()>, grace: Duration) {
    let all_closed = async {
        while let Some(joined) = tasks.join_next().await {
            log_join(joined);
        }
    };
    if tokio::time::timeout(grace, all_closed).await.is_err() {
        tracing::warn!(
            open = tasks.len(),
            "ingest shutdown grace elapsed, aborting connections"
        );
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
}

fn log_join(joined: Result<(), tokio::task::JoinError>) {
    if let Err(e) = joined {
        if e.is_panic() {
            tracing::error!(error = %e, "ingest connection task panicked");
        }
    }
}
