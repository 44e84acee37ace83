//! The ingest protocol against the real server, bytes read and written by hand where the
//! point is what the server does with them (docs/ingest-protocol.md):
//! - malformed input gets an Error frame with the documented code and a closed connection,
//!   while a well-behaved producer on the same server keeps getting acks, and nothing of a
//!   rejected frame is applied;
//! - resending a batch under its seq from a new connection is a duplicate ack, and the same
//!   events under a new seq are deduplicated: each event is stored once;
//! - the per-producer sequence survives SIGKILL and restart.

mod common;

use common::*;
use lookback_common::{crc32, encode_batch, Batch, ColumnDef, ColumnType, Schema, Value};
use lookback_wire::ingest::client::{Producer, ProducerOptions};
use lookback_wire::ingest::frame::{self, decode_body, encode_frame, Frame, Hello, PROTOCOL_VERSION};
use lookback_wire::ingest::ErrorCode;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Small enough that a random length field is almost always over it.
const FRAME_BYTES_MAX: usize = 1 << 20;
const BATCH_EVENTS: usize = 20;

fn config(site: &Site) -> String {
    site.config(&format!("[ingest]\nframe_bytes_max = {FRAME_BYTES_MAX}\n"))
}

fn rows(rng: &mut SmallRng, n: usize, producer: u64) -> Vec<Vec<Value>> {
    (0..n).map(|_| random_event(rng, producer)).collect()
}

// ---- raw frames -------------------------------------------------------------------------

/// What the server sent on a raw connection.
#[derive(Debug)]
enum Reply {
    Welcome { producer_last_seq: u64 },
    Ack { seq: u64, accepted: u32, deduplicated: u32, duplicate_batch: bool },
    Error { seq: u64, code: u16, message: String },
}

fn raw_connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect to the ingest port");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn hello(producer_id: u64) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(&Frame::Hello(Hello { version: PROTOCOL_VERSION, producer_id, api_key: "" }), &mut out);
    out
}

/// A Batch frame built by hand: `u32 body_len | u32 crc | 03 | seq | table | batch bytes`.
fn batch_frame(seq: u64, table: &str, batch: &Batch) -> Vec<u8> {
    let mut out = Vec::new();
    let start = frame::begin_frame(&mut out);
    frame::put_batch_prefix(&mut out, seq, table);
    encode_batch(batch, &mut out);
    frame::finish_frame(&mut out, start);
    out
}

/// Reads one frame, checking its header; `None` on a clean close.
fn read_reply(s: &mut TcpStream) -> Option<Reply> {
    let mut header = [0u8; 8];
    match s.read(&mut header[..1]) {
        Ok(0) => return None,
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
        Err(e) => panic!("read frame header: {e}"),
    }
    s.read_exact(&mut header[1..]).expect("read the rest of the frame header");
    let body_len = u32::from_le_bytes(header[..4].try_into().unwrap()) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().unwrap());
    assert!((1..=70_000).contains(&body_len), "server frame body_len {body_len}");
    let mut body = vec![0u8; body_len];
    s.read_exact(&mut body).expect("read frame body");
    assert_eq!(crc32(&body), crc, "server frame CRC");
    Some(match decode_body(&body).expect("server frame decodes") {
        Frame::Welcome(w) => Reply::Welcome { producer_last_seq: w.producer_last_seq },
        Frame::Ack(a) => Reply::Ack { seq: a.seq, accepted: a.events_accepted, deduplicated: a.events_deduplicated, duplicate_batch: a.flags & 1 != 0 },
        Frame::Error(e) => Reply::Error { seq: e.seq, code: e.code, message: e.message.to_string() },
        other => panic!("server sent a {} frame", other.type_name()),
    })
}

/// Hello, then the Welcome; returns producer_last_seq.
fn handshake(s: &mut TcpStream, producer_id: u64) -> u64 {
    s.write_all(&hello(producer_id)).unwrap();
    match read_reply(s) {
        Some(Reply::Welcome { producer_last_seq }) => producer_last_seq,
        other => panic!("expected Welcome, got {other:?}"),
    }
}

