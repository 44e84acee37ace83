//! The WAL's operating errors.
//!
//! One `thiserror` enum, [`WalError`], for everything the WAL returns: I/O failures, corruption
//! found by recovery, a poisoned log, oversized records, use after shutdown and replay failures.
//! It is `Clone` because one failure (a failed fdatasync) is handed to every waiting callback, so
//! I/O errors are kept as message + errno rather than as `std::io::Error`.
//!
//! Bugs are not errors: broken invariants are `assert!`s elsewhere in the crate.

use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum WalError {
    /// A file operation failed. `context` is a verb phrase ("create wal segment wal-…log").
    #[error("{context}: {message}")]
    Io { context: String, message: String, errno: Option<i32> },
    /// Recovery found damage that is not a torn tail: acknowledged records may be lost.
    #[error("wal segment {} is corrupt at offset {offset}: {reason}", path.display())]
    Corrupt { path: PathBuf, offset: u64, reason: String },
    /// A write or fdatasync failed earlier; the WAL refuses all further work until restarted.
    #[error("wal is poisoned after a {0}; restart the server")]
    Poisoned(String),
    #[error("wal record of {bytes} bytes exceeds record_bytes_max of {max} bytes")]
    RecordTooLarge { bytes: usize, max: usize },
    #[error("wal is shut down")]
    ShutDown,
    /// The replay callback given to `Wal::open` rejected a record.
    #[error("replay wal {0}")]
    Replay(String),
}

impl WalError {
    /// Wraps an `io::Error` with a verb-phrase context.
    pub(crate) fn io(context: impl Into<String>, error: &io::Error) -> WalError {
        WalError::Io { context: context.into(), message: error.to_string(), errno: error.raw_os_error() }
    }

    pub(crate) fn corrupt(path: &Path, offset: u64, reason: impl Into<String>) -> WalError {
        WalError::Corrupt { path: path.to_path_buf(), offset, reason: reason.into() }
    }
}

/// The file name alone, for short messages ("wal-00000000000000000003.log").
pub(crate) fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests panic with the error
mod tests {
    use super::*;

    #[test]
    fn messages_are_postgres_style() {
        let err = WalError::Poisoned(
            "failed fdatasync of wal-00000000000000000003.log: Input/output error (os error 5)".into(),
        );
        assert_eq!(
            err.to_string(),
            "wal is poisoned after a failed fdatasync of wal-00000000000000000003.log: \
             Input/output error (os error 5); restart the server"
        );
        let io_err = WalError::io("create wal segment x", &io::Error::from_raw_os_error(28));
        assert!(matches!(io_err, WalError::Io { errno: Some(28), .. }));
        assert!(io_err.to_string().starts_with("create wal segment x: No space left on device"));
        let too_large = WalError::RecordTooLarge { bytes: 10, max: 5 };
        assert_eq!(too_large.to_string(), "wal record of 10 bytes exceeds record_bytes_max of 5 bytes");
    }
}
