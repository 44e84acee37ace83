//! The clients: producers over the ingest protocol (the Rust client, which reconnects and
//! resends with the same sequence numbers), a producer that dribbles its frames a few bytes at
//! a time, and readers counting events over pgwire. All record into one [`History`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lookback_wire::ingest::client::{Ack, ClientError, Producer, ProducerOptions};
use lookback_wire::ingest::frame::{self, Frame, Hello};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;

use crate::events::{build, event_id, expected_json, random_event, Row};
use crate::history::History;

/// Unacknowledged batches per producer.
const INFLIGHT_MAX: usize = 3;
/// Pause after a producer's client gives up reconnecting, before it tries again.
const RETRY_PAUSE_MS: u64 = 100;

#[derive(Clone, Debug)]
pub struct WorkloadOptions {
    pub producers: u64,
    pub batch_events: usize,
    /// Producers whose frames are written in small fragments with pauses.
    pub slow_producers: u64,
    pub readers: usize,
    /// Pause between a reader's queries.
    pub read_interval_ms: u64,
    pub seed: u64,
}

impl Default for WorkloadOptions {
    fn default() -> Self {
        WorkloadOptions {
            producers: 4,
            batch_events: 200,
            slow_producers: 0,
            readers: 1,
            read_interval_ms: 50,
            seed: 1,
        }
    }
}

/// Running clients; [`Workload::stop`] waits for every acknowledgement still owed.
pub struct Workload {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
    pub history: Arc<History>,
}

impl Workload {
    pub fn start(
        runtime: &tokio::runtime::Runtime,
        ingest_addr: &str,
        pg_addr: &str,
        options: &WorkloadOptions,
    ) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let history = Arc::new(History::default());
        let mut tasks = Vec::new();
        for p in 1..=options.producers {
            let (addr, stop, history) = (ingest_addr.to_string(), stop.clone(), history.clone());
            let (seed, batch) = (options.seed * 1000 + p, options.batch_events);
            tasks.push(
                runtime.spawn(async move { produce(addr, p, batch, seed, stop, history).await }),
            );
        }
        for s in 0..options.slow_producers {
            let (addr, stop, history) = (ingest_addr.to_string(), stop.clone(), history.clone());
            let (id, seed) = (500 + s, options.seed * 1000 + 500 + s);
            tasks.push(
                runtime.spawn(async move { produce_slowly(addr, id, seed, stop, history).await }),
            );
        }
        for _ in 0..options.readers {
            let (addr, stop, history, interval) = (
                pg_addr.to_string(),
                stop.clone(),
                history.clone(),
                options.read_interval_ms,
            );
            tasks.push(
                runtime.spawn(async move { read_counts(addr, interval, stop, history).await }),
            );
        }
        Workload {
            stop,
            tasks,
            history,
        }
    }

    /// Stops sending and waits until every batch in flight is acknowledged or the client
    /// gives up (the server must be up for that).
    pub fn stop(self, runtime: &tokio::runtime::Runtime) -> Arc<History> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = runtime.block_on(task);
        }
        self.history
    }
}

fn record_ack(
    history: &History,
    pending: &mut std::collections::HashMap<u64, Vec<String>>,
    ack: &Ack,
) {
    if let Some(ids) = pending.remove(&ack.seq) {
        history.acked(ids);
    }
}

async fn produce(
    addr: String,
    producer: u64,
    batch_events: usize,
    seed: u64,
    stop: Arc<AtomicBool>,
    history: Arc<History>,
) {
    let mut options = ProducerOptions::new(producer);
    options.inflight_max = INFLIGHT_MAX;
    options.reconnect_attempts_max = 50;
    options.reconnect_backoff_max_ms = 200;
    options.ack_timeout_ms = 5_000;
    let mut client = loop {
        match Producer::connect(&addr, options.clone()).await {
            Ok(client) => break client,
            Err(_) if !stop.load(Ordering::Relaxed) => {
                tokio::time::sleep(Duration::from_millis(RETRY_PAUSE_MS)).await
            }
            Err(_) => return,
        }
    };
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut pending = std::collections::HashMap::new();
    let mut unsent: Option<Vec<Row>> = None;
    while !stop.load(Ordering::Relaxed) {
        let rows = unsent.take().unwrap_or_else(|| {
            (0..batch_events)
                .map(|_| random_event(&mut rng, producer))
                .collect()
        });
        let ids: Vec<String> = rows.iter().map(|r| event_id(r)).collect();
        history.sent(rows.iter().map(|r| (event_id(r), expected_json(r))));
        match client.send("events", &build(&rows)).await {
            Ok(seq) => {
                pending.insert(seq, ids);
            }
            Err(ClientError::RetriesExhausted { .. }) | Err(ClientError::Rejected { .. }) => {
                unsent = Some(rows);
                tokio::time::sleep(Duration::from_millis(RETRY_PAUSE_MS)).await;
                continue;
            }
            Err(_) => return,
        }
        while client.in_flight() >= INFLIGHT_MAX && !stop.load(Ordering::Relaxed) {
            match client.next_ack().await {
                Ok(ack) => record_ack(&history, &mut pending, &ack),
                Err(_) => tokio::time::sleep(Duration::from_millis(RETRY_PAUSE_MS)).await,
            }
        }
    }
    // Collect what is owed; a batch whose ack never comes stays unacknowledged (allowed).
    for _ in 0..20 {
        match client.flush().await {
            Ok(acks) => {
                acks.iter()
                    .for_each(|ack| record_ack(&history, &mut pending, ack));
                return;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(RETRY_PAUSE_MS)).await,
        }
    }
}

