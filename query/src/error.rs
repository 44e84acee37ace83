//! Errors that carry their own PostgreSQL SQLSTATE.
//!
//! Why: most engine errors are DataFusion's and get a SQLSTATE from their kind (see the wire
//! crate's `sql_error`), but the statements Lookback implements itself (CREATE/DROP TABLE,
//! COPY) know exactly which condition they hit; they say so with a [`SqlError`], wrapped in
//! `DataFusionError::External` so it travels through DataFusion's error type unchanged.

use datafusion::error::DataFusionError;
use lookback_wal::WalError;
use std::{fmt, io};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlError {
    /// The five-character SQLSTATE, e.g. `42P07`.
    pub code: &'static str,
    pub message: String,
    pub hint: Option<String>,
}

impl SqlError {
    pub fn new(code: &'static str, message: impl Into<String>) -> SqlError {
        debug_assert_eq!(code.len(), 5, "SQLSTATEs are five characters");
        SqlError { code, message: message.into(), hint: None }
    }

    /// A bad argument value: PostgreSQL's invalid_parameter_value (22023), as a
    /// DataFusion error to return from planning or execution.
    pub fn invalid_parameter(message: impl Into<String>) -> DataFusionError {
        SqlError::new("22023", message).into()
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> SqlError {
        self.hint = Some(hint.into());
        self
    }

    /// The SQL error inside `error`, if it is (or wraps) one.
    pub fn find(error: &DataFusionError) -> Option<&SqlError> {
        match error.find_root() {
            DataFusionError::External(e) => e.downcast_ref::<SqlError>(),
            _ => None,
        }
    }
}

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SqlError {}

impl From<SqlError> for DataFusionError {
    fn from(e: SqlError) -> DataFusionError {
        DataFusionError::External(Box::new(e))
    }
}

/// The SQL error for a storage error met by a statement (names as PostgreSQL words them).
pub fn storage_error(e: lookback_storage::DbError) -> SqlError {
    use lookback_storage::DbError as E;
    match &e {
        E::UnknownTable(t) => SqlError::new("42P01", format!("relation \"{t}\" does not exist")),
        E::TableExists(t) => SqlError::new("42P07", format!("relation \"{t}\" already exists")),
        E::Refused(m) => SqlError::new("0A000", m),
        E::SchemaMismatch(m) => SqlError::new("42804", m),
        E::Overloaded(m) => SqlError::new("53000", format!("server overloaded, retry: {m}")),
        E::TooLarge(m) => SqlError::new("54000", m),
        E::ShuttingDown => SqlError::new("57P01", "the server is shutting down"),
        E::Corrupt(m) => SqlError::new("XX001", m),
        E::DiskFull(m) => SqlError::new("53100", m),
        E::Wal(WalError::Io { errno: Some(errno), .. }) if io::Error::from_raw_os_error(*errno).kind() == io::ErrorKind::StorageFull => {
            SqlError::new("53100", e.to_string())
        }
        E::Wal(WalError::Corrupt { .. }) => SqlError::new("XX001", e.to_string()),
        other => SqlError::new("58000", other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lookback_storage::{DbError, StorageError};

    #[test]
    fn storage_conditions_get_their_sqlstates() {
        let full = StorageError::io("write segment 3", io::Error::from_raw_os_error(28));
        assert_eq!(storage_error(DbError::from(full)).code, "53100");
        let wal_full = WalError::Io { context: "write wal".into(), message: "No space left on device".into(), errno: Some(28) };
        assert_eq!(storage_error(DbError::Wal(wal_full)).code, "53100");
        let other = StorageError::io("read segment 3", io::Error::from_raw_os_error(5));
        assert_eq!(storage_error(DbError::from(other)).code, "58000");
        let corrupt = StorageError::corrupt("/d/segments/1.seg", 16, "crc32 mismatch");
        let error = storage_error(DbError::from(corrupt));
        assert_eq!(error.code, "XX001");
        assert!(error.message.contains("1.seg") && error.message.contains("offset 16"), "{}", error.message);
    }
}
