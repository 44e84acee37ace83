//! Errors of the database layer (the write path and snapshots).

use crate::error::StorageError;
use lookback_wal::WalError;
use thiserror::Error;

#[derive(Debug, Error, Clone)]
pub enum DbError {
    #[error("table {0:?} does not exist")]
    UnknownTable(String),
    #[error("table {0:?} already exists")]
    TableExists(String),
    /// The table cannot be created or dropped (e.g. the built-in `events` table).
    #[error("{0}")]
    Refused(String),
    #[error("schema mismatch: {0}")]
    SchemaMismatch(String),
    /// Memtables are full because flushing is behind: retry later (backpressure).
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// The batch is too large to log as one record.
    #[error("batch too large: {0}")]
    TooLarge(String),
    #[error("the database is shutting down")]
    ShuttingDown,
    #[error("{0}")]
    Wal(#[from] WalError),
    #[error("{0}")]
    Storage(String),
    #[error("data directory {path} is locked by another lookback process")]
    Locked { path: String },
    #[error("{0}")]
    Corrupt(String),
    /// A write failed because the disk is full (ENOSPC).
    #[error("{0}")]
    DiskFull(String),
}

impl From<StorageError> for DbError {
    fn from(e: StorageError) -> DbError {
        match e {
            StorageError::Corrupt { .. } => DbError::Corrupt(e.to_string()),
            StorageError::Io { ref source, .. } if source.kind() == std::io::ErrorKind::StorageFull => {
                DbError::DiskFull(e.to_string())
            }
            other => DbError::Storage(other.to_string()),
        }
    }
}
