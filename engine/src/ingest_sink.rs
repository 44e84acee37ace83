//! Connects the ingest protocol server to the storage write path: decoded batches are admitted
//! into the database, and acknowledgements wait for the WAL's group commit.

use lookback_common::Schema;
use lookback_storage::{Db, DbError};
use lookback_wire::ingest::{DurableFuture, ErrorCode, IngestAck, IngestError, IngestRequest, IngestSink};
use lookback_wire::BoxFuture;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct DbSink {
    db: Arc<Db>,
    admit_timeout: Duration,
}

/// How long to wait between admission attempts while memtables are full.
const ADMIT_RETRY_INTERVAL_MS: u64 = 2;

impl DbSink {
    pub fn new(db: Arc<Db>, admit_timeout: Duration) -> DbSink {
        DbSink { db, admit_timeout }
    }
}

pub fn ingest_error(e: DbError) -> IngestError {
    let code = match &e {
        DbError::UnknownTable(_) => ErrorCode::UnknownTable,
        DbError::SchemaMismatch(_) => ErrorCode::SchemaMismatch,
        DbError::Overloaded(_) => ErrorCode::Overloaded,
        DbError::ShuttingDown => ErrorCode::ShuttingDown,
        DbError::TooLarge(_) => ErrorCode::ValueTooLarge,
        DbError::DiskFull(_) => ErrorCode::DiskFull,
        DbError::Wal(lookback_wal::WalError::Io { errno: Some(errno), .. }) if *errno == libc::ENOSPC => ErrorCode::DiskFull,
        _ => ErrorCode::StorageFailure,
    };
    IngestError { code, message: e.to_string() }
}

impl IngestSink for DbSink {
    fn schema(&self, table: &str) -> Option<Arc<Schema>> {
        self.db.schema(table)
    }

    fn producer_last_seq(&self, producer_id: u64) -> u64 {
        self.db.producer_last_seq(producer_id)
    }

    fn admit<'a>(&'a self, request: IngestRequest<'a>) -> BoxFuture<'a, Result<DurableFuture, IngestError>> {
        Box::pin(async move {
            let deadline = Instant::now() + self.admit_timeout;
            while !self.db.has_memory_room() {
                if Instant::now() >= deadline {
                    return Err(IngestError {
                        code: ErrorCode::Overloaded,
                        message: "memtables are full and flushing is behind; retry later".into(),
                    });
                }
                tokio::time::sleep(Duration::from_millis(ADMIT_RETRY_INTERVAL_MS)).await;
            }
            let (tx, rx) = tokio::sync::oneshot::channel();
            let IngestRequest { producer_id, seq, table, batch, encoded } = request;
            // Admission may block briefly when the WAL queue is full (backpressure).
            let outcome = tokio::task::block_in_place(|| {
                self.db.admit_encoded(&table, producer_id, seq, batch, encoded, Box::new(move |r| drop(tx.send(r))))
            })
            .map_err(ingest_error)?;
            let durable: DurableFuture = Box::pin(async move {
                match rx.await {
                    Ok(Ok(lsn)) => Ok(IngestAck {
                        lsn,
                        events_accepted: outcome.accepted,
                        events_deduplicated: outcome.deduplicated,
                        duplicate_batch: outcome.duplicate_batch,
                    }),
                    Ok(Err(e)) => Err(ingest_error(e)),
                    Err(_) => Err(IngestError { code: ErrorCode::ShuttingDown, message: "the write path shut down".into() }),
                }
            });
            Ok(durable)
        })
    }
}
