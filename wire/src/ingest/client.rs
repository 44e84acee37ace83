//! The Rust ingest client: a [`Producer`] streams batches to one server with pipelining,
//! in-order acknowledgements and transparent reconnects.
//!
//! Every batch gets the next sequence number when it is first sent and keeps it forever: its
//! encoded frame is kept (as `Bytes`) until acknowledged, and after an I/O error, EOF, ack
//! timeout or a retriable error frame the producer reconnects with exponential backoff and
//! resends every unacknowledged frame in order with its original sequence. The server treats
//! a sequence it has already applied as a duplicate batch, so for a nonzero producer id each
//! batch is applied exactly once. A final error (schema mismatch, unknown table...) removes
//! only that batch; the rest are resent on the next connection.
//!
//! A `Producer` is not cancel-safe at the byte level, but it notices: if a future is dropped
//! mid-I/O the connection is discarded and the next call reconnects and resends.
//!
//! What this is not: a buffer. At most `inflight_max` batches are unacknowledged; `send`
//! waits for acks beyond that.

use crate::ingest::error::ErrorCode;
use crate::ingest::frame::{
    self, decode_body, encode_frame, AckFrame, ErrorFrame, Frame, Hello, Welcome,
    ACK_FLAG_DUPLICATE_BATCH, PROTOCOL_VERSION, SERVER_BODY_BYTES_MAX, TABLE_NAME_BYTES_MAX,
};
use bytes::Bytes;
use lookback_common::{encode_batch_compact, Batch, Lsn};
use std::collections::VecDeque;
use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// Acknowledgements read but not yet taken by `next_ack`/`flush`. Past this the oldest
/// successful ack is dropped (the batch is durable either way; only its report is lost).
pub const ACKS_UNREAD_MAX: usize = 1 << 16;

#[derive(Clone, Debug)]
pub struct ProducerOptions {
    /// 0 = anonymous: no deduplication, so a resend after a reconnect may apply a batch twice.
    pub producer_id: u64,
    pub api_key: String,
    /// Unacknowledged batches before `send` waits.
    pub inflight_max: usize,
    /// Consecutive failed connections (without an ack in between) before giving up.
    pub reconnect_attempts_max: u32,
    pub reconnect_backoff_initial_ms: u64,
    pub reconnect_backoff_max_ms: u64,
    /// TCP connect plus handshake.
    pub connect_timeout_ms: u64,
    /// Longest wait for the next ack (or for a write) before the connection is presumed dead.
    pub ack_timeout_ms: u64,
}

impl ProducerOptions {
    pub fn new(producer_id: u64) -> Self {
        ProducerOptions {
            producer_id,
            api_key: String::new(),
            inflight_max: 4,
            reconnect_attempts_max: 20,
            reconnect_backoff_initial_ms: 50,
            reconnect_backoff_max_ms: 2_000,
            connect_timeout_ms: 5_000,
            ack_timeout_ms: 60_000,
        }
    }
}

