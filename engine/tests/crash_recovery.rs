//! The durability promise, end to end with the real binary: concurrent producers ingest while
//! the server is killed with SIGKILL at random moments several times; after each restart every
//! acknowledged event is present exactly once with identical content.

mod common;

use common::*;
use lookback_wire::ingest::client::{Producer, ProducerOptions};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const PRODUCERS: u64 = 4;
const KILL_CYCLES: usize = 6;
const BATCH_EVENTS: usize = 500;

type Acked = Arc<Mutex<HashMap<String, serde_json::Map<String, serde_json::Value>>>>;

async fn produce(addr: String, producer: u64, stop: Arc<AtomicBool>, acked: Acked) -> u64 {
    let mut options = ProducerOptions::new(producer);
    options.inflight_max = 3;
    options.reconnect_attempts_max = 200;
    options.reconnect_backoff_max_ms = 200;
    let mut client = Producer::connect(&addr, options).await.expect("connect producer");
    let mut rng = SmallRng::seed_from_u64(producer);
    let mut pending: HashMap<u64, Vec<Vec<lookback_common::Value>>> = HashMap::new();
    let mut batches = 0u64;
    let record = |ack: lookback_wire::ingest::client::Ack, pending: &mut HashMap<u64, _>| {
        let rows: Vec<Vec<lookback_common::Value>> = pending.remove(&ack.seq).expect("ack for a sent batch");
        let mut a = acked.lock().unwrap();
        for r in rows {
            let j = expected_json(&r);
            a.insert(j["event_id"].as_str().unwrap().to_string(), j);
        }
    };
    while !stop.load(Ordering::Relaxed) {
        let rows: Vec<_> = (0..BATCH_EVENTS).map(|_| random_event(&mut rng, producer)).collect();
        let seq = client.send("events", &build(&rows)).await.expect("send (the client retries across restarts)");
        pending.insert(seq, rows);
        batches += 1;
        while client.in_flight() >= 3 {
            let ack = client.next_ack().await.expect("ack");
            record(ack, &mut pending);
        }
    }
    for ack in client.flush().await.expect("final acks") {
        record(ack, &mut pending);
    }
    batches
}

#[test]
fn acknowledged_events_survive_sigkill_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let ingest_addr = format!("127.0.0.1:{}", free_port());
    let http_addr = format!("127.0.0.1:{}", free_port());
    // Small memtables so flushes and compactions happen between kills.
    let config = dir.path().join("lookback.toml");
    std::fs::write(&config, "[storage]\nmemtable_bytes_max = 400000\nflush_interval_ms = 300\ncompaction_fan_in = 3\ncompaction_urgent_segments = 4\nwal_segment_bytes = 4194304\n[ingest]\nframe_bytes_max = 1048576\n").unwrap();
    let extra = ["--config", config.to_str().unwrap()];
    let mut server = Server::start(&data_dir, &ingest_addr, &http_addr, &extra);

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Acked = Arc::default();
    let tasks: Vec<_> = (1..=PRODUCERS)
        .map(|p| runtime.spawn(produce(ingest_addr.clone(), p, stop.clone(), acked.clone())))
        .collect();

    let mut rng = SmallRng::seed_from_u64(42);
    for cycle in 0..KILL_CYCLES {
        std::thread::sleep(Duration::from_millis(rng.gen_range(300..1500)));
        let before = acked.lock().unwrap().len();
        server.kill9();
        eprintln!("cycle {cycle}: killed with {before} events acknowledged");
        server = Server::start(&data_dir, &ingest_addr, &http_addr, &extra);
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let batches: u64 = tasks.into_iter().map(|t| runtime.block_on(t).unwrap()).sum();
    server.kill9();

    let acked = acked.lock().unwrap().clone();
    assert!(batches > 20 && acked.len() > 10_000, "too little traffic to mean anything: {} events", acked.len());
    let rows = dump(&data_dir);
    let mut seen: HashMap<String, usize> = HashMap::new();
    for row in &rows {
        let id = row["event_id"].as_str().unwrap().to_string();
        *seen.entry(id.clone()).or_default() += 1;
        if let Some(expected) = acked.get(&id) {
            assert_eq!(row, expected, "content of acknowledged event {id} changed");
        }
    }
    let dups: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(dups.is_empty(), "events stored more than once: {dups:?}");
    let lost: Vec<_> = acked.keys().filter(|id| !seen.contains_key(*id)).take(5).collect();
    assert!(lost.is_empty(), "acknowledged events lost: {lost:?} (of {})", acked.len());
    eprintln!("{} acknowledged events over {KILL_CYCLES} SIGKILLs, {} stored, 0 lost, 0 duplicated", acked.len(), rows.len());
}
