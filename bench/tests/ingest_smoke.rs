//! End-to-end tests of `lookback-bench ingest` against the real ingest server of
//! `lookback-wire` with an in-memory sink, and a one-shot mock of the admin HTTP endpoints.
#![allow(clippy::unwrap_used)] // tests panic with the error

use lookback_bench::{EventGenerator, GeneratorConfig, RunPlan};
use lookback_common::schema::events::EVENT_ID;
use lookback_common::{ColumnValues, Schema};
use lookback_wire::ingest::error::{ErrorCode, IngestError};
use lookback_wire::ingest::{
    serve, DurableFuture, IngestAck, IngestRequest, IngestServerConfig, IngestSink,
};
use lookback_wire::BoxFuture;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Accepts every batch except the `reject_at`-th (0-based) and XORs all event ids.
struct MockSink {
    schema: Arc<Schema>,
    batches: AtomicU64,
    rows: AtomicU64,
    event_id_xor: std::sync::Mutex<[u8; 16]>,
    reject_at: Option<u64>,
}

impl IngestSink for MockSink {
    fn schema(&self, table: &str) -> Option<Arc<Schema>> {
        (table == "events").then(|| self.schema.clone())
    }

    fn producer_last_seq(&self, _producer_id: u64) -> u64 {
        0
    }

    fn admit<'a>(&'a self, request: IngestRequest<'a>) -> BoxFuture<'a, Result<DurableFuture, IngestError>> {
        Box::pin(async move {
            let n = self.batches.fetch_add(1, Ordering::SeqCst);
            if self.reject_at == Some(n) {
                return Err(IngestError::new(
                    ErrorCode::SchemaMismatch,
                    "rejected by the test",
                ));
            }
            let rows = request.batch.rows() as u32;
            self.rows.fetch_add(u64::from(rows), Ordering::SeqCst);
            xor_event_ids(&request.batch, &mut self.event_id_xor.lock().unwrap());
            let ack = IngestAck {
                lsn: n + 1,
                events_accepted: rows,
                events_deduplicated: 0,
                duplicate_batch: false,
            };
            let durable: DurableFuture = Box::pin(async move { Ok(ack) });
            Ok(durable)
        })
    }
}

fn xor_event_ids(batch: &lookback_common::Batch, acc: &mut [u8; 16]) {
    let ColumnValues::Uuid(ids) = &batch.column(EVENT_ID).values else {
        panic!("event_id not uuid")
    };
    for id in ids {
        acc.iter_mut().zip(id).for_each(|(a, b)| *a ^= b);
    }
}

/// Starts the ingest server on an ephemeral port in a background runtime.
fn start_server(reject_at: Option<u64>) -> (String, Arc<MockSink>) {
    let sink = Arc::new(MockSink {
        schema: Arc::new(Schema::events()),
        batches: AtomicU64::new(0),
        rows: AtomicU64::new(0),
        event_id_xor: std::sync::Mutex::new([0; 16]),
        reject_at,
    });
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    listener.set_nonblocking(true).unwrap();
    let server_sink: Arc<dyn IngestSink> = sink.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let (_stop, stop_rx) = tokio::sync::watch::channel(false);
            let stats = Default::default();
            serve(
                listener,
                server_sink,
                IngestServerConfig::default(),
                stats,
                stop_rx,
            )
            .await
            .unwrap();
        });
    });
    (addr, sink)
}

/// Serves `POST /admin/compact` then `GET /admin/storage`; returns the address.
fn start_admin_mock(rows: u64) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for expected in ["POST /admin/compact", "GET /admin/storage"] {
            let (mut stream, _) = listener.accept().unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap() == 1 {
                head.push(byte[0]);
            }
            assert!(
                String::from_utf8_lossy(&head).starts_with(expected),
                "expected {expected}"
            );
            let body = if expected.starts_with("GET") {
                format!(
                    r#"{{"rows":{rows},"segment_bytes":{},"segments":1,"columns":[{{"name":"event_id","bytes":{}}}]}}"#,
                    rows * 40,
                    rows * 16
                )
            } else {
                "{}".to_string()
            };
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(response.as_bytes()).unwrap();
        }
    });
    addr
}

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lookback-bench"))
        .args(args)
        .output()
        .unwrap()
}

fn last_json_line(output: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no stdout; stderr: {}", stderr(output)));
    serde_json::from_str(line).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn ingest_sends_exactly_the_generated_events_and_reports_storage() {
    let (addr, sink) = start_server(None);
    let http = start_admin_mock(20_000);
    let out = bench(&[
        "ingest",
        "--addr",
        &addr,
        "--clients",
        "3",
        "--batch",
        "3000",
        "--events",
        "20000",
        "--seed",
        "5",
        "--http-addr",
        &http,
    ]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let report = last_json_line(&out);
    assert_eq!(report["events"], 20_000);
    assert_eq!(report["batches_acked"], 7);
    assert_eq!(report["bytes_on_disk_per_event"], 40.0);
    assert_eq!(report["columns_bytes_per_event"]["event_id"], 16.0);
    assert!(report["ack_p99_ms"].as_f64().unwrap() >= report["ack_p50_ms"].as_f64().unwrap());
    assert_eq!(sink.rows.load(Ordering::SeqCst), 20_000);

    let generator = EventGenerator::new(5, GeneratorConfig::default());
    let plan = RunPlan::new(20_000, 3_000);
    let mut expected = [0u8; 16];
    for i in 0..plan.batches() {
        xor_event_ids(&generator.plan_batch(&plan, i), &mut expected);
    }
    assert_eq!(
        *sink.event_id_xor.lock().unwrap(),
        expected,
        "server got the generated events"
    );
}

#[test]
fn paced_run_takes_events_over_rate_seconds() {
    let (addr, _sink) = start_server(None);
    let out = bench(&[
        "ingest", "--addr", &addr, "--batch", "1000", "--events", "10000", "--rate", "20000",
    ]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let report = last_json_line(&out);
    assert!(report["seconds"].as_f64().unwrap() >= 0.44, "{report}");
    assert_eq!(report["bytes_on_disk_per_event"], serde_json::Value::Null);
}

#[test]
fn rejected_batch_fails_the_run() {
    let (addr, _sink) = start_server(Some(2));
    let out = bench(&[
        "ingest", "--addr", &addr, "--batch", "1000", "--events", "10000",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("rejected"),
        "stderr: {}",
        stderr(&out)
    );
}

#[test]
fn unreachable_server_fails_with_a_clear_message() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let out = bench(&[
        "ingest",
        "--addr",
        &addr,
        "--events",
        "1000",
        "--reconnect-attempts",
        "1",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is it running"),
        "stderr: {}",
        stderr(&out)
    );
}
