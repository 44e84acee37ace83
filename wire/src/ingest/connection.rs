//! One ingest connection: handshake, then a reader and a writer running side by side.
//!
//! The reader decodes frames strictly in order, validates each batch against its table's
//! schema, awaits `IngestSink::admit` (the backpressure point: nothing more is read while it
//! waits) and pushes the batch's durability future into a bounded queue of
//! `inflight_batches_max` entries (when full the reader stops reading: backpressure again).
//! The writer awaits those futures in queue order and writes one Ack per batch, so acks are in
//! sequence order. Any error becomes an Error frame queued behind the acks already owed; the
//! writer sends it, closes its half, and the connection ends. Nothing after a failed batch is
//! admitted, which is why a client may simply resend everything unacknowledged.
//!
//! Before dropping the socket we read and discard what the peer still sends (for a bounded
//! time): closing a socket with unread input makes the kernel send a reset, which can destroy
//! the Error frame before the peer has read it.

use crate::ingest::error::{ErrorCode, IngestError};
use crate::ingest::frame::{
    self, decode_body, encode_frame, AckFrame, ErrorFrame, Frame, FrameError, ReadFrameError,
    Welcome, ACK_FLAG_DUPLICATE_BATCH, HELLO_BODY_BYTES_MAX, PROTOCOL_VERSION,
};
use crate::ingest::server::{shutdown_requested, DurableFuture, IngestAck, IngestRequest, Shared};
use lookback_common::{decode_batch, DecodeLimits};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

/// How long a closing connection keeps draining the peer's input after its last frame.
const CLOSE_LINGER_MS: u64 = 1_000;

/// What the writer owes the client, in order.
enum Reply {
    /// An admitted batch: ack it once its durability future resolves.
    Pending { seq: u64, durable: DurableFuture },
    /// A final error: send it, then close.
    Fail { seq: u64, error: IngestError },
}

/// Serves one accepted connection until it closes. Never panics on peer input.
pub(crate) async fn run(
    stream: TcpStream,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (mut read_half, mut write_half) = stream.into_split();
    let producer_id = match handshake(&mut read_half, &mut write_half, &shared, &mut shutdown).await
    {
        Ok(producer_id) => producer_id,
        Err(Some(error)) => {
            return close_with_error(read_half, write_half, 0, &error, &shared).await
        }
        Err(None) => return,
    };
    let (replies_tx, replies_rx) = mpsc::channel(shared.config.inflight_batches_max.max(1));
    // The writer drops `writer_alive` when it ends, which tells the reader to stop.
    let (writer_alive, writer_done) = watch::channel(());
    let reader = read_side(
        read_half,
        replies_tx,
        producer_id,
        &shared,
        shutdown,
        writer_done,
    );
    let writer = write_side(write_half, replies_rx, &shared, writer_alive);
    tokio::join!(reader, writer);
}

/// Sends `error` to a connection refused before its handshake (connections_max reached).
pub(crate) async fn reject(stream: TcpStream, error: IngestError, shared: Arc<Shared>) {
    let (read_half, write_half) = stream.into_split();
    close_with_error(read_half, write_half, 0, &error, &shared).await;
}

