//! `lookback-bench ingest`: drives a Lookback server over the binary ingest protocol.
//!
//! Batch `i` of the run is `EventGenerator::plan_batch(plan, i)`, exactly what `gen` writes for
//! the same seed and batch size, and goes to client `i % clients` (each client is one
//! [`Producer`] with `producer_id = producer_base + client_index`). All batches are generated
//! and encoded *before* the clock starts so the generator does not compete with the server for
//! CPU on a shared machine; the memory this takes is bounded by `pregen_bytes_max`.
//!
//! `--duration` runs stop sending at the deadline. Without `--events` they send from a pool of
//! as many batches as fit in `pregen_bytes_max`; when the pool is exhausted before the deadline
//! the run ends early with a warning (events are never repeated or altered, so the data on the
//! server is always a prefix of what `gen` writes).
//!
//! Throughput is acknowledged events over the time from the first send to the last ack.
//! Ack latency is the client's [`Ack::latency`] (first send to ack, resends included).

use crate::storage::{fetch_storage, StorageReport};
use anyhow::{bail, Context};
use bytes::Bytes;
use lookback_bench::latency::LatencySummary;
use lookback_bench::{EventGenerator, GeneratorConfig, RunPlan};
use lookback_common::encode_batch_compact;
use lookback_common::schema::events::TABLE_NAME;
use lookback_wire::ingest::client::{Ack, Producer, ProducerOptions};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Conservative encoded size of one generated event, for the pre-generation memory estimate
/// (measured: 119 B in the dictionary form producers send).
const ENCODED_BYTES_PER_EVENT_ESTIMATE: u64 = 160;
/// Interval between progress lines on stderr.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct IngestConfig {
    pub addr: String,
    pub clients: usize,
    pub batch_rows: usize,
    pub events: Option<u64>,
    pub duration: Option<Duration>,
    pub seed: u64,
    pub inflight: usize,
    /// Total events per second across clients; `None` = as fast as acks allow.
    pub rate: Option<f64>,
    /// Latency percentiles are also reported over batches first sent after this long.
    pub warmup: Duration,
    pub http_addr: Option<String>,
    pub producer_base: u64,
    pub api_key: String,
    pub pregen_bytes_max: u64,
    pub reconnect_attempts_max: u32,
}

/// One pre-encoded batch.
struct Encoded {
    bytes: Bytes,
    rows: u32,
}

/// What one client saw.
#[derive(Default)]
struct ClientStats {
    latencies: Vec<Duration>,
    /// Latencies of batches first sent after the warm-up.
    latencies_after_warmup: Vec<Duration>,
    events_sent: u64,
    events_accepted: u64,
    events_deduplicated: u64,
    duplicate_batches: u64,
}

impl ClientStats {
    fn record(&mut self, ack: &Ack, after_warmup: bool) {
        self.latencies.push(ack.latency);
        if after_warmup {
            self.latencies_after_warmup.push(ack.latency);
        }
        self.events_accepted += u64::from(ack.events_accepted);
        self.events_deduplicated += u64::from(ack.events_deduplicated);
        self.duplicate_batches += u64::from(ack.duplicate_batch);
    }
}

/// Shared, read-only inputs of every client task.
struct RunShared {
    batches: Vec<Encoded>,
    config: IngestConfig,
    started: Instant,
    deadline: Option<Instant>,
    events_acked: AtomicU64,
}

pub async fn run(config: IngestConfig) -> anyhow::Result<serde_json::Value> {
    let plan = plan_run(&config)?;
    // Connect first so an unreachable server fails fast, before minutes of generation.
    let producers = connect_all(&config).await?;
    let batches = pregenerate(&config, &plan);
    eprintln!(
        "ingest: {} clients connected to {}, sending {} batches of up to {} events{}",
        config.clients,
        config.addr,
        batches.len(),
        config.batch_rows,
        config
            .rate
            .map_or(String::new(), |r| format!(" at {r:.0} events/s"))
    );
    let started = Instant::now();
    let deadline = config.duration.map(|d| started + d);
    let shared = Arc::new(RunShared {
        batches,
        config,
        started,
        deadline,
        events_acked: AtomicU64::new(0),
    });
    let progress = tokio::spawn(report_progress(shared.clone()));
    let mut tasks = Vec::new();
    for (index, producer) in producers.into_iter().enumerate() {
        tasks.push(tokio::spawn(drive_client(shared.clone(), index, producer)));
    }
    let mut stats = Vec::new();
    for (index, task) in tasks.into_iter().enumerate() {
        stats.push(
            task.await
                .with_context(|| format!("client {index} panicked"))??,
        );
    }
    let seconds = started.elapsed().as_secs_f64();
    progress.abort();
    check_all_acknowledged(&stats)?;
    let storage = match &shared.config.http_addr {
        Some(http) => Some(compact_and_fetch(http.clone()).await?),
        None => None,
    };
    Ok(build_report(&shared, stats, seconds, storage.as_ref()))
}

