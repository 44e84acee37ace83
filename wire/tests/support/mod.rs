//! Test support shared by the ingest integration tests: an in-memory [`MockSink`] that
//! deduplicates by `(producer_id, seq)` and assigns LSNs, a server launcher, a raw-socket
//! client for sending hostile bytes, a fault-injecting TCP proxy and batch builders.

#![allow(dead_code)]

use lookback_common::{
    encode_batch, Batch, BatchBuilder, ColumnDef, ColumnType, Lsn, Schema, Value,
};
use lookback_wire::ingest::frame::{
    self, decode_body, encode_frame, AckFrame, Frame, Hello, Welcome, PROTOCOL_VERSION,
};
use lookback_wire::ingest::{
    serve, DurableFuture, ErrorCode, IngestAck, IngestError, IngestRequest, IngestServerConfig,
    IngestServerStats, IngestSink,
};
use lookback_wire::BoxFuture;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

/// One batch the mock applied (a duplicate is acked but not recorded here).
#[derive(Clone, Debug, PartialEq)]
pub struct Applied {
    pub producer_id: u64,
    pub seq: u64,
    pub table: String,
    pub rows: usize,
    pub lsn: Lsn,
}

#[derive(Default)]
struct State {
    last_seq: HashMap<u64, u64>,
    lsn_of: HashMap<(u64, u64), (Lsn, u32)>,
    applied: Vec<Applied>,
    next_lsn: Lsn,
}

pub struct MockSink {
    schemas: HashMap<String, Arc<Schema>>,
    state: Mutex<State>,
    durable_delay: Duration,
    gate: Option<Arc<Semaphore>>,
    fail_durable_once: Mutex<HashSet<u64>>,
    pub admits_started: AtomicU64,
}

/// Table `t`: `id int64 not null, name text null`.
pub fn t_schema() -> Schema {
    let columns = vec![
        ColumnDef::new("id", ColumnType::Int64, false),
        ColumnDef::new("name", ColumnType::Text, true),
    ];
    Schema::new("t", columns, vec![0], vec![]).expect("test schema is valid")
}

impl MockSink {
    pub fn new() -> MockSink {
        let mut schemas = HashMap::new();
        schemas.insert("t".to_string(), Arc::new(t_schema()));
        schemas.insert("events".to_string(), Arc::new(Schema::events()));
        MockSink {
            schemas,
            state: Mutex::new(State {
                next_lsn: 1,
                ..State::default()
            }),
            durable_delay: Duration::ZERO,
            gate: None,
            fail_durable_once: Mutex::new(HashSet::new()),
            admits_started: AtomicU64::new(0),
        }
    }

    pub fn with_durable_delay(mut self, delay: Duration) -> MockSink {
        self.durable_delay = delay;
        self
    }

    /// Every admit first takes a permit from the returned semaphore (which starts empty).
    pub fn with_gate(mut self) -> (MockSink, Arc<Semaphore>) {
        let gate = Arc::new(Semaphore::new(0));
        self.gate = Some(gate.clone());
        (self, gate)
    }

    /// The first time `seq` is admitted it is applied, but its durability fails.
    pub fn fail_durable_once(&self, seq: u64) {
        self.fail_durable_once.lock().expect("lock").insert(seq);
    }

    pub fn applied(&self) -> Vec<Applied> {
        self.state.lock().expect("lock").applied.clone()
    }

    pub fn applied_by(&self, producer_id: u64) -> Vec<Applied> {
        self.applied()
            .into_iter()
            .filter(|a| a.producer_id == producer_id)
            .collect()
    }

    /// Applies or deduplicates; returns the ack and whether durability should fail.
    fn apply(&self, request: &IngestRequest) -> (IngestAck, bool) {
        let mut state = self.state.lock().expect("lock");
        let key = (request.producer_id, request.seq);
        let last = state
            .last_seq
            .get(&request.producer_id)
            .copied()
            .unwrap_or(0);
        if request.producer_id != 0 && request.seq <= last {
            let (lsn, rows) = state.lsn_of.get(&key).copied().unwrap_or((0, 0));
            let ack = IngestAck {
                lsn,
                events_accepted: 0,
                events_deduplicated: rows,
                duplicate_batch: true,
            };
            return (ack, false);
        }
        let lsn = state.next_lsn;
        state.next_lsn += 1;
        let rows = request.batch.rows();
        state.last_seq.insert(request.producer_id, request.seq);
        state.lsn_of.insert(key, (lsn, rows as u32));
        state.applied.push(Applied {
            producer_id: request.producer_id,
            seq: request.seq,
            table: request.table.clone(),
            rows,
            lsn,
        });
        let fail = self
            .fail_durable_once
            .lock()
            .expect("lock")
            .remove(&request.seq);
        let ack = IngestAck {
            lsn,
            events_accepted: rows as u32,
            events_deduplicated: 0,
            duplicate_batch: false,
        };
        (ack, fail)
    }
}