/// The next frame is an Error with `code` (and `seq`, when given), then the server closes.
fn expect_error_and_close(s: &mut TcpStream, code: ErrorCode, seq: Option<u64>, what: &str) {
    match read_reply(s) {
        Some(Reply::Error { seq: got_seq, code: got, message }) => {
            assert_eq!(got, code.as_u16(), "{what}: error code (message: {message})");
            if let Some(seq) = seq {
                assert_eq!(got_seq, seq, "{what}: error seq");
            }
            eprintln!("{what}: {code} seq {got_seq}: {message}");
        }
        other => panic!("{what}: expected Error({code}), got {other:?}"),
    }
    // The server may still drain what we sent for a moment; then the connection must end.
    let mut rest = Vec::new();
    match s.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty(), "{what}: {} bytes after the Error frame", rest.len()),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("{what}: connection not closed after the Error frame: {e}"),
    }
}

/// Random bytes whose first four (the length field) are over `limit`: the server must refuse
/// the frame from its header alone instead of waiting for a body that never comes.
fn garbage(rng: &mut SmallRng, limit: usize) -> Vec<u8> {
    loop {
        let bytes: Vec<u8> = (0..512).map(|_| rng.gen()).collect();
        if u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize > limit {
            return bytes;
        }
    }
}

/// A batch for a two-column table, sent to the 14-column `events` table.
fn two_column_batch() -> Batch {
    let columns = vec![ColumnDef::new("id", ColumnType::Int64, false), ColumnDef::new("name", ColumnType::Text, true)];
    let schema = Schema::new("t", columns, vec![0], vec![]).unwrap();
    let mut b = lookback_common::BatchBuilder::new(&schema, 1);
    b.push_row(&[Value::Int64(7), Value::Text("hi".into())]).unwrap();
    b.finish().unwrap()
}

// ---- the well-behaved producer ------------------------------------------------------------

/// Streams batches until `stop`; returns the event ids of acknowledged batches.
async fn good_producer(addr: String, stop: Arc<AtomicBool>) -> Vec<String> {
    let mut options = ProducerOptions::new(1);
    options.reconnect_attempts_max = 3;
    let mut producer = Producer::connect(&addr, options).await.expect("connect the good producer");
    let mut rng = SmallRng::seed_from_u64(1);
    let mut acked = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let rows = rows(&mut rng, BATCH_EVENTS, 1);
        let ack = producer.send_and_wait("events", &build(&rows)).await.expect("the good producer must keep getting acks");
        assert_eq!(ack.events_accepted, BATCH_EVENTS as u32, "{ack:?}");
        acked.extend(rows.iter().map(|r| event_id(r)));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    acked
}