/// Every event sent must come back as accepted or deduplicated.
fn check_all_acknowledged(stats: &[ClientStats]) -> anyhow::Result<()> {
    for (index, s) in stats.iter().enumerate() {
        let acked = s.events_accepted + s.events_deduplicated;
        if acked != s.events_sent {
            bail!(
                "client {index}: sent {} events but acks account for {acked}",
                s.events_sent
            );
        }
    }
    Ok(())
}

fn plan_run(config: &IngestConfig) -> anyhow::Result<RunPlan> {
    if config.events.is_none() && config.duration.is_none() {
        bail!("give --events, --duration or both");
    }
    let budget_events = config.pregen_bytes_max / ENCODED_BYTES_PER_EVENT_ESTIMATE;
    let events = match config.events {
        Some(events) if events > budget_events => bail!(
            "pre-generating {events} events needs ~{:.1} GB, over --pregen-bytes-max {} \
             ({budget_events} events): raise the limit or send fewer events",
            (events * ENCODED_BYTES_PER_EVENT_ESTIMATE) as f64 / 1e9,
            config.pregen_bytes_max
        ),
        Some(events) => events,
        None => budget_events,
    };
    Ok(RunPlan::new(events, config.batch_rows))
}

/// Generates and encodes every batch of the plan on all cores, in batch order.
fn pregenerate(config: &IngestConfig, plan: &RunPlan) -> Vec<Encoded> {
    let started = Instant::now();
    let generator = EventGenerator::new(config.seed, GeneratorConfig::default());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let count = plan.batches() as usize;
    let mut slots: Vec<Option<Encoded>> = (0..count).map(|_| None).collect();
    std::thread::scope(|scope| {
        let per_thread = count.div_ceil(threads).max(1);
        for (chunk_index, chunk) in slots.chunks_mut(per_thread).enumerate() {
            let generator = &generator;
            scope.spawn(move || {
                for (offset, slot) in chunk.iter_mut().enumerate() {
                    let batch_index = (chunk_index * per_thread + offset) as u64;
                    let batch = generator.plan_batch(plan, batch_index);
                    let mut out = Vec::with_capacity(
                        batch.rows() * ENCODED_BYTES_PER_EVENT_ESTIMATE as usize,
                    );
                    encode_batch_compact(&batch, &mut out);
                    *slot = Some(Encoded {
                        bytes: Bytes::from(out),
                        rows: batch.rows() as u32,
                    });
                }
            });
        }
    });
    let batches: Vec<Encoded> = slots.into_iter().flatten().collect();
    assert_eq!(batches.len(), count, "every batch was generated");
    let bytes: usize = batches.iter().map(|b| b.bytes.len()).sum();
    eprintln!(
        "ingest: pre-generated {} events ({:.1} MB encoded, {:.0} B/event) in {:.2} s",
        plan.events,
        bytes as f64 / 1e6,
        bytes as f64 / plan.events.max(1) as f64,
        started.elapsed().as_secs_f64()
    );
    batches
}

async fn connect_all(config: &IngestConfig) -> anyhow::Result<Vec<Producer>> {
    let mut producers = Vec::with_capacity(config.clients);
    for index in 0..config.clients {
        let mut options = ProducerOptions::new(config.producer_base + index as u64);
        options.api_key = config.api_key.clone();
        options.inflight_max = config.inflight;
        options.reconnect_attempts_max = config.reconnect_attempts_max;
        let producer = Producer::connect(&config.addr, options)
            .await
            .with_context(|| {
                format!(
                    "client {index}: connect to ingest server {} (is it running?)",
                    config.addr
                )
            })?;
        producers.push(producer);
    }
    Ok(producers)
}

/// Sends this client's batches (`index`, `index + clients`, ...), keeping `inflight` unacked.
async fn drive_client(
    shared: Arc<RunShared>,
    index: usize,
    mut producer: Producer,
) -> anyhow::Result<ClientStats> {
    let config = &shared.config;
    let mut stats = ClientStats::default();
    let mut outstanding = 0usize;
    // Paced runs read each ack as soon as it arrives: with more than one batch in flight the ack
    // of the previous batch would sit unread in the socket through the pacing sleep, and its
    // measured latency would be the pacing interval, not the server's.
    let window = if config.rate.is_some() { 1 } else { config.inflight.max(1) };
    for batch_index in (index..shared.batches.len()).step_by(config.clients) {
        if shared.deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        if let Some(rate) = config.rate {
            let due = batch_index as f64 * config.batch_rows as f64 / rate;
            tokio::time::sleep_until((shared.started + Duration::from_secs_f64(due)).into()).await;
        }
        let batch = &shared.batches[batch_index];
        producer
            .send_encoded(TABLE_NAME, batch.bytes.clone(), batch.rows)
            .await
            .with_context(|| format!("client {index}: send batch {batch_index}"))?;
        stats.events_sent += u64::from(batch.rows);
        outstanding += 1;
        while outstanding >= window {
            let ack = producer
                .next_ack()
                .await
                .with_context(|| format!("client {index}: await ack"))?;
            take_ack(&shared, &mut stats, &ack);
            outstanding -= 1;
        }
    }
    for ack in producer
        .flush()
        .await
        .with_context(|| format!("client {index}: flush"))?
    {
        take_ack(&shared, &mut stats, &ack);
    }
    Ok(stats)
}

