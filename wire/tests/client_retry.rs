//! Client reliability: connections that die after the server admitted batches but before the
//! acks arrived, and retriable error frames. The client must reconnect, resend with the
//! original sequence numbers, and the sink must see every batch applied exactly once.

mod support;

use lookback_wire::ingest::{IngestServerConfig, Producer, ProducerOptions};
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use support::*;

/// Header (8) + Welcome body (type 1, version 2, last seq 8, two limits 4 + 4).
const WELCOME_FRAME_BYTES: usize = 8 + 19;
/// Header (8) + Ack body (type 1, seq 8, lsn 8, two counts 4 + 4, flags 1).
const ACK_FRAME_BYTES: usize = 8 + 26;

fn fast_retry(producer_id: u64) -> ProducerOptions {
    ProducerOptions {
        inflight_max: 8,
        reconnect_backoff_initial_ms: 5,
        reconnect_backoff_max_ms: 50,
        ack_timeout_ms: 5_000,
        ..ProducerOptions::new(producer_id)
    }
}

fn assert_each_applied_once(sink: &MockSink, producer_id: u64, batches: u64) {
    let seqs: Vec<u64> = sink.applied_by(producer_id).iter().map(|a| a.seq).collect();
    let unique: HashSet<u64> = seqs.iter().copied().collect();
    assert_eq!(
        seqs.len(),
        unique.len(),
        "a batch was applied twice: {seqs:?}"
    );
    assert_eq!(
        unique,
        (1..=batches).collect::<HashSet<_>>(),
        "every batch applied"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_cut_before_acks_are_resent_and_applied_exactly_once() {
    let sink = Arc::new(MockSink::new().with_durable_delay(Duration::from_millis(1)));
    let server = start_server(sink.clone(), IngestServerConfig::default()).await;
    // Each of the first 4 connections passes the Welcome, two acks and part of a third.
    let cut_after = WELCOME_FRAME_BYTES + 2 * ACK_FRAME_BYTES + 10;
    let proxy = cutting_proxy(server.addr.clone(), 4, cut_after).await;
    let mut producer = Producer::connect(&proxy.addr, fast_retry(11))
        .await
        .expect("connect");
    let mut acks = Vec::new();
    for i in 0..40 {
        producer
            .send("t", &t_batch(i * 5, 5))
            .await
            .expect("send survives cuts");
        while let Ok(Ok(ack)) = tokio::time::timeout(Duration::ZERO, producer.next_ack()).await {
            acks.push(ack);
        }
    }
    acks.extend(producer.flush().await.expect("flush survives cuts"));
    let seqs: Vec<u64> = acks.iter().map(|a| a.seq).collect();
    assert_eq!(
        seqs,
        (1..=40).collect::<Vec<_>>(),
        "one ack per batch, in order"
    );
    assert!(
        proxy.connections.load(Ordering::SeqCst) >= 5,
        "the proxy cut connections"
    );
    assert!(
        acks.iter().any(|a| a.duplicate_batch),
        "some resends were already applied"
    );
    assert_each_applied_once(&sink, 11, 40);
    let applied = sink.applied_by(11);
    for ack in &acks {
        let original = applied.iter().find(|a| a.seq == ack.seq).expect("applied");
        assert_eq!(
            ack.lsn, original.lsn,
            "seq {}: duplicate acks carry the original lsn",
            ack.seq
        );
    }
}

#[tokio::test]
async fn storage_failure_is_retried_with_the_same_seq() {
    let sink = Arc::new(MockSink::new());
    sink.fail_durable_once(3);
    let server = start_server(sink.clone(), IngestServerConfig::default()).await;
    let mut producer = Producer::connect(&server.addr, fast_retry(12))
        .await
        .expect("connect");
    for i in 0..6 {
        producer.send("t", &t_batch(i, 1)).await.expect("send");
    }
    let acks = producer.flush().await.expect("flush");
    assert_eq!(
        acks.iter().map(|a| a.seq).collect::<Vec<_>>(),
        (1..=6).collect::<Vec<_>>()
    );
    let third = &acks[2];
    assert!(
        third.duplicate_batch,
        "seq 3 was logged before its durability failed"
    );
    assert_each_applied_once(&sink, 12, 6);
}

#[tokio::test]
async fn server_restart_mid_stream_loses_nothing() {
    let sink = Arc::new(MockSink::new());
    let first = start_server(sink.clone(), IngestServerConfig::default()).await;
    let addr = first.addr.clone();
    let mut producer = Producer::connect(&addr, fast_retry(13))
        .await
        .expect("connect");
    for i in 0..3 {
        producer.send("t", &t_batch(i, 1)).await.expect("send");
    }
    first.shutdown.send(true).expect("shutdown");
    first.handle.await.expect("join").expect("serve");
    // Same port, same sink (the engine's state survives a restart).
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("rebind");
    let stats = Arc::new(lookback_wire::ingest::IngestServerStats::default());
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(lookback_wire::ingest::serve(
        listener,
        sink.clone(),
        IngestServerConfig::default(),
        stats,
        stop_rx,
    ));
    for i in 3..6 {
        producer
            .send("t", &t_batch(i, 1))
            .await
            .expect("send after restart");
    }
    let acks = producer.flush().await.expect("flush");
    assert_eq!(
        acks.iter().map(|a| a.seq).collect::<Vec<_>>(),
        (1..=6).collect::<Vec<_>>()
    );
    assert_each_applied_once(&sink, 13, 6);
}
