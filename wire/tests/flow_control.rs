//! Backpressure, admission timeouts and graceful shutdown.

mod support;

use lookback_common::{BatchBuilder, Value};
use lookback_wire::ingest::{ErrorCode, IngestServerConfig, Producer, ProducerOptions};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

/// A `t` batch of `rows` rows with `value_bytes`-byte names.
/// Distinct values per row, so the client sends them plain (a dictionary would shrink them).
fn wide_batch(rows: usize, value_bytes: usize) -> lookback_common::Batch {
    let mut builder = BatchBuilder::new(&t_schema(), rows);
    for i in 0..rows as i64 {
        let value = format!("{i:08}{}", "x".repeat(value_bytes.saturating_sub(8)));
        builder
            .push_row(&[Value::Int64(i), Value::Text(value)])
            .expect("row");
    }
    builder.finish().expect("batch")
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_admission_stops_reading_and_the_client_waits() {
    let (sink, gate) = MockSink::new().with_gate();
    let sink = Arc::new(sink);
    let server = start_server(sink.clone(), IngestServerConfig::default()).await;
    const BATCHES: u64 = 200;
    let options = ProducerOptions {
        inflight_max: BATCHES as usize,
        ..ProducerOptions::new(21)
    };
    let mut producer = Producer::connect(&server.addr, options)
        .await
        .expect("connect");
    let batch = wide_batch(256, 1024); // ~260 KiB per batch, ~52 MiB in all
    let sent = Arc::new(AtomicU64::new(0));
    let sent_by_task = sent.clone();
    let sender = tokio::spawn(async move {
        for _ in 0..BATCHES {
            producer.send("t", &batch).await.expect("send");
            sent_by_task.fetch_add(1, Ordering::SeqCst);
        }
        producer.flush().await.expect("flush")
    });
    wait_until("the first batch is being admitted", || {
        sink.admits_started.load(Ordering::SeqCst) == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stalled_at = sent.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        sent.load(Ordering::SeqCst),
        stalled_at,
        "the client's send waits"
    );
    assert!(
        stalled_at < BATCHES / 2,
        "socket buffers, not the server, absorbed {stalled_at} batches"
    );
    assert_eq!(
        sink.admits_started.load(Ordering::SeqCst),
        1,
        "the server reads nothing while admit waits"
    );
    let received = server.stats.bytes.load(Ordering::Relaxed);
    assert!(
        received < 2 * 270 * 1024,
        "server buffered {received} bytes"
    );

    gate.add_permits(BATCHES as usize);
    let acks = tokio::time::timeout(Duration::from_secs(20), sender)
        .await
        .expect("drains")
        .expect("join");
    assert_eq!(acks.len() as u64, BATCHES);
    assert_eq!(sink.applied_by(21).len() as u64, BATCHES);
}

#[tokio::test]
async fn admission_timeout_is_overloaded_and_nothing_is_applied() {
    let (sink, _gate) = MockSink::new().with_gate();
    let sink = Arc::new(sink);
    let config = IngestServerConfig {
        admit_timeout_ms: 200,
        ..IngestServerConfig::default()
    };
    let server = start_server(sink.clone(), config).await;
    let (mut conn, _) = RawConn::handshake(&server.addr, 22).await;
    let started = Instant::now();
    conn.send(&batch_frame(1, "t", &encoded(&t_batch(0, 2))))
        .await;
    let (acks, seq) = conn.expect_error_then_close(ErrorCode::Overloaded).await;
    assert!(acks.is_empty());
    assert_eq!(seq, 1);
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(sink.applied_by(22).is_empty());
    assert_eq!(server.stats.errors.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_acks_admitted_batches_then_returns() {
    let sink = Arc::new(MockSink::new().with_durable_delay(Duration::from_millis(300)));
    let server = start_server(sink.clone(), IngestServerConfig::default()).await;
    let options = ProducerOptions {
        inflight_max: 8,
        ..ProducerOptions::new(31)
    };
    let mut producer = Producer::connect(&server.addr, options)
        .await
        .expect("connect");
    let (mut idle, _) = RawConn::handshake(&server.addr, 32).await;
    for i in 0..5 {
        producer.send("t", &t_batch(i, 1)).await.expect("send");
    }
    wait_until("all five batches are admitted", || {
        sink.applied_by(31).len() == 5
    })
    .await;
    let started = Instant::now();
    server.shutdown.send(true).expect("shutdown");
    let served = tokio::time::timeout(Duration::from_secs(5), server.handle).await;
    served
        .expect("serve returns within the grace period")
        .expect("join")
        .expect("serve ok");
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "waited for durability"
    );
    let acks = producer.flush().await.expect("admitted batches are acked");
    assert_eq!(
        acks.iter().map(|a| a.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    idle.expect_error_then_close(ErrorCode::ShuttingDown).await;
    assert!(
        tokio::net::TcpStream::connect(&server.addr).await.is_err(),
        "no longer accepting"
    );
    assert_eq!(server.stats.connections_open.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn shutdown_grace_bounds_the_wait_for_stuck_connections() {
    // Durability never comes in time; admit_timeout_ms doubles as the shutdown grace.
    let sink = Arc::new(MockSink::new().with_durable_delay(Duration::from_secs(60)));
    let config = IngestServerConfig {
        admit_timeout_ms: 200,
        ..IngestServerConfig::default()
    };
    let server = start_server(sink.clone(), config).await;
    let (mut stuck, _) = RawConn::handshake(&server.addr, 33).await;
    stuck
        .send(&batch_frame(1, "t", &encoded(&t_batch(0, 1))))
        .await;
    wait_until("the batch is admitted", || sink.applied_by(33).len() == 1).await;
    server.shutdown.send(true).expect("shutdown");
    let served = tokio::time::timeout(Duration::from_secs(3), server.handle).await;
    served
        .expect("serve returns after the grace period")
        .expect("join")
        .expect("serve ok");
    assert_eq!(stuck.read().await, Reply::Closed);
    assert_eq!(server.stats.connections_open.load(Ordering::Relaxed), 0);
}
