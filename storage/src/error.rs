//! Typed errors of the storage layer. Operating errors only: bugs are assertions.

use std::io;
use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum StorageError {
    /// An I/O operation failed. `context` is a verb phrase ("write segment 12 column ts").
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// Bytes on disk fail a checksum or do not decode. Names the file and offset.
    #[error("corrupt file {path}: offset {offset}: {reason}", path = path.display())]
    Corrupt { path: PathBuf, offset: u64, reason: String },
}

impl StorageError {
    pub fn io(context: impl Into<String>, source: io::Error) -> StorageError {
        StorageError::Io { context: context.into(), source }
    }

    pub fn corrupt(path: impl Into<PathBuf>, offset: u64, reason: impl Into<String>) -> StorageError {
        StorageError::Corrupt { path: path.into(), offset, reason: reason.into() }
    }
}