impl IngestSink for MockSink {
    fn schema(&self, table: &str) -> Option<Arc<Schema>> {
        self.schemas.get(table).cloned()
    }

    fn producer_last_seq(&self, producer_id: u64) -> u64 {
        self.state
            .lock()
            .expect("lock")
            .last_seq
            .get(&producer_id)
            .copied()
            .unwrap_or(0)
    }

    fn admit<'a>(&'a self, request: IngestRequest<'a>) -> BoxFuture<'a, Result<DurableFuture, IngestError>> {
        Box::pin(async move {
            self.admits_started.fetch_add(1, Ordering::SeqCst);
            if let Some(gate) = &self.gate {
                let permit = gate
                    .acquire()
                    .await
                    .map_err(|_| IngestError::new(ErrorCode::ShuttingDown, "gate closed"))?;
                permit.forget();
            }
            let (ack, fail) = self.apply(&request);
            let delay = self.durable_delay;
            let durable: DurableFuture = Box::pin(async move {
                tokio::time::sleep(delay).await;
                if fail {
                    return Err(IngestError::new(
                        ErrorCode::StorageFailure,
                        "injected fsync failure",
                    ));
                }
                Ok(ack)
            });
            Ok(durable)
        })
    }
}

pub struct TestServer {
    pub addr: String,
    pub stats: Arc<IngestServerStats>,
    pub shutdown: watch::Sender<bool>,
    pub handle: JoinHandle<std::io::Result<()>>,
}

pub async fn start_server(sink: Arc<MockSink>, config: IngestServerConfig) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr").to_string();
    let stats = Arc::new(IngestServerStats::default());
    let (shutdown, shutdown_rx) = watch::channel(false);
    let handle = tokio::spawn(serve(listener, sink, config, stats.clone(), shutdown_rx));
    TestServer {
        addr,
        stats,
        shutdown,
        handle,
    }
}

/// A batch for table `t` with ids `start..start + rows` and names `n{id}`.
pub fn t_batch(start: i64, rows: usize) -> Batch {
    let schema = t_schema();
    let mut builder = BatchBuilder::new(&schema, rows);
    for id in start..start + rows as i64 {
        builder
            .push_row(&[Value::Int64(id), Value::Text(format!("n{id}"))])
            .expect("row fits");
    }
    builder.finish().expect("batch is valid")
}

pub fn encoded(batch: &Batch) -> Vec<u8> {
    let mut out = Vec::new();
    encode_batch(batch, &mut out);
    out
}

/// A complete Batch frame.
pub fn batch_frame(seq: u64, table: &str, batch_bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let frame = frame::BatchFrame {
        seq,
        table,
        batch: batch_bytes,
    };
    encode_frame(&Frame::Batch(frame), &mut out);
    out
}

pub fn hello_frame(version: u16, producer_id: u64) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(
        &Frame::Hello(Hello {
            version,
            producer_id,
            api_key: "",
        }),
        &mut out,
    );
    out
}

/// What a raw client read.
#[derive(Debug, PartialEq)]
pub enum Reply {
    Ack(AckFrame),
    Error {
        seq: u64,
        code: Option<ErrorCode>,
        message: String,
    },
    Welcome(Welcome),
    Closed,
}

/// A hand-driven client for sending arbitrary bytes.
pub struct RawConn {
    pub stream: TcpStream,
    body: Vec<u8>,
}

impl RawConn {
    pub async fn connect(addr: &str) -> RawConn {
        RawConn {
            stream: TcpStream::connect(addr).await.expect("connect"),
            body: Vec::new(),
        }
    }