/// Reads Hello, answers Welcome. `Err(None)`: the peer left; `Err(Some(e))`: tell it `e`.
async fn handshake(
    read_half: &mut OwnedReadHalf,
    write_half: &mut OwnedWriteHalf,
    shared: &Shared,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<u64, Option<IngestError>> {
    let mut body = Vec::new();
    let timeout_ms = shared.config.handshake_timeout_ms;
    let read = tokio::select! {
        biased;
        () = shutdown_requested(shutdown) => return Err(Some(shutting_down())),
        read = tokio::time::timeout(
            Duration::from_millis(timeout_ms),
            frame::read_frame(read_half, &mut body, HELLO_BODY_BYTES_MAX),
        ) => read,
    };
    match read {
        Err(_elapsed) => {
            return Err(Some(IngestError::malformed(format!(
                "no hello within {timeout_ms} ms"
            ))))
        }
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => return Err(None),
        Ok(Err(e)) => return Err(read_failure(e)),
    }
    shared
        .stats
        .bytes
        .fetch_add(body.len() as u64, Ordering::Relaxed);
    let hello = match decode_body(&body) {
        Ok(Frame::Hello(hello)) => hello,
        Ok(other) => {
            return Err(Some(IngestError::malformed(format!(
                "expected hello, got {}",
                other.type_name()
            ))))
        }
        Err(FrameError::UnsupportedVersion(v)) => {
            let message = format!(
                "protocol version {v} is not supported, this server speaks {PROTOCOL_VERSION}"
            );
            return Err(Some(IngestError::new(
                ErrorCode::UnsupportedVersion,
                message,
            )));
        }
        Err(e) => return Err(Some(IngestError::malformed(e.to_string()))),
    };
    let producer_id = hello.producer_id;
    let welcome = welcome_for(producer_id, shared);
    let mut out = Vec::new();
    encode_frame(&Frame::Welcome(welcome), &mut out);
    write_half.write_all(&out).await.map_err(|_| None)?;
    Ok(producer_id)
}

fn welcome_for(producer_id: u64, shared: &Shared) -> Welcome {
    let producer_last_seq = match producer_id {
        0 => 0,
        id => shared.sink.producer_last_seq(id),
    };
    Welcome {
        version: PROTOCOL_VERSION,
        producer_last_seq,
        frame_bytes_max: u32::try_from(shared.config.frame_bytes_max).unwrap_or(u32::MAX),
        batch_events_max: u32::try_from(shared.config.batch_events_max).unwrap_or(u32::MAX),
    }
}

fn shutting_down() -> IngestError {
    IngestError::new(ErrorCode::ShuttingDown, "server is shutting down")
}

/// The error frame owed for a failed read, if the peer can still be told anything.
fn read_failure(e: ReadFrameError) -> Option<IngestError> {
    match e {
        ReadFrameError::Io(_) => None,
        ReadFrameError::ClosedMidFrame => {
            Some(IngestError::malformed("connection closed mid-frame"))
        }
        ReadFrameError::Frame(e) => Some(IngestError::malformed(e.to_string())),
    }
}

/// Runs the read loop until it ends or the writer is gone, queues the final error if any,
/// then drains the peer's input so closing does not reset the connection.
async fn read_side(
    mut read_half: OwnedReadHalf,
    replies: mpsc::Sender<Reply>,
    producer_id: u64,
    shared: &Shared,
    mut shutdown: watch::Receiver<bool>,
    mut writer_done: watch::Receiver<()>,
) {
    let failure = tokio::select! {
        failure = read_batches(&mut read_half, &replies, producer_id, shared, &mut shutdown) => failure,
        _ = writer_done.changed() => None,
    };
    if let Some((seq, error)) = failure {
        // Queued behind the acks already owed; fails only if the writer is gone.
        let _ = replies.send(Reply::Fail { seq, error }).await;
    }
    drop(replies);
    let linger = async {
        let _ = writer_done.changed().await;
        tokio::time::sleep(Duration::from_millis(CLOSE_LINGER_MS)).await;
    };
    tokio::select! {
        () = discard_until_eof(&mut read_half) => {}
        () = linger => {}
    }
}

/// Reads, validates and admits batches in order. Returns the error to send, if any; `None`
/// when the peer closed or the socket failed.
async fn read_batches(
    read_half: &mut OwnedReadHalf,
    replies: &mpsc::Sender<Reply>,
    producer_id: u64,
    shared: &Shared,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<(u64, IngestError)> {
    let mut body = Vec::new();
    let mut last_seq = 0u64;
    loop {
        let read = tokio::select! {
            biased;
            () = shutdown_requested(shutdown) => return Some((0, shutting_down())),
            read = frame::read_frame(read_half, &mut body, shared.config.frame_bytes_max) => read,
        };
        match read {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => return read_failure(e).map(|error| (0, error)),
        }
        shared
            .stats
            .bytes
            .fetch_add(body.len() as u64, Ordering::Relaxed);
        let reply = match admit_frame(&body, producer_id, &mut last_seq, shared).await {
            Ok(reply) => reply,
            Err(failure) => return Some(failure),
        };
        if replies.send(reply).await.is_err() {
            return None;
        }
    }
}

/// Decodes one frame that must be a batch, validates it and admits it. On failure returns the
/// seq the error is about (0 if unknown) and the error; nothing reached the sink.
async fn admit_frame(
    body: &[u8],
    producer_id: u64,
    last_seq: &mut u64,
    shared: &Shared,
) -> Result<Reply, (u64, IngestError)> {
    let frame = decode_body(body).map_err(|e| (0, IngestError::malformed(e.to_string())))?;
    let Frame::Batch(batch_frame) = frame else {
        return Err((
            0,
            IngestError::malformed(format!("expected batch, got {}", frame.type_name())),
        ));
    };
    let seq = batch_frame.seq;
    if seq <= *last_seq {
        let message = format!(
            "batch seq {seq} does not follow seq {last_seq} on this connection",
            last_seq = *last_seq
        );
        return Err((seq, IngestError::malformed(message)));
    }
    *last_seq = seq;
    let table = batch_frame.table;
    let schema = shared.sink.schema(table).ok_or_else(|| {
        (
            seq,
            IngestError::new(
                ErrorCode::UnknownTable,
                format!("table {table:?} does not exist"),
            ),
        )
    })?;
    let limits = DecodeLimits {
        rows_max: shared.config.batch_events_max,
        text_value_bytes_max: shared.config.text_value_bytes_max,
    };
    let batch = decode_batch(batch_frame.batch, &schema, &limits).map_err(|e| (seq, e.into()))?;
    let request = IngestRequest {
        producer_id,
        seq,
        table: table.to_string(),
        batch,
        encoded: batch_frame.batch,
    };
    let timeout_ms = shared.config.admit_timeout_ms;
    match tokio::time::timeout(
        Duration::from_millis(timeout_ms),
        shared.sink.admit(request),
    )
    .await
    {
        Ok(Ok(durable)) => Ok(Reply::Pending { seq, durable }),
        Ok(Err(error)) => Err((seq, error)),
        Err(_elapsed) => {
            let message = format!("batch not admitted within {timeout_ms} ms");
            Err((seq, IngestError::new(ErrorCode::Overloaded, message)))
        }
    }
}

/// Writes one Ack or Error per reply, in order. Ends after the first error frame, on a write
/// failure, or when the reader is gone and every owed reply was written.
async fn write_side(
    mut write_half: OwnedWriteHalf,
    mut replies: mpsc::Receiver<Reply>,
    shared: &Shared,
    _alive: watch::Sender<()>,
) {
    let mut out = Vec::with_capacity(64);
    while let Some(reply) = replies.recv().await {
        out.clear();
        let (seq, result) = match reply {
            Reply::Pending { seq, durable } => (seq, durable.await),
            Reply::Fail { seq, error } => (seq, Err(error)),
        };
        let acked_events = match &result {
            Ok(ack) => Some(encode_ack(seq, ack, &mut out)),
            Err(error) => encode_error(seq, error, &mut out),
        };
        if write_half.write_all(&out).await.is_err() {
            return;
        }
        let stats = &shared.stats;
        let Some(events) = acked_events else {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            let _ = write_half.shutdown().await;
            return;
        };
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.events.fetch_add(u64::from(events), Ordering::Relaxed);
    }
}

/// Appends an Ack frame; returns the events it reports as accepted.
fn encode_ack(seq: u64, ack: &IngestAck, out: &mut Vec<u8>) -> u32 {
    let flags = if ack.duplicate_batch {
        ACK_FLAG_DUPLICATE_BATCH
    } else {
        0
    };
    let frame = AckFrame {
        seq,
        lsn: ack.lsn,
        events_accepted: ack.events_accepted,
        events_deduplicated: ack.events_deduplicated,
        flags,
    };
    encode_frame(&Frame::Ack(frame), out);
    ack.events_accepted
}

/// Appends an Error frame. Returns `None` (no events acknowledged) for symmetry with acks.
fn encode_error(seq: u64, error: &IngestError, out: &mut Vec<u8>) -> Option<u32> {
    let message = frame::truncate_message(&error.message);
    let frame = ErrorFrame {
        seq,
        code: error.code.as_u16(),
        message,
    };
    encode_frame(&Frame::Error(frame), out);
    None
}

/// Sends one error frame, closes our half, and drains the peer's input for a bounded time.
async fn close_with_error(
    mut read_half: OwnedReadHalf,
    mut write_half: OwnedWriteHalf,
    seq: u64,
    error: &IngestError,
    shared: &Shared,
) {
    let mut out = Vec::new();
    encode_error(seq, error, &mut out);
    if write_half.write_all(&out).await.is_ok() {
        shared.stats.errors.fetch_add(1, Ordering::Relaxed);
    }
    let _ = write_half.shutdown().await;
    let linger = Duration::from_millis(CLOSE_LINGER_MS);
    let _ = tokio::time::timeout(linger, discard_until_eof(&mut read_half)).await;
}

/// Reads and drops input until EOF or an error, so closing does not reset the connection.
async fn discard_until_eof(read_half: &mut OwnedReadHalf) {
    let mut scratch = [0u8; 4096];
    while let Ok(n) = read_half.read(&mut scratch).await {
        if n == 0 {
            return;
        }
    }
}
