//! A stand-in for `lookback serve` to exercise `ingest_compare.py` and `lookback-bench ingest`
//! without the engine: the real ingest protocol server (`lookback-wire`) with a sink that
//! acknowledges every batch at once and keeps nothing, plus `GET /health`, `POST /admin/compact`
//! and a fake `GET /admin/storage` (16 B/event for event_id, 2 B/event for other columns).
//!
//! `cargo run --release -p lookback-bench --example mock_lookback -- serve --data-dir D
//!  --ingest-addr 127.0.0.1:7000 --pg-addr 127.0.0.1:7001 --http-addr 127.0.0.1:7002`
//! Not a benchmark target: its numbers say nothing about Lookback.

use lookback_common::Schema;
use lookback_wire::ingest::error::IngestError;
use lookback_wire::ingest::{
    serve, DurableFuture, IngestAck, IngestRequest, IngestServerConfig, IngestSink,
};
use lookback_wire::BoxFuture;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

struct CountingSink {
    schema: Arc<Schema>,
    rows: AtomicU64,
    lsn: AtomicU64,
}

impl IngestSink for CountingSink {
    fn schema(&self, table: &str) -> Option<Arc<Schema>> {
        (table == self.schema.name).then(|| self.schema.clone())
    }

    fn producer_last_seq(&self, _producer_id: u64) -> u64 {
        0
    }

    fn admit<'a>(&'a self, request: IngestRequest<'a>) -> BoxFuture<'a, Result<DurableFuture, IngestError>> {
        Box::pin(async move {
            let rows = request.batch.rows() as u32;
            self.rows.fetch_add(u64::from(rows), Ordering::SeqCst);
            let lsn = self.lsn.fetch_add(1, Ordering::SeqCst) + 1;
            let ack = IngestAck {
                lsn,
                events_accepted: rows,
                events_deduplicated: 0,
                duplicate_batch: false,
            };
            let durable: DurableFuture = Box::pin(async move { Ok(ack) });
            Ok(durable)
        })
    }
}

fn flag(args: &[String], name: &str) -> String {
    let position = args
        .iter()
        .position(|a| a == name)
        .unwrap_or_else(|| panic!("missing {name}"));
    args.get(position + 1)
        .unwrap_or_else(|| panic!("{name} needs a value"))
        .clone()
}

fn storage_json(sink: &CountingSink) -> String {
    let rows = sink.rows.load(Ordering::SeqCst);
    let columns: Vec<String> = sink
        .schema
        .columns
        .iter()
        .map(|c| {
            let per_event = if c.name == "event_id" { 16 } else { 2 };
            format!(r#"{{"name":"{}","bytes":{}}}"#, c.name, rows * per_event)
        })
        .collect();
    let total = rows * (16 + 2 * (sink.schema.columns.len() as u64 - 1));
    format!(
        r#"{{"rows":{rows},"segment_bytes":{total},"segments":1,"columns":[{}]}}"#,
        columns.join(",")
    )
}

fn serve_http(addr: &str, sink: Arc<CountingSink>) {
    let listener = std::net::TcpListener::bind(addr).expect("bind http");
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && matches!(stream.read(&mut byte), Ok(1)) {
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        let (status, body) = if head.starts_with("GET /health") {
            ("200 OK", "ok".to_string())
        } else if head.starts_with("POST /admin/compact") {
            ("200 OK", "{}".to_string())
        } else if head.starts_with("GET /admin/storage") {
            ("200 OK", storage_json(&sink))
        } else {
            ("404 Not Found", "not found".to_string())
        };
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(response.as_bytes());
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    assert_eq!(
        args.get(1).map(String::as_str),
        Some("serve"),
        "usage: mock_lookback serve ..."
    );
    let (ingest_addr, http_addr) = (flag(&args, "--ingest-addr"), flag(&args, "--http-addr"));
    let sink = Arc::new(CountingSink {
        schema: Arc::new(Schema::events()),
        rows: AtomicU64::new(0),
        lsn: AtomicU64::new(0),
    });
    let http_sink = sink.clone();
    std::thread::spawn(move || serve_http(&http_addr, http_sink));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&ingest_addr)
            .await
            .expect("bind ingest");
        let (_stop, stop_rx) = tokio::sync::watch::channel(false);
        let sink: Arc<dyn IngestSink> = sink;
        serve(
            listener,
            sink,
            IngestServerConfig::default(),
            Default::default(),
            stop_rx,
        )
        .await
        .expect("serve");
    });
}
