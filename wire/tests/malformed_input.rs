//! Hostile and broken input against a real server socket: every case gets the right error
//! code, the connection closes, nothing from the bad frame reaches the sink, and a
//! well-behaved producer on the same server keeps working throughout.

mod support;

use lookback_common::{encode_batch, BatchBuilder, ColumnDef, ColumnType, Schema, Value};
use lookback_wire::ingest::frame::{self, PROTOCOL_VERSION};
use lookback_wire::ingest::{ErrorCode, IngestServerConfig};
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

const BATCH_EVENTS_MAX: usize = 100;
const TEXT_VALUE_BYTES_MAX: usize = 1024;
const STEADY_PRODUCER: u64 = 1;

fn config() -> IngestServerConfig {
    IngestServerConfig {
        frame_bytes_max: 1 << 20,
        batch_events_max: BATCH_EVENTS_MAX,
        text_value_bytes_max: TEXT_VALUE_BYTES_MAX,
        handshake_timeout_ms: 300,
        ..IngestServerConfig::default()
    }
}

fn batch_of(schema: &Schema, rows: &[Vec<Value>]) -> Vec<u8> {
    let mut builder = BatchBuilder::new(schema, rows.len());
    rows.iter().for_each(|r| builder.push_row(r).expect("row"));
    let mut out = Vec::new();
    encode_batch(&builder.finish().expect("batch"), &mut out);
    out
}

fn t_bytes_with_name(name: &str) -> Vec<u8> {
    batch_of(
        &t_schema(),
        &[vec![Value::Int64(1), Value::Text(name.into())]],
    )
}

/// A `t` batch whose single text value is not UTF-8.
fn bad_utf8_batch() -> Vec<u8> {
    let mut bytes = t_bytes_with_name("abc");
    let len = bytes.len();
    bytes[len - 3..].copy_from_slice(&[0xff, 0xfe, 0xfd]);
    bytes
}

fn wrong_column_count() -> Vec<u8> {
    let schema = Schema::new(
        "t",
        vec![ColumnDef::new("id", ColumnType::Int64, false)],
        vec![],
        vec![],
    )
    .expect("schema");
    batch_of(&schema, &[vec![Value::Int64(1)]])
}

fn wrong_column_type() -> Vec<u8> {
    let c = ColumnDef::new;
    let schema = Schema::new(
        "t",
        vec![
            c("id", ColumnType::Text, false),
            c("name", ColumnType::Text, true),
        ],
        vec![],
        vec![],
    )
    .expect("schema");
    batch_of(&schema, &[vec![Value::Text("1".into()), Value::Null]])
}

fn null_in_not_null_column() -> Vec<u8> {
    let c = ColumnDef::new;
    let schema = Schema::new(
        "t",
        vec![
            c("id", ColumnType::Int64, true),
            c("name", ColumnType::Text, true),
        ],
        vec![],
        vec![],
    )
    .expect("schema");
    batch_of(&schema, &[vec![Value::Null, Value::Null]])
}

fn header(body_len: u32) -> Vec<u8> {
    let mut out = body_len.to_le_bytes().to_vec();
    out.extend_from_slice(&0u32.to_le_bytes());
    out
}

fn with_body(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let start = frame::begin_frame(&mut out);
    out.extend_from_slice(body);
    frame::finish_frame(&mut out, start);
    out
}

fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..len).map(|_| rng.gen()).collect()
}

/// One case: bytes sent after the handshake (or instead of it), and the expected code.
struct Case {
    name: &'static str,
    handshake: bool,
    bytes: Vec<u8>,
    close_write: bool,
    code: ErrorCode,
}

fn case(name: &'static str, bytes: Vec<u8>, code: ErrorCode) -> Case {
    Case {
        name,
        handshake: true,
        bytes,
        close_write: false,
        code,
    }
}