/// A durable batch, as reported by the server.
#[derive(Clone, Debug, PartialEq)]
pub struct Ack {
    pub seq: u64,
    pub lsn: Lsn,
    pub events_accepted: u32,
    pub events_deduplicated: u32,
    /// Applied by an earlier send (a resend after a lost ack); nothing new was written.
    pub duplicate_batch: bool,
    /// From the batch's first send to its ack, resends included.
    pub latency: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A local I/O error that retrying cannot fix (an unparsable address, for example).
    #[error("ingest i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The server broke the protocol (unexpected frame, ack out of order, unknown code).
    #[error("ingest protocol violation: {0}")]
    Protocol(String),
    /// The server refused batch `seq` (or the connection, when `seq` is 0) for a reason that
    /// resending cannot fix. The batch is no longer in flight.
    #[error("batch {seq} rejected: {code}: {message}")]
    Rejected {
        seq: u64,
        code: ErrorCode,
        message: String,
    },
    /// Reconnecting failed `attempts` times in a row; unacknowledged batches stay queued and
    /// the next call tries again.
    #[error("ingest server unreachable after {attempts} attempts: {last_error}")]
    RetriesExhausted { attempts: u32, last_error: String },
    /// `next_ack` was called with nothing in flight and no unread ack.
    #[error("no batch in flight")]
    Idle,
    /// The batch exceeds a limit the server advertised; it was not sent.
    #[error("batch too large: {0}")]
    BatchTooLarge(String),
    /// A caller-supplied value is unusable (table name or api key too long).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// A batch sent but not yet acknowledged: kept whole so it can be resent byte for byte.
struct InFlight {
    seq: u64,
    frame: Bytes,
    first_sent: Instant,
}

/// One live connection.
struct Link {
    read_half: OwnedReadHalf,
    write_half: OwnedWriteHalf,
    body: Vec<u8>,
}

/// Why one exchange with the server failed.
enum Failure {
    /// Reconnect and resend.
    Retriable(String),
    /// Report to the caller.
    Fatal(ClientError),
}

pub struct Producer {
    addr: String,
    options: ProducerOptions,
    link: Option<Link>,
    /// Set while a future is doing I/O on `link`; still set at the next call means the future
    /// was dropped mid-frame and the link is unusable.
    link_busy: bool,
    welcome: Welcome,
    producer_last_seq_at_connect: u64,
    next_seq: u64,
    in_flight: VecDeque<InFlight>,
    ready: VecDeque<Result<Ack, ClientError>>,
    /// Failed connections since the last ack; bounds retries.
    failures: u32,
    last_failure: String,
}

impl Producer {
    /// Connects and handshakes (retrying like any reconnect). The first sequence sent is the
    /// server's `producer_last_seq + 1`, so a restarted producer continues where it left off.
    pub async fn connect(addr: &str, options: ProducerOptions) -> Result<Producer, ClientError> {
        if options.api_key.len() > u16::MAX as usize {
            return Err(ClientError::InvalidArgument(
                "api key exceeds 65535 bytes".into(),
            ));
        }
        let welcome = Welcome {
            version: 0,
            producer_last_seq: 0,
            frame_bytes_max: 0,
            batch_events_max: 0,
        };
        let mut producer = Producer {
            addr: addr.to_string(),
            options,
            link: None,
            link_busy: false,
            welcome,
            producer_last_seq_at_connect: 0,
            next_seq: 1,
            in_flight: VecDeque::new(),
            ready: VecDeque::new(),
            failures: 0,
            last_failure: String::new(),
        };
        producer.ensure_link().await?;
        producer.producer_last_seq_at_connect = producer.welcome.producer_last_seq;
        producer.next_seq = producer.welcome.producer_last_seq + 1;
        Ok(producer)
    }

    pub fn producer_last_seq_at_connect(&self) -> u64 {
        self.producer_last_seq_at_connect
    }

    /// Batches sent and not yet acknowledged or rejected.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Encodes and sends a batch; waits while `inflight_max` batches are unacknowledged.
    /// Returns its seq. On `Err` the batch was not sent (a `Rejected` here is about an earlier
    /// batch: send this one again).
    pub async fn send(&mut self, table: &str, batch: &Batch) -> Result<u64, ClientError> {
        self.check_table(table)?;
        self.check_rows(batch.rows())?;
        let seq = self.next_seq;
        let mut out = Vec::new();
        let start = frame::begin_frame(&mut out);
        frame::put_batch_prefix(&mut out, seq, table);
        encode_batch_compact(batch, &mut out);
        self.check_frame(out.len() - start)?;
        frame::finish_frame(&mut out, start);
        self.submit(seq, Bytes::from(out)).await
    }

    /// Like [`Producer::send`] for a batch already encoded (by `encode_batch_compact` or
    /// `encode_batch`) with `rows` rows.
    pub async fn send_encoded(
        &mut self,
        table: &str,
        encoded_batch: Bytes,
        rows: u32,
    ) -> Result<u64, ClientError> {
        self.check_table(table)?;
        self.check_rows(rows as usize)?;
        let seq = self.next_seq;
        let mut out =
            Vec::with_capacity(frame::FRAME_HEADER_BYTES + 11 + table.len() + encoded_batch.len());
        let start = frame::begin_frame(&mut out);
        frame::put_batch_prefix(&mut out, seq, table);
        out.extend_from_slice(&encoded_batch);
        self.check_frame(out.len() - start)?;
        frame::finish_frame(&mut out, start);
        self.submit(seq, Bytes::from(out)).await
    }

    /// The next acknowledgement (or rejection) in sequence order; waits for it.
    pub async fn next_ack(&mut self) -> Result<Ack, ClientError> {
        while self.ready.is_empty() {
            if self.in_flight.is_empty() {
                return Err(ClientError::Idle);
            }
            self.read_reply().await?;
        }
        self.ready.pop_front().unwrap_or(Err(ClientError::Idle))
    }