    /// Connects and completes the handshake.
    pub async fn handshake(addr: &str, producer_id: u64) -> (RawConn, Welcome) {
        let mut conn = RawConn::connect(addr).await;
        conn.send(&hello_frame(PROTOCOL_VERSION, producer_id)).await;
        match conn.read().await {
            Reply::Welcome(w) => (conn, w),
            other => panic!("expected welcome, got {other:?}"),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write to server");
    }

    /// Reads the next reply; panics if none comes within 5 s.
    pub async fn read(&mut self) -> Reply {
        let read = frame::read_frame(&mut self.stream, &mut self.body, 1 << 20);
        match tokio::time::timeout(Duration::from_secs(5), read).await {
            Err(_) => panic!("no reply from the server within 5 s"),
            Ok(Ok(false)) => Reply::Closed,
            Ok(Err(e)) => panic!("reading a reply failed: {e}"),
            Ok(Ok(true)) => match decode_body(&self.body).expect("server frames decode") {
                Frame::Ack(a) => Reply::Ack(a),
                Frame::Welcome(w) => Reply::Welcome(w),
                Frame::Error(e) => Reply::Error {
                    seq: e.seq,
                    code: ErrorCode::from_u16(e.code),
                    message: e.message.to_string(),
                },
                other => panic!("server sent a {} frame", other.type_name()),
            },
        }
    }

    /// Reads acks until an error frame; asserts its code and that the server then closes.
    /// Returns the acks read before the error and the error's seq.
    pub async fn expect_error_then_close(&mut self, code: ErrorCode) -> (Vec<AckFrame>, u64) {
        let mut acks = Vec::new();
        loop {
            match self.read().await {
                Reply::Ack(a) => acks.push(a),
                Reply::Error {
                    seq,
                    code: got,
                    message,
                } => {
                    assert_eq!(got, Some(code), "error frame: {message}");
                    assert_eq!(
                        self.read().await,
                        Reply::Closed,
                        "server closes after an error frame"
                    );
                    return (acks, seq);
                }
                other => panic!("expected error {code}, got {other:?}"),
            }
        }
    }
}

/// A TCP proxy that cuts each of the first `cuts` connections after forwarding
/// `server_bytes_max` bytes from the server to the client (acks lost after admission).
pub struct CuttingProxy {
    pub addr: String,
    pub connections: Arc<AtomicU64>,
}

pub async fn cutting_proxy(upstream: String, cuts: u64, server_bytes_max: usize) -> CuttingProxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let addr = listener.local_addr().expect("proxy addr").to_string();
    let connections = Arc::new(AtomicU64::new(0));
    let counter = connections.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let limit = if n < cuts {
                Some(server_bytes_max)
            } else {
                None
            };
            tokio::spawn(proxy_one(client, upstream.clone(), limit));
        }
    });
    CuttingProxy { addr, connections }
}

async fn proxy_one(client: TcpStream, upstream: String, limit: Option<usize>) {
    let Ok(server) = TcpStream::connect(&upstream).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream_copy = async { tokio::io::copy(&mut client_read, &mut server_write).await };
    let downstream_copy = async {
        let mut forwarded = 0usize;
        let mut buf = [0u8; 4096];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let allowed = limit.map_or(n, |l| n.min(l - forwarded));
            if client_write.write_all(&buf[..allowed]).await.is_err() {
                return;
            }
            forwarded += allowed;
            if limit.is_some_and(|l| forwarded >= l) {
                return;
            }
        }
    };
    // Whichever direction ends first ends both: dropping the halves closes both sockets.
    tokio::select! {
        _ = upstream_copy => {}
        () = downstream_copy => {}
    }
}

/// A well-behaved producer sending `t` batches in a loop until `stop`; returns its ack count.
pub fn steady_producer(
    addr: String,
    producer_id: u64,
    stop: watch::Receiver<bool>,
) -> JoinHandle<u64> {
    tokio::spawn(async move {
        let options = lookback_wire::ingest::ProducerOptions::new(producer_id);
        let mut producer = lookback_wire::ingest::Producer::connect(&addr, options)
            .await
            .expect("steady producer connects");
        let mut acks = 0u64;
        while !*stop.borrow() {
            let ack = producer.send_and_wait("t", &t_batch(acks as i64, 3)).await;
            let ack =
                ack.unwrap_or_else(|e| panic!("steady producer failed after {acks} acks: {e}"));
            assert!(!ack.duplicate_batch);
            acks += 1;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        acks
    })
}