fn cases() -> Vec<Case> {
    let good = encoded(&t_batch(0, 3));
    let good_frame = batch_frame(1, "t", &good);
    let mut wrong_crc = good_frame.clone();
    wrong_crc[5] ^= 0x01;
    let mut two_frames = good_frame.clone();
    two_frames.extend_from_slice(&batch_frame(1, "t", &good));
    let many: Vec<i64> = (0..=BATCH_EVENTS_MAX as i64).collect();
    let too_many = batch_of(
        &t_schema(),
        &many
            .iter()
            .map(|&i| vec![Value::Int64(i), Value::Null])
            .collect::<Vec<_>>(),
    );
    vec![
        Case {
            handshake: false,
            ..case(
                "random bytes instead of hello",
                random_bytes(7, 4096),
                ErrorCode::MalformedFrame,
            )
        },
        Case {
            close_write: true,
            ..case(
                "random bytes after hello",
                random_bytes(8, 4096),
                ErrorCode::MalformedFrame,
            )
        },
        Case {
            close_write: true,
            ..case(
                "truncated frame then close",
                good_frame[..good_frame.len() / 2].to_vec(),
                ErrorCode::MalformedFrame,
            )
        },
        case(
            "absurd body_len",
            header(u32::MAX),
            ErrorCode::MalformedFrame,
        ),
        case(
            "body_len over frame_bytes_max",
            header((1 << 20) + 1),
            ErrorCode::MalformedFrame,
        ),
        case("zero body_len", header(0), ErrorCode::MalformedFrame),
        case("wrong crc", wrong_crc, ErrorCode::MalformedFrame),
        case(
            "unknown frame type",
            with_body(&[0x7f, 1, 2, 3]),
            ErrorCode::MalformedFrame,
        ),
        case(
            "second hello",
            hello_frame(PROTOCOL_VERSION, 0),
            ErrorCode::MalformedFrame,
        ),
        case(
            "seq zero",
            batch_frame(0, "t", &good),
            ErrorCode::MalformedFrame,
        ),
        case("seq not increasing", two_frames, ErrorCode::MalformedFrame),
        case(
            "bad utf-8 text column",
            batch_frame(1, "t", &bad_utf8_batch()),
            ErrorCode::MalformedFrame,
        ),
        case(
            "trailing garbage after batch",
            batch_frame(1, "t", &[good.as_slice(), &[0]].concat()),
            ErrorCode::MalformedFrame,
        ),
        case(
            "wrong column count",
            batch_frame(1, "t", &wrong_column_count()),
            ErrorCode::SchemaMismatch,
        ),
        case(
            "wrong column type",
            batch_frame(1, "t", &wrong_column_type()),
            ErrorCode::SchemaMismatch,
        ),
        case(
            "null in not-null column",
            batch_frame(1, "t", &null_in_not_null_column()),
            ErrorCode::SchemaMismatch,
        ),
        case(
            "too many events",
            batch_frame(1, "t", &too_many),
            ErrorCode::TooManyEvents,
        ),
        case(
            "value too large",
            batch_frame(
                1,
                "t",
                &t_bytes_with_name(&"x".repeat(TEXT_VALUE_BYTES_MAX + 1)),
            ),
            ErrorCode::ValueTooLarge,
        ),
        case(
            "unknown table",
            batch_frame(1, "nope", &good),
            ErrorCode::UnknownTable,
        ),
        Case {
            handshake: false,
            ..case(
                "batch before hello",
                good_frame.clone(),
                ErrorCode::MalformedFrame,
            )
        },
        Case {
            handshake: false,
            ..case(
                "unsupported version",
                hello_frame(2, 0),
                ErrorCode::UnsupportedVersion,
            )
        },
        Case {
            handshake: false,
            ..case(
                "no hello before the handshake timeout",
                Vec::new(),
                ErrorCode::MalformedFrame,
            )
        },
    ]
}