    /// Sends a batch and waits for its own ack; earlier acks stay queued for `next_ack`.
    pub async fn send_and_wait(&mut self, table: &str, batch: &Batch) -> Result<Ack, ClientError> {
        let seq = self.send(table, batch).await?;
        loop {
            if let Some(position) = self.ready.iter().position(|r| reply_seq(r) == Some(seq)) {
                return self
                    .ready
                    .remove(position)
                    .unwrap_or(Err(ClientError::Idle));
            }
            self.read_reply().await?;
        }
    }

    /// Waits until nothing is in flight and returns every unread ack. If a batch was
    /// rejected, returns the first rejection instead and keeps the other acks for `next_ack`.
    pub async fn flush(&mut self) -> Result<Vec<Ack>, ClientError> {
        while !self.in_flight.is_empty() {
            self.read_reply().await?;
        }
        self.take_rejection()?;
        Ok(self.ready.drain(..).filter_map(Result::ok).collect())
    }

    fn check_table(&self, table: &str) -> Result<(), ClientError> {
        if table.is_empty() || table.len() > TABLE_NAME_BYTES_MAX {
            let message = format!(
                "table name of {} bytes is outside 1..={TABLE_NAME_BYTES_MAX}",
                table.len()
            );
            return Err(ClientError::InvalidArgument(message));
        }
        Ok(())
    }

    fn check_rows(&self, rows: usize) -> Result<(), ClientError> {
        let limit = self.welcome.batch_events_max as usize;
        if rows > limit {
            return Err(ClientError::BatchTooLarge(format!(
                "{rows} events, the server accepts {limit}"
            )));
        }
        Ok(())
    }

    fn check_frame(&self, frame_bytes: usize) -> Result<(), ClientError> {
        let body_bytes = frame_bytes - frame::FRAME_HEADER_BYTES;
        let limit = self.welcome.frame_bytes_max as usize;
        if body_bytes > limit {
            return Err(ClientError::BatchTooLarge(format!(
                "{body_bytes} byte frame, the server accepts {limit}"
            )));
        }
        Ok(())
    }

    /// Makes room, records the batch as in flight and writes it (a failed write is retried by
    /// the next reconnect, so it is not an error here).
    async fn submit(&mut self, seq: u64, frame: Bytes) -> Result<u64, ClientError> {
        while self.in_flight.len() >= self.options.inflight_max.max(1) {
            self.read_reply().await?;
        }
        self.take_rejection()?;
        self.ensure_link().await?;
        self.in_flight.push_back(InFlight {
            seq,
            frame: frame.clone(),
            first_sent: Instant::now(),
        });
        self.next_seq = seq + 1;
        if let Err(e) = self.write_frame(&frame).await {
            self.drop_link(e);
        }
        Ok(seq)
    }

    fn take_rejection(&mut self) -> Result<(), ClientError> {
        match self.ready.iter().position(Result::is_err) {
            Some(position) => match self.ready.remove(position) {
                Some(Err(e)) => Err(e),
                _ => Ok(()),
            },
            None => Ok(()),
        }
    }

    /// Reads one reply (reconnecting as needed) and files it into `ready`.
    async fn read_reply(&mut self) -> Result<(), ClientError> {
        loop {
            self.ensure_link().await?;
            match self.read_one().await {
                Ok(()) => return Ok(()),
                Err(Failure::Retriable(reason)) => self.drop_link(reason),
                Err(Failure::Fatal(e)) => {
                    self.drop_link(e.to_string());
                    return Err(e);
                }
            }
        }
    }

    async fn read_one(&mut self) -> Result<(), Failure> {
        let timeout = Duration::from_millis(self.options.ack_timeout_ms);
        let Some(link) = self.link.as_mut() else {
            return Err(Failure::Retriable("not connected".into()));
        };
        self.link_busy = true;
        let read = tokio::time::timeout(
            timeout,
            frame::read_frame(&mut link.read_half, &mut link.body, SERVER_BODY_BYTES_MAX),
        )
        .await;
        self.link_busy = false;
        match read {
            Err(_elapsed) => return Err(Failure::Retriable(format!("no ack within {timeout:?}"))),
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => return Err(Failure::Retriable("server closed the connection".into())),
            Ok(Err(e)) => return Err(Failure::Retriable(e.to_string())),
        }
        let body = std::mem::take(&mut link.body);
        let result = self.apply_frame(&body);
        if let Some(link) = self.link.as_mut() {
            link.body = body;
        }
        result
    }