#[test]
fn malformed_input_is_refused_without_disturbing_good_producers() {
    let site = Site::new();
    let server = site.start(&["--config", &config(&site)]);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let good = runtime.spawn(good_producer(site.ingest_addr.clone(), stop.clone()));
    let mut rng = SmallRng::seed_from_u64(99);
    let addr = &site.ingest_addr;

    // Random bytes instead of a Hello, and random bytes after one.
    let mut s = raw_connect(addr);
    s.write_all(&garbage(&mut rng, frame::HELLO_BODY_BYTES_MAX)).unwrap();
    expect_error_and_close(&mut s, ErrorCode::MalformedFrame, Some(0), "random bytes before Hello");
    let mut s = raw_connect(addr);
    handshake(&mut s, 0);
    s.write_all(&garbage(&mut rng, FRAME_BYTES_MAX)).unwrap();
    expect_error_and_close(&mut s, ErrorCode::MalformedFrame, None, "random bytes after Hello");

    // An absurd length: refused from the header, the body is never awaited.
    let mut s = raw_connect(addr);
    handshake(&mut s, 0);
    s.write_all(&[0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0]).unwrap();
    expect_error_and_close(&mut s, ErrorCode::MalformedFrame, None, "body_len 0xFFFFFFFF");

    // A valid batch with a wrong CRC: nothing of it may be applied.
    let mut s = raw_connect(addr);
    handshake(&mut s, 0);
    let mut bad_crc = batch_frame(1, "events", &build(&rows(&mut rng, BATCH_EVENTS, 9)));
    bad_crc[4] ^= 0x01;
    s.write_all(&bad_crc).unwrap();
    expect_error_and_close(&mut s, ErrorCode::MalformedFrame, None, "wrong CRC");

    // Wrong column count.
    let mut s = raw_connect(addr);
    handshake(&mut s, 0);
    s.write_all(&batch_frame(3, "events", &two_column_batch())).unwrap();
    expect_error_and_close(&mut s, ErrorCode::SchemaMismatch, Some(3), "2 columns for the 14-column events table");

    // A good batch, then one for an unknown table: the first is acked, the second refused.
    let mut expected_extra: Vec<String> = Vec::new();
    let mut s = raw_connect(addr);
    handshake(&mut s, 0);
    let first = rows(&mut rng, BATCH_EVENTS, 9);
    s.write_all(&batch_frame(1, "events", &build(&first))).unwrap();
    s.write_all(&batch_frame(2, "no_such_table", &build(&rows(&mut rng, BATCH_EVENTS, 9)))).unwrap();
    match read_reply(&mut s) {
        Some(Reply::Ack { seq: 1, accepted, .. }) => assert_eq!(accepted, BATCH_EVENTS as u32),
        other => panic!("the batch before the bad one is still owed its Ack; got {other:?}"),
    }
    expected_extra.extend(first.iter().map(|r| event_id(r)));
    expect_error_and_close(&mut s, ErrorCode::UnknownTable, Some(2), "unknown table");

    // A non-increasing seq within a connection.
    let mut s = raw_connect(addr);
    handshake(&mut s, 0);
    let again = rows(&mut rng, BATCH_EVENTS, 9);
    s.write_all(&batch_frame(5, "events", &build(&again))).unwrap();
    s.write_all(&batch_frame(5, "events", &build(&rows(&mut rng, BATCH_EVENTS, 9)))).unwrap();
    assert!(matches!(read_reply(&mut s), Some(Reply::Ack { seq: 5, .. })), "first seq 5 is acked");
    expected_extra.extend(again.iter().map(|r| event_id(r)));
    expect_error_and_close(&mut s, ErrorCode::MalformedFrame, None, "seq not increasing");

    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let good_ids = runtime.block_on(good).unwrap();
    assert!(good_ids.len() >= 5 * BATCH_EVENTS, "the good producer barely ran: {} events", good_ids.len());
    let (_, metrics) = http(&site.http_addr, "GET", "/metrics");
    let errors = metric(&metrics, "lookback_ingest_errors_total").expect("lookback_ingest_errors_total");
    assert!(errors >= 7.0, "error frames counted: {errors}");
    server.terminate();

    let rows = dump(&site.data_dir);
    let seen = dumped_ids(&rows);
    let mut expected: HashMap<String, usize> = HashMap::new();
    for id in good_ids.into_iter().chain(expected_extra) {
        *expected.entry(id).or_default() += 1;
    }
    let unexpected: Vec<_> = seen.keys().filter(|id| !expected.contains_key(*id)).take(5).collect();
    assert!(unexpected.is_empty(), "rows from refused frames were applied: {unexpected:?}");
    assert_eq!(seen, expected, "dump must hold exactly the acknowledged events, each once");
}

