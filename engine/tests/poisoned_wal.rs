//! A failed WAL fdatasync, end to end with the real binary: `LOOKBACK_FAULTS` makes one group
//! commit's fdatasync return EIO after a few good ones. The batch in that commit is never
//! acknowledged, the server reports itself unhealthy (`/health` 503 `wal_poisoned`,
//! `lookback_wal_poisoned 1`), refuses further writes without spinning while a producer keeps
//! retrying, and after a restart without faults every acknowledged event is there exactly once
//! and ingest works again.

mod common;

use common::*;
use lookback_common::Value;
use lookback_wire::ingest::client::{ClientError, Producer, ProducerOptions};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use std::collections::HashMap;
use std::time::{Duration, Instant};

const PRODUCER_ID: u64 = 7;
const BATCH_EVENTS: usize = 50;
/// Good WAL group commits before the injected EIO (the server's own start-up writes included).
const SYNCS_BEFORE_FAILURE: u64 = 8;
const BATCHES_MAX: usize = 200;

fn options(attempts: u32) -> ProducerOptions {
    let mut o = ProducerOptions::new(PRODUCER_ID);
    o.inflight_max = 1;
    o.reconnect_attempts_max = attempts;
    o.reconnect_backoff_initial_ms = 10;
    o.reconnect_backoff_max_ms = 50;
    o.connect_timeout_ms = 2_000;
    o.ack_timeout_ms = 10_000;
    o
}

/// Sends batches one at a time until the server stops acknowledging; returns the acked rows
/// by event id, the last acked seq and the error that ended it.
async fn ingest_until_failure(addr: &str) -> (HashMap<String, Vec<Value>>, u64, ClientError) {
    let mut producer = Producer::connect(addr, options(3)).await.expect("connect before the fault");
    let mut rng = SmallRng::seed_from_u64(1);
    let mut acked = HashMap::new();
    let mut last_seq = 0;
    for _ in 0..BATCHES_MAX {
        let rows: Vec<_> = (0..BATCH_EVENTS).map(|_| random_event(&mut rng, PRODUCER_ID)).collect();
        match producer.send_and_wait("events", &build(&rows)).await {
            Ok(ack) => {
                assert!(!ack.duplicate_batch && ack.events_accepted == BATCH_EVENTS as u32, "unexpected ack {ack:?}");
                last_seq = ack.seq;
                acked.extend(rows.into_iter().map(|r| (event_id(&r), r)));
            }
            Err(e) => return (acked, last_seq, e),
        }
    }
    panic!("{BATCHES_MAX} batches were acknowledged: the injected fdatasync failure never fired");
}

/// Keeps a producer retrying against the poisoned server for `duration`; returns its attempts.
async fn keep_retrying(addr: &str, duration: Duration) -> u32 {
    let deadline = Instant::now() + duration;
    let mut rng = SmallRng::seed_from_u64(2);
    let mut rounds = 0;
    while Instant::now() < deadline {
        rounds += 1;
        let Ok(mut producer) = Producer::connect(addr, options(5)).await else { continue };
        let rows: Vec<_> = (0..BATCH_EVENTS).map(|_| random_event(&mut rng, PRODUCER_ID)).collect();
        match producer.send_and_wait("events", &build(&rows)).await {
            Ok(ack) => panic!("a poisoned WAL acknowledged a batch: {ack:?}"),
            Err(ClientError::RetriesExhausted { .. }) => {}
            Err(e) => panic!("expected retries against a poisoned WAL to run out, got {e}"),
        }
    }
    rounds
}

#[test]
fn failed_wal_fdatasync_poisons_and_restart_recovers_acked_events() {
    let site = Site::new();
    let rule = format!("sync:.log:eio:skip={SYNCS_BEFORE_FAILURE}:once");
    let server = Server::start_with_env(&site.data_dir, &site.ingest_addr, &site.http_addr, &[], &[("LOOKBACK_FAULTS", &rule)]);
    assert!(server.log().contains("FAULT INJECTION IS ON"), "the server must warn loudly about LOOKBACK_FAULTS:\n{}", server.log());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    let (acked, last_seq, error) = runtime.block_on(ingest_until_failure(&site.ingest_addr));
    assert!(!acked.is_empty(), "the fault fired before any batch was acknowledged; raise SYNCS_BEFORE_FAILURE");
    match &error {
        ClientError::RetriesExhausted { last_error, .. } => {
            let e = last_error.to_lowercase();
            assert!(e.contains("storage") || e.contains("poison"), "retries should end on the storage failure: {last_error}")
        }
        other => panic!("expected the producer to give up with RetriesExhausted, got {other}"),
    }
    eprintln!("{} events in {last_seq} batches acknowledged before the fault; then: {error}", acked.len());

    let (status, body) = http(&site.http_addr, "GET", "/health");
    assert_eq!(status, 503, "health of a poisoned WAL: {body}");
    assert!(body.contains("wal_poisoned"), "health body: {body}");
    let (_, metrics) = http(&site.http_addr, "GET", "/metrics");
    assert_eq!(metric(&metrics, "lookback_wal_poisoned"), Some(1.0), "metrics:\n{metrics}");

    let cpu_before = cpu_seconds(server.pid());
    let measured = Instant::now();
    let rounds = runtime.block_on(keep_retrying(&site.ingest_addr, Duration::from_secs(3)));
    let cpu = cpu_seconds(server.pid()) - cpu_before;
    let share = cpu / measured.elapsed().as_secs_f64();
    eprintln!("server used {cpu:.2} s CPU ({:.0}% of a core) over {rounds} retry rounds", share * 100.0);
    assert!(share < 0.5, "a poisoned server burns CPU: {cpu:.2} s in {:?} ({rounds} producer retry rounds)", measured.elapsed());
    server.kill9();

    let rows = dump(&site.data_dir);
    let seen = dumped_ids(&rows);
    let dups: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(dups.is_empty(), "events stored more than once: {dups:?}");
    for row in &rows {
        if let Some(expected) = acked.get(row["event_id"].as_str().unwrap()) {
            assert_eq!(row, &expected_json(expected), "content of an acknowledged event changed");
        }
    }
    let lost: Vec<_> = acked.keys().filter(|id| !seen.contains_key(*id)).take(5).collect();
    assert!(lost.is_empty(), "acknowledged events lost: {lost:?} of {}", acked.len());

    let server = site.start(&[]);
    let (status, body) = http(&site.http_addr, "GET", "/health");
    assert_eq!(status, 200, "health after a restart without faults: {body}");
    runtime.block_on(async {
        let mut producer = Producer::connect(&site.ingest_addr, options(3)).await.expect("connect after restart");
        assert!(producer.producer_last_seq_at_connect() >= last_seq, "the server forgot acknowledged seq {last_seq}");
        let mut rng = SmallRng::seed_from_u64(3);
        let rows: Vec<_> = (0..BATCH_EVENTS).map(|_| random_event(&mut rng, PRODUCER_ID)).collect();
        let ack = producer.send_and_wait("events", &build(&rows)).await.expect("ingest after restart");
        assert_eq!(ack.events_accepted, BATCH_EVENTS as u32, "{ack:?}");
    });
    server.terminate();
    let after = dump(&site.data_dir);
    assert_eq!(after.len(), rows.len() + BATCH_EVENTS, "new batch missing after restart");
}