    fn apply_frame(&mut self, body: &[u8]) -> Result<(), Failure> {
        let frame =
            decode_body(body).map_err(|e| protocol(format!("bad frame from server: {e}")))?;
        match frame {
            Frame::Ack(ack) => self.apply_ack(&ack),
            Frame::Error(error) => self.apply_error(&error),
            other => Err(protocol(format!("unexpected {} frame", other.type_name()))),
        }
    }

    fn apply_ack(&mut self, ack: &AckFrame) -> Result<(), Failure> {
        let Some(front) = self.in_flight.front() else {
            return Err(protocol(format!(
                "ack for seq {} with nothing in flight",
                ack.seq
            )));
        };
        if front.seq != ack.seq {
            return Err(protocol(format!(
                "ack for seq {}, expected seq {}",
                ack.seq, front.seq
            )));
        }
        let latency = front.first_sent.elapsed();
        self.in_flight.pop_front();
        self.failures = 0;
        if self.ready.len() >= ACKS_UNREAD_MAX {
            if let Some(position) = self.ready.iter().position(Result::is_ok) {
                self.ready.remove(position);
            }
        }
        self.ready.push_back(Ok(Ack {
            seq: ack.seq,
            lsn: ack.lsn,
            events_accepted: ack.events_accepted,
            events_deduplicated: ack.events_deduplicated,
            duplicate_batch: ack.flags & ACK_FLAG_DUPLICATE_BATCH != 0,
            latency,
        }));
        Ok(())
    }

    /// Every error frame ends the connection. Retriable codes reconnect; a final code about
    /// the oldest in-flight batch rejects just that batch.
    fn apply_error(&mut self, error: &ErrorFrame<'_>) -> Result<(), Failure> {
        let Some(code) = ErrorCode::from_u16(error.code) else {
            return Err(protocol(format!(
                "unknown error code {}: {}",
                error.code, error.message
            )));
        };
        self.drop_link(format!("{code}: {}", error.message));
        if code.is_retriable() {
            // Counts as a failed attempt: the next connection waits out the backoff, so a server
            // that keeps refusing (overloaded, poisoned WAL) is not hammered by reconnects.
            self.failures += 1;
            return Err(Failure::Retriable(format!("{code}: {}", error.message)));
        }
        let rejected = ClientError::Rejected {
            seq: error.seq,
            code,
            message: error.message.to_string(),
        };
        match self.in_flight.front() {
            Some(front) if error.seq != 0 && front.seq == error.seq => {
                self.in_flight.pop_front();
                self.ready.push_back(Err(rejected));
                Ok(())
            }
            _ if error.seq == 0 => Err(Failure::Fatal(rejected)),
            _ => Err(protocol(format!(
                "error for seq {} which is not the oldest in flight",
                error.seq
            ))),
        }
    }