#[test]
fn resent_batches_and_events_are_applied_once() {
    let site = Site::new();
    let server = site.start(&[]);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let producer_id = 42;
    let mut rng = SmallRng::seed_from_u64(5);
    let events = rows(&mut rng, BATCH_EVENTS, producer_id);
    let batch = build(&events);

    let first = runtime.block_on(async {
        let mut p = Producer::connect(&site.ingest_addr, ProducerOptions::new(producer_id)).await.unwrap();
        p.send_and_wait("events", &batch).await.expect("first send")
    });
    assert_eq!((first.events_accepted, first.duplicate_batch), (BATCH_EVENTS as u32, false), "{first:?}");

    // A new connection for the same producer resends the batch under its original seq, as a
    // producer that lost the ack would.
    let mut s = raw_connect(&site.ingest_addr);
    assert_eq!(handshake(&mut s, producer_id), first.seq, "Welcome.producer_last_seq");
    s.write_all(&batch_frame(first.seq, "events", &batch)).unwrap();
    match read_reply(&mut s) {
        Some(Reply::Ack { seq, accepted, deduplicated, duplicate_batch }) => {
            assert_eq!(seq, first.seq);
            assert!(duplicate_batch, "a resent seq must be acked as a duplicate batch");
            assert_eq!((accepted, deduplicated), (0, BATCH_EVENTS as u32), "duplicate batch counts (docs/ingest-protocol.md §4: events_deduplicated = events in the batch)");
        }
        other => panic!("expected a duplicate Ack, got {other:?}"),
    }
    drop(s);

    // The same events under a new seq: acknowledged, and deduplicated by event id.
    let second = runtime.block_on(async {
        let mut p = Producer::connect(&site.ingest_addr, ProducerOptions::new(producer_id)).await.unwrap();
        assert_eq!(p.producer_last_seq_at_connect(), first.seq);
        p.send_and_wait("events", &batch).await.expect("same events, new seq")
    });
    assert_eq!(second.seq, first.seq + 1, "{second:?}");
    assert!(!second.duplicate_batch, "{second:?}");
    assert_eq!((second.events_accepted, second.events_deduplicated), (0, BATCH_EVENTS as u32), "event-level dedup: {second:?}");
    server.terminate();

    let rows = dump(&site.data_dir);
    assert_eq!(rows.len(), BATCH_EVENTS, "each event once");
    let stored: HashMap<String, _> = rows.into_iter().map(|r| (r["event_id"].as_str().unwrap().to_string(), r)).collect();
    for e in &events {
        assert_eq!(stored.get(&event_id(e)), Some(&expected_json(e)), "event {} as sent", event_id(e));
    }
}

#[test]
fn producer_sequence_survives_sigkill() {
    let site = Site::new();
    let server = site.start(&[]);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let producer_id = 314;
    let mut rng = SmallRng::seed_from_u64(6);
    let last = runtime.block_on(async {
        let mut p = Producer::connect(&site.ingest_addr, ProducerOptions::new(producer_id)).await.unwrap();
        assert_eq!(p.producer_last_seq_at_connect(), 0, "a new producer");
        for _ in 0..5 {
            p.send("events", &build(&rows(&mut rng, BATCH_EVENTS, producer_id))).await.unwrap();
        }
        p.flush().await.unwrap().last().expect("acks").seq
    });
    assert_eq!(last, 5);
    server.kill9();

    let server = site.start(&[]);
    runtime.block_on(async {
        let mut p = Producer::connect(&site.ingest_addr, ProducerOptions::new(producer_id)).await.unwrap();
        assert_eq!(p.producer_last_seq_at_connect(), last, "producer_last_seq after SIGKILL and restart");
        let ack = p.send_and_wait("events", &build(&rows(&mut rng, BATCH_EVENTS, producer_id))).await.unwrap();
        assert_eq!(ack.seq, last + 1);
        assert!(!ack.duplicate_batch && ack.events_accepted == BATCH_EVENTS as u32, "{ack:?}");
    });
    server.kill9();
    assert_eq!(dump(&site.data_dir).len(), 6 * BATCH_EVENTS);
}