/// Bytes per fragment and pause between fragments of a slow producer.
const SLOW_FRAGMENT_BYTES_MAX: usize = 64;
const SLOW_PAUSE_MS_MAX: u64 = 20;
const SLOW_BATCH_EVENTS: usize = 20;

/// One batch at a time over a raw connection, every frame written in random small fragments
/// with pauses: the server must reassemble them. On any failure it reconnects; a batch whose
/// ack did not arrive is resent with the same sequence number.
async fn produce_slowly(
    addr: String,
    producer: u64,
    seed: u64,
    stop: Arc<AtomicBool>,
    history: Arc<History>,
) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut unacked: Option<(u64, Vec<Row>)> = None;
    while !stop.load(Ordering::Relaxed) {
        let outcome = slow_session(&addr, producer, &mut rng, &mut unacked, &stop, &history).await;
        if outcome.is_err() {
            tokio::time::sleep(Duration::from_millis(RETRY_PAUSE_MS)).await;
        }
    }
}

async fn write_fragmented(
    stream: &mut tokio::net::TcpStream,
    bytes: &[u8],
    rng: &mut SmallRng,
) -> std::io::Result<()> {
    let mut at = 0;
    while at < bytes.len() {
        let n = rng
            .gen_range(1..=SLOW_FRAGMENT_BYTES_MAX)
            .min(bytes.len() - at);
        stream.write_all(&bytes[at..at + n]).await?;
        stream.flush().await?;
        at += n;
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..=SLOW_PAUSE_MS_MAX))).await;
    }
    Ok(())
}

async fn slow_session(
    addr: &str,
    producer: u64,
    rng: &mut SmallRng,
    unacked: &mut Option<(u64, Vec<Row>)>,
    stop: &AtomicBool,
    history: &History,
) -> anyhow::Result<()> {
    let (mut stream, out) = connect(addr, producer).await?;
    write_fragmented(&mut stream, &out, rng).await?;
    let mut body = Vec::new();
    let last_seq = match read_one(&mut stream, &mut body).await? {
        Frame::Welcome(w) => w.producer_last_seq,
        other => anyhow::bail!("expected welcome, got {}", other.type_name()),
    };
    if stop.load(Ordering::Relaxed) {
        return Ok(());
    }
    // A batch left unacknowledged by an earlier session is resent with its sequence number
    // unless the server has applied it (then it counts as sent, not acknowledged: the applied
    // state the Welcome reports may not be durable yet).
    let (seq, rows) = match unacked.take() {
        Some((seq, rows)) if seq > last_seq => (seq, rows),
        _ => (
            last_seq + 1,
            (0..SLOW_BATCH_EVENTS)
                .map(|_| random_event(rng, producer))
                .collect(),
        ),
    };
    history.sent(rows.iter().map(|r| (event_id(r), expected_json(r))));
    *unacked = Some((seq, rows.clone()));
    let out = batch_frame(seq, &rows);
    write_fragmented(&mut stream, &out, rng).await?;
    // One batch per connection: the handshake is dribbled too, again and again.
    match read_one(&mut stream, &mut body).await? {
        Frame::Ack(ack) if ack.seq == seq => {
            history.acked(rows.iter().map(|r| event_id(r)));
            *unacked = None;
        }
        Frame::Error(e) => anyhow::bail!("error frame {}: {}", e.code, e.message),
        other => anyhow::bail!("expected the ack of {seq}, got {other:?}"),
    }
    Ok(())
}