async fn run_case(addr: &str, producer_id: u64, case: Case) -> Vec<u64> {
    let mut conn = if case.handshake {
        RawConn::handshake(addr, producer_id).await.0
    } else {
        RawConn::connect(addr).await
    };
    conn.send(&case.bytes).await;
    if case.close_write {
        tokio::io::AsyncWriteExt::shutdown(&mut conn.stream)
            .await
            .expect("shutdown write");
    }
    let started = Instant::now();
    let (acks, _seq) = conn.expect_error_then_close(case.code).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{}: error took {:?}",
        case.name,
        started.elapsed()
    );
    acks.iter().map(|a| a.seq).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_gets_its_error_and_nothing_reaches_the_sink() {
    let sink = Arc::new(MockSink::new());
    let server = start_server(sink.clone(), config()).await;
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let steady = steady_producer(server.addr.clone(), STEADY_PRODUCER, stop_rx);
    for (i, case) in cases().into_iter().enumerate() {
        let producer_id = 100 + i as u64;
        let name = case.name;
        let acked = run_case(&server.addr, producer_id, case).await;
        let applied: Vec<u64> = sink.applied_by(producer_id).iter().map(|a| a.seq).collect();
        // Only "seq not increasing" sends a good batch first: it is acked, then the error.
        assert_eq!(
            applied, acked,
            "{name}: applied batches are exactly the acked ones"
        );
        if name == "seq not increasing" {
            assert_eq!(acked, vec![1], "{name}");
        } else {
            assert!(acked.is_empty(), "{name}: acked {acked:?}");
        }
    }
    stop.send(true).expect("stop steady producer");
    let steady_acks = steady.await.expect("steady producer never failed");
    assert!(steady_acks > 0, "the well-behaved producer kept working");
    assert_eq!(sink.applied_by(STEADY_PRODUCER).len() as u64, steady_acks);
}

#[tokio::test]
async fn error_for_a_bad_batch_follows_the_acks_already_owed() {
    let sink = Arc::new(MockSink::new().with_durable_delay(Duration::from_millis(50)));
    let server = start_server(sink.clone(), config()).await;
    let (mut conn, _) = RawConn::handshake(&server.addr, 42).await;
    let good = encoded(&t_batch(0, 1));
    let mut bytes = Vec::new();
    for seq in 1..=3 {
        bytes.extend_from_slice(&batch_frame(seq, "t", &good));
    }
    bytes.extend_from_slice(&batch_frame(4, "nope", &good));
    bytes.extend_from_slice(&batch_frame(5, "t", &good));
    conn.send(&bytes).await;
    let (acks, seq) = conn.expect_error_then_close(ErrorCode::UnknownTable).await;
    assert_eq!(
        acks.iter().map(|a| a.seq).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(seq, 4);
    let applied: Vec<u64> = sink.applied_by(42).iter().map(|a| a.seq).collect();
    assert_eq!(
        applied,
        vec![1, 2, 3],
        "nothing after the failed batch was applied"
    );
}

#[tokio::test]
async fn random_frames_with_valid_envelopes_never_break_the_server() {
    let sink = Arc::new(MockSink::new());
    let server = start_server(sink.clone(), config()).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(99);
    for i in 0..40u64 {
        let (mut conn, _) = RawConn::handshake(&server.addr, 500 + i).await;
        let len = rng.gen_range(1..300);
        let mut body: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        body[0] = rng.gen_range(1..=6); // mostly known frame types, garbage payloads
        conn.send(&with_body(&body)).await;
        loop {
            match conn.read().await {
                Reply::Error { .. } => break,
                Reply::Ack(_) => {}
                other => panic!("case {i}: expected an error, got {other:?}"),
            }
        }
    }
    let (mut conn, _) = RawConn::handshake(&server.addr, 2).await;
    conn.send(&batch_frame(1, "t", &encoded(&t_batch(0, 1))))
        .await;
    assert!(
        matches!(conn.read().await, Reply::Ack(_)),
        "server still healthy"
    );
}
