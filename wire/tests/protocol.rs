//! Handshake, pipelining, in-order acks, deduplication and connection limits, through the
//! real server and the real client.

mod support;

use bytes::Bytes;
use lookback_wire::ingest::frame::PROTOCOL_VERSION;
use lookback_wire::ingest::{
    ClientError, ErrorCode, IngestServerConfig, Producer, ProducerOptions,
};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use support::*;

#[tokio::test]
async fn handshake_advertises_limits_and_last_seq() {
    let sink = Arc::new(MockSink::new());
    let config = IngestServerConfig {
        frame_bytes_max: 1 << 20,
        batch_events_max: 500,
        ..IngestServerConfig::default()
    };
    let server = start_server(sink.clone(), config).await;
    let (_conn, welcome) = RawConn::handshake(&server.addr, 9).await;
    assert_eq!(welcome.version, PROTOCOL_VERSION);
    assert_eq!(welcome.producer_last_seq, 0);
    assert_eq!(welcome.frame_bytes_max, 1 << 20);
    assert_eq!(welcome.batch_events_max, 500);

    let mut producer = Producer::connect(&server.addr, ProducerOptions::new(9))
        .await
        .expect("connect");
    assert_eq!(producer.producer_last_seq_at_connect(), 0);
    assert!(matches!(producer.next_ack().await, Err(ClientError::Idle)));
    for i in 0..3 {
        producer
            .send_and_wait("t", &t_batch(i, 2))
            .await
            .expect("ack");
    }
    let restarted = Producer::connect(&server.addr, ProducerOptions::new(9))
        .await
        .expect("reconnect");
    assert_eq!(
        restarted.producer_last_seq_at_connect(),
        3,
        "a restarted producer continues"
    );
    let (_conn, welcome) = RawConn::handshake(&server.addr, 9).await;
    assert_eq!(welcome.producer_last_seq, 3);
}

#[tokio::test]
async fn pipelined_sends_are_acked_in_order_with_increasing_lsns() {
    let sink = Arc::new(MockSink::new().with_durable_delay(Duration::from_millis(2)));
    let server = start_server(sink.clone(), IngestServerConfig::default()).await;
    let options = ProducerOptions {
        inflight_max: 8,
        ..ProducerOptions::new(1)
    };
    let mut producer = Producer::connect(&server.addr, options)
        .await
        .expect("connect");
    let mut acks = Vec::new();
    for i in 0..50 {
        let seq = producer
            .send("t", &t_batch(i * 10, 10))
            .await
            .expect("send");
        assert_eq!(seq, i as u64 + 1);
        assert!(producer.in_flight() <= 8);
        if i % 7 == 0 {
            acks.push(producer.next_ack().await.expect("ack"));
        }
    }
    acks.extend(producer.flush().await.expect("flush"));
    assert_eq!(producer.in_flight(), 0);
    let seqs: Vec<u64> = acks.iter().map(|a| a.seq).collect();
    assert_eq!(seqs, (1..=50).collect::<Vec<_>>());
    assert!(
        acks.windows(2).all(|w| w[0].lsn < w[1].lsn),
        "lsns increase with seq"
    );
    assert!(acks
        .iter()
        .all(|a| a.events_accepted == 10 && !a.duplicate_batch));
    let applied = sink.applied_by(1);
    assert_eq!(applied.len(), 50);
    assert!(applied
        .iter()
        .zip(&acks)
        .all(|(a, ack)| a.seq == ack.seq && a.lsn == ack.lsn));
    assert_eq!(server.stats.batches.load(Ordering::Relaxed), 50);
    assert_eq!(server.stats.events.load(Ordering::Relaxed), 500);
}

#[tokio::test]
async fn send_encoded_and_events_table() {
    let sink = Arc::new(MockSink::new());
    let server = start_server(sink.clone(), IngestServerConfig::default()).await;
    let mut producer = Producer::connect(&server.addr, ProducerOptions::new(2))
        .await
        .expect("connect");
    let bytes = Bytes::from(encoded(&t_batch(0, 25)));
    let seq = producer.send_encoded("t", bytes, 25).await.expect("send");
    let ack = producer.next_ack().await.expect("ack");
    assert_eq!((ack.seq, ack.events_accepted), (seq, 25));
    let empty = lookback_common::Batch::empty(&lookback_common::Schema::events());
    let ack = producer
        .send_and_wait("events", &empty)
        .await
        .expect("empty events batch");
    assert_eq!(ack.events_accepted, 0);
    assert_eq!(sink.applied_by(2).len(), 2);
}

#[tokio::test]
async fn resent_seq_is_acked_as_duplicate_with_original_lsn() {
    let sink = Arc::new(MockSink::new());
    let server = start_server(sink.clone(), IngestServerConfig::default()).await;
    let frame = batch_frame(1, "t", &encoded(&t_batch(0, 4)));
    let (mut first, _) = RawConn::handshake(&server.addr, 5).await;
    first.send(&frame).await;
    let Reply::Ack(original) = first.read().await else {
        panic!("expected ack")
    };
    assert_eq!(original.flags, 0);
    let (mut second, welcome) = RawConn::handshake(&server.addr, 5).await;
    assert_eq!(welcome.producer_last_seq, 1);
    second.send(&frame).await;
    let Reply::Ack(duplicate) = second.read().await else {
        panic!("expected ack")
    };
    assert_eq!(duplicate.flags & 1, 1, "duplicate flag");
    assert_eq!(
        (
            duplicate.lsn,
            duplicate.events_accepted,
            duplicate.events_deduplicated
        ),
        (original.lsn, 0, 4)
    );
    assert_eq!(sink.applied_by(5).len(), 1);
}