    async fn write_frame(&mut self, frame: &[u8]) -> Result<(), String> {
        let timeout = Duration::from_millis(self.options.ack_timeout_ms);
        let Some(link) = self.link.as_mut() else {
            return Err("not connected".into());
        };
        self.link_busy = true;
        let written = tokio::time::timeout(timeout, link.write_half.write_all(frame)).await;
        self.link_busy = false;
        match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("write batch: {e}")),
            Err(_elapsed) => Err(format!("write batch: server did not read for {timeout:?}")),
        }
    }

    fn drop_link(&mut self, reason: String) {
        if self.link.take().is_some() {
            tracing::debug!(addr = %self.addr, %reason, "ingest connection dropped");
        }
        self.link_busy = false;
        self.last_failure = reason;
    }

    /// Returns with a live, handshaken link on which every in-flight frame has been resent in
    /// order; reconnects with backoff as needed.
    async fn ensure_link(&mut self) -> Result<(), ClientError> {
        if self.link_busy {
            self.drop_link("an earlier call was cancelled mid-frame".into());
        }
        while self.link.is_none() {
            if self.failures >= self.options.reconnect_attempts_max {
                let attempts = self.failures;
                // Let the next call start a fresh round of attempts.
                self.failures = 0;
                return Err(ClientError::RetriesExhausted {
                    attempts,
                    last_error: self.last_failure.clone(),
                });
            }
            if self.failures > 0 {
                tokio::time::sleep(self.backoff()).await;
            }
            match self.open_link().await {
                Ok(()) => {}
                Err(Failure::Retriable(reason)) => {
                    self.failures += 1;
                    self.drop_link(reason);
                }
                Err(Failure::Fatal(e)) => return Err(e),
            }
        }
        Ok(())
    }

    async fn open_link(&mut self) -> Result<(), Failure> {
        let timeout = Duration::from_millis(self.options.connect_timeout_ms);
        let (link, welcome) = tokio::time::timeout(timeout, self.handshake())
            .await
            .map_err(|_| {
                Failure::Retriable(format!("connect and handshake took over {timeout:?}"))
            })??;
        if welcome.producer_last_seq >= self.next_seq && self.next_seq > 1 {
            // Another producer used this id: never reuse a seq the server considers applied.
            tracing::warn!(
                producer_id = self.options.producer_id,
                "server is ahead of this producer's sequence"
            );
            self.next_seq = welcome.producer_last_seq + 1;
        }
        self.welcome = welcome;
        self.link = Some(link);
        if self.in_flight.is_empty() {
            self.failures = 0;
        }
        self.resend_in_flight().await.map_err(Failure::Retriable)
    }

    async fn resend_in_flight(&mut self) -> Result<(), String> {
        let frames: Vec<Bytes> = self.in_flight.iter().map(|f| f.frame.clone()).collect();
        for frame in frames {
            self.write_frame(&frame).await?;
        }
        Ok(())
    }

    async fn handshake(&self) -> Result<(Link, Welcome), Failure> {
        let stream = TcpStream::connect(&self.addr)
            .await
            .map_err(connect_failure)?;
        let _ = stream.set_nodelay(true);
        let (mut read_half, mut write_half) = stream.into_split();
        let mut out = Vec::new();
        let hello = Hello {
            version: PROTOCOL_VERSION,
            producer_id: self.options.producer_id,
            api_key: &self.options.api_key,
        };
        encode_frame(&Frame::Hello(hello), &mut out);
        write_half
            .write_all(&out)
            .await
            .map_err(|e| Failure::Retriable(format!("send hello: {e}")))?;
        let mut body = Vec::new();
        match frame::read_frame(&mut read_half, &mut body, SERVER_BODY_BYTES_MAX).await {
            Ok(true) => {}
            Ok(false) => {
                return Err(Failure::Retriable(
                    "server closed the connection during handshake".into(),
                ))
            }
            Err(e) => return Err(Failure::Retriable(format!("read welcome: {e}"))),
        }
        let welcome = welcome_from(&body)?;
        Ok((
            Link {
                read_half,
                write_half,
                body,
            },
            welcome,
        ))
    }

    fn backoff(&self) -> Duration {
        let initial = self.options.reconnect_backoff_initial_ms.max(1);
        let exponent = self.failures.saturating_sub(1).min(20);
        let ceiling = initial
            .saturating_mul(1 << exponent)
            .min(self.options.reconnect_backoff_max_ms.max(initial));
        // Jitter to between half and all of the ceiling, so producers cut off together do not
        // reconnect together.
        let random = RandomState::new().hash_one(Instant::now());
        Duration::from_millis(ceiling / 2 + random % (ceiling / 2 + 1))
    }
}

fn welcome_from(body: &[u8]) -> Result<Welcome, Failure> {
    match decode_body(body) {
        Ok(Frame::Welcome(w)) if w.version == PROTOCOL_VERSION => Ok(w),
        Ok(Frame::Welcome(w)) => Err(protocol(format!(
            "server answered with version {}",
            w.version
        ))),
        Ok(Frame::Error(e)) => match ErrorCode::from_u16(e.code) {
            Some(code) if code.is_retriable() => {
                Err(Failure::Retriable(format!("{code}: {}", e.message)))
            }
            Some(code) => Err(Failure::Fatal(ClientError::Rejected {
                seq: 0,
                code,
                message: e.message.to_string(),
            })),
            None => Err(protocol(format!(
                "unknown error code {}: {}",
                e.code, e.message
            ))),
        },
        Ok(other) => Err(protocol(format!(
            "expected welcome, got {}",
            other.type_name()
        ))),
        Err(e) => Err(protocol(format!("bad welcome: {e}"))),
    }
}

fn connect_failure(e: std::io::Error) -> Failure {
    match e.kind() {
        std::io::ErrorKind::InvalidInput => Failure::Fatal(ClientError::Io(e)),
        _ => Failure::Retriable(format!("connect: {e}")),
    }
}

fn protocol(message: String) -> Failure {
    Failure::Fatal(ClientError::Protocol(message))
}

fn reply_seq(reply: &Result<Ack, ClientError>) -> Option<u64> {
    match reply {
        Ok(ack) => Some(ack.seq),
        Err(ClientError::Rejected { seq, .. }) => Some(*seq),
        Err(_) => None,
    }
}