/// Connects (5 s at most) and returns the stream with the Hello frame to send.
async fn connect(addr: &str, producer: u64) -> anyhow::Result<(tokio::net::TcpStream, Vec<u8>)> {
    let connecting = tokio::net::TcpStream::connect(addr);
    let stream = tokio::time::timeout(Duration::from_secs(5), connecting).await??;
    let hello = Hello { version: frame::PROTOCOL_VERSION, producer_id: producer, api_key: "" };
    let mut out = Vec::new();
    frame::encode_frame(&Frame::Hello(hello), &mut out);
    Ok((stream, out))
}

/// A complete Batch frame of `rows` for the `events` table.
fn batch_frame(seq: u64, rows: &[Row]) -> Vec<u8> {
    let mut encoded = Vec::new();
    lookback_common::encode_batch(&build(rows), &mut encoded);
    let mut out = Vec::new();
    frame::encode_frame(&Frame::Batch(frame::BatchFrame { seq, table: "events", batch: &encoded }), &mut out);
    out
}

/// Reads one server frame (decoded into an owned copy of the fields the harness needs).
async fn read_one(
    stream: &mut tokio::net::TcpStream,
    body: &mut Vec<u8>,
) -> anyhow::Result<Frame<'static>> {
    let read = frame::read_frame(stream, body, frame::SERVER_BODY_BYTES_MAX);
    if !tokio::time::timeout(Duration::from_secs(10), read).await?? {
        anyhow::bail!("server closed the connection");
    }
    Ok(match frame::decode_body(body)? {
        Frame::Welcome(w) => Frame::Welcome(w),
        Frame::Ack(a) => Frame::Ack(a),
        Frame::Error(e) => Frame::Error(frame::ErrorFrame {
            seq: e.seq,
            code: e.code,
            message: leak(e.message),
        }),
        other => anyhow::bail!("unexpected {} frame from the server", other.type_name()),
    })
}

/// Error messages are rare (one per failed session): leaking them keeps `Frame` borrow-free.
fn leak(message: &str) -> &'static str {
    Box::leak(message.to_string().into_boxed_str())
}

/// Sends one batch over a fresh raw connection and returns the server's answer: `Ok(lsn)` for
/// an ack, `Err((code, message))` for an error frame.
pub async fn probe_batch(
    addr: &str,
    producer: u64,
    rows: &[Row],
) -> anyhow::Result<Result<u64, (u16, String)>> {
    let (mut stream, out) = connect(addr, producer).await?;
    stream.write_all(&out).await?;
    let mut body = Vec::new();
    let seq = match read_one(&mut stream, &mut body).await? {
        Frame::Welcome(w) => w.producer_last_seq + 1,
        other => anyhow::bail!("expected welcome, got {}", other.type_name()),
    };
    let out = batch_frame(seq, rows);
    stream.write_all(&out).await?;
    Ok(match read_one(&mut stream, &mut body).await? {
        Frame::Ack(ack) => Ok(ack.lsn),
        Frame::Error(e) => Err((e.code, e.message.to_string())),
        other => anyhow::bail!("unexpected answer {}", other.type_name()),
    })
}

pub async fn pg_connect(addr: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("address {addr} has no port"))?;
    let config = format!("host={host} port={port} user=lookback dbname=lookback connect_timeout=5");
    let (client, connection) = tokio_postgres::connect(&config, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// The first column of the first row of a one-value query, as text.
pub async fn query_value(client: &tokio_postgres::Client, sql: &str) -> anyhow::Result<String> {
    for message in client.simple_query(sql).await? {
        if let tokio_postgres::SimpleQueryMessage::Row(row) = message {
            return Ok(row.get(0).unwrap_or("").to_string());
        }
    }
    anyhow::bail!("{sql}: no row")
}

async fn read_counts(addr: String, interval_ms: u64, stop: Arc<AtomicBool>, history: Arc<History>) {
    let mut client = None;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(interval_ms)).await;
        if client.is_none() {
            client = pg_connect(&addr).await.ok();
        }
        let Some(c) = &client else { continue };
        let acked_before = history.acked_count();
        let answer = tokio::time::timeout(
            Duration::from_secs(10),
            query_value(c, "SELECT count(*) FROM events"),
        )
        .await;
        match answer
            .map_err(anyhow::Error::from)
            .and_then(|r| r)
            .and_then(|v| Ok(v.parse::<u64>()?))
        {
            Ok(count) => history.read(acked_before, count, history.sent_count()),
            Err(_) => {
                history.read_error();
                client = None;
            }
        }
    }
}