#[tokio::test]
async fn anonymous_producer_has_no_dedup() {
    let sink = Arc::new(MockSink::new());
    let server = start_server(sink.clone(), IngestServerConfig::default()).await;
    let frame = batch_frame(1, "t", &encoded(&t_batch(0, 1)));
    for _ in 0..2 {
        let (mut conn, welcome) = RawConn::handshake(&server.addr, 0).await;
        assert_eq!(welcome.producer_last_seq, 0);
        conn.send(&frame).await;
        assert!(matches!(conn.read().await, Reply::Ack(a) if a.flags == 0));
    }
    assert_eq!(sink.applied_by(0).len(), 2);
}

#[tokio::test]
async fn rejected_batch_is_reported_and_later_batches_still_land() {
    let sink = Arc::new(MockSink::new());
    let server = start_server(sink.clone(), IngestServerConfig::default()).await;
    let options = ProducerOptions {
        inflight_max: 8,
        ..ProducerOptions::new(3)
    };
    let mut producer = Producer::connect(&server.addr, options)
        .await
        .expect("connect");
    producer.send("t", &t_batch(0, 2)).await.expect("send 1");
    producer.send("nope", &t_batch(2, 2)).await.expect("send 2");
    producer.send("t", &t_batch(4, 2)).await.expect("send 3");
    assert_eq!(producer.next_ack().await.expect("ack 1").seq, 1);
    match producer.next_ack().await {
        Err(ClientError::Rejected {
            seq: 2,
            code: ErrorCode::UnknownTable,
            ..
        }) => {}
        other => panic!("expected rejection of seq 2, got {other:?}"),
    }
    let third = producer
        .next_ack()
        .await
        .expect("ack 3 after lazy reconnect");
    assert_eq!((third.seq, third.duplicate_batch), (3, false));
    let seqs: Vec<u64> = sink.applied_by(3).iter().map(|a| a.seq).collect();
    assert_eq!(seqs, vec![1, 3]);
    let ack = producer
        .send_and_wait("t", &t_batch(6, 1))
        .await
        .expect("ack 4");
    assert_eq!(ack.seq, 4);
}

#[tokio::test]
async fn client_refuses_batches_over_the_advertised_limits() {
    let sink = Arc::new(MockSink::new());
    let config = IngestServerConfig {
        batch_events_max: 10,
        frame_bytes_max: 4096,
        ..IngestServerConfig::default()
    };
    let server = start_server(sink.clone(), config).await;
    let mut producer = Producer::connect(&server.addr, ProducerOptions::new(4))
        .await
        .expect("connect");
    assert!(matches!(
        producer.send("t", &t_batch(0, 11)).await,
        Err(ClientError::BatchTooLarge(_))
    ));
    let big = Bytes::from(vec![0u8; 5000]);
    assert!(matches!(
        producer.send_encoded("t", big, 1).await,
        Err(ClientError::BatchTooLarge(_))
    ));
    let long_table = "x".repeat(300);
    assert!(matches!(
        producer.send(&long_table, &t_batch(0, 1)).await,
        Err(ClientError::InvalidArgument(_))
    ));
    let ack = producer
        .send_and_wait("t", &t_batch(0, 10))
        .await
        .expect("within limits");
    assert_eq!(ack.seq, 1, "refused batches consume no sequence number");
    assert!(sink.applied_by(4).len() == 1);
}

#[tokio::test]
async fn connections_over_the_limit_get_overloaded() {
    let sink = Arc::new(MockSink::new());
    let config = IngestServerConfig {
        connections_max: 2,
        ..IngestServerConfig::default()
    };
    let server = start_server(sink.clone(), config).await;
    let (first, _) = RawConn::handshake(&server.addr, 0).await;
    let (_second, _) = RawConn::handshake(&server.addr, 0).await;
    let mut third = RawConn::connect(&server.addr).await;
    third.send(&hello_frame(PROTOCOL_VERSION, 0)).await;
    third.expect_error_then_close(ErrorCode::Overloaded).await;
    drop(first);
    for _ in 0..200 {
        if server.stats.connections_open.load(Ordering::Relaxed) < 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (_fourth, _) = RawConn::handshake(&server.addr, 0).await;
    assert_eq!(server.stats.connections_total.load(Ordering::Relaxed), 4);
}

#[tokio::test]
async fn unreachable_server_exhausts_retries() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    drop(listener);
    let options = ProducerOptions {
        reconnect_attempts_max: 3,
        reconnect_backoff_initial_ms: 5,
        reconnect_backoff_max_ms: 20,
        ..ProducerOptions::new(1)
    };
    let started = std::time::Instant::now();
    match Producer::connect(&addr, options).await {
        Err(ClientError::RetriesExhausted { attempts: 3, .. }) => {}
        Err(other) => panic!("expected RetriesExhausted, got {other}"),
        Ok(_) => panic!("connected to a closed port"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}