fn take_ack(shared: &RunShared, stats: &mut ClientStats, ack: &Ack) {
    let sent_at = Instant::now().checked_sub(ack.latency).unwrap_or(shared.started);
    stats.record(ack, sent_at >= shared.started + shared.config.warmup);
    let events = u64::from(ack.events_accepted) + u64::from(ack.events_deduplicated);
    shared.events_acked.fetch_add(events, Ordering::Relaxed);
}

async fn report_progress(shared: Arc<RunShared>) {
    let mut last = (Instant::now(), 0u64);
    loop {
        tokio::time::sleep(PROGRESS_INTERVAL).await;
        let acked = shared.events_acked.load(Ordering::Relaxed);
        let now = Instant::now();
        let rate = (acked - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
        eprintln!(
            "ingest: {:>7.1} s  {acked} events acked  {rate:.0} events/s",
            now.duration_since(shared.started).as_secs_f64()
        );
        last = (now, acked);
    }
}

async fn compact_and_fetch(http_addr: String) -> anyhow::Result<StorageReport> {
    eprintln!("ingest: POST http://{http_addr}/admin/compact (flush + full compaction)...");
    let started = Instant::now();
    let report = tokio::task::spawn_blocking(move || fetch_storage(&http_addr))
        .await
        .context("storage report task panicked")??;
    eprintln!(
        "ingest: compaction and storage report took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(report)
}

fn build_report(
    shared: &RunShared,
    stats: Vec<ClientStats>,
    seconds: f64,
    storage: Option<&StorageReport>,
) -> serde_json::Value {
    let config = &shared.config;
    let sent: u64 = stats.iter().map(|s| s.events_sent).sum();
    let accepted: u64 = stats.iter().map(|s| s.events_accepted).sum();
    let deduplicated: u64 = stats.iter().map(|s| s.events_deduplicated).sum();
    let duplicate_batches: u64 = stats.iter().map(|s| s.duplicate_batches).sum();
    let after_warmup: Vec<Duration> = stats.iter().flat_map(|s| s.latencies_after_warmup.iter().copied()).collect();
    let after_warmup = (!config.warmup.is_zero()).then(|| LatencySummary::new(after_warmup));
    let latencies = LatencySummary::new(stats.into_iter().flat_map(|s| s.latencies).collect());
    if deduplicated > 0 || duplicate_batches > 0 {
        eprintln!(
            "ingest: warning: the server deduplicated {deduplicated} events and {duplicate_batches} \
             batches (same seed sent to this server before?)"
        );
    }
    let planned: usize = shared.batches.iter().map(|b| b.rows as usize).sum();
    let encoded_bytes: usize = shared.batches.iter().map(|b| b.bytes.len()).sum();
    if config.events.is_none() && sent as usize == planned {
        eprintln!("ingest: warning: the pre-generated pool ran out before --duration elapsed");
    }
    serde_json::json!({
        "events": accepted + deduplicated,
        "events_sent": sent,
        "events_accepted": accepted,
        "events_deduplicated": deduplicated,
        "seconds": seconds,
        "events_per_s": (accepted + deduplicated) as f64 / seconds.max(f64::MIN_POSITIVE),
        "ack_p50_ms": latencies.percentile_ms(50.0),
        "ack_p99_ms": latencies.percentile_ms(99.0),
        "ack_max_ms": latencies.percentile_ms(100.0),
        "batches_acked": latencies.count(),
        "warmup_seconds": config.warmup.as_secs_f64(),
        "ack_p50_ms_after_warmup": after_warmup.as_ref().and_then(|l| l.percentile_ms(50.0)),
        "ack_p99_ms_after_warmup": after_warmup.as_ref().and_then(|l| l.percentile_ms(99.0)),
        "batches_after_warmup": after_warmup.as_ref().map(LatencySummary::count),
        "encoded_bytes_per_event": encoded_bytes as f64 / planned.max(1) as f64,
        "bytes_on_disk_per_event": storage.and_then(StorageReport::bytes_per_event),
        "columns_bytes_per_event": storage.and_then(StorageReport::columns_bytes_per_event),
        "storage": storage.map(|s| s.raw.clone()),
        "clients": config.clients,
        "batch": config.batch_rows,
        "inflight": config.inflight,
        "rate": config.rate,
        "seed": config.seed,
    })
}
