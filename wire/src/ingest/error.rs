//! Error codes of the ingest protocol and the error type the sink and server share.
//!
//! Codes are part of the wire format: they are `u16` values that never change meaning and are
//! never renumbered. Each code is either retriable (the client reconnects and resends the same
//! sequence numbers) or final for the batch it names (the client reports it to the caller).

use lookback_common::CodecError;
use std::fmt;

/// Why a batch or a connection was refused. The discriminant is the on-wire code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    /// Bad framing, CRC, frame type, field or batch encoding. Final.
    MalformedFrame = 1,
    /// The batch does not match the table's schema (column count, types, nulls). Final.
    SchemaMismatch = 2,
    /// A value exceeds a size limit (text_value_bytes_max). Final.
    ValueTooLarge = 3,
    /// The server could not admit the batch in time or has no room for the connection. Retriable.
    Overloaded = 4,
    /// The server is shutting down. Retriable (against the restarted server).
    ShuttingDown = 5,
    /// The client's protocol version is not supported. Final.
    UnsupportedVersion = 6,
    /// The batch names a table the server does not have. Final.
    UnknownTable = 7,
    /// Credentials were refused. Final.
    Unauthenticated = 8,
    /// The server failed to make the batch durable. Retriable.
    StorageFailure = 9,
    /// The batch has more events than batch_events_max. Final.
    TooManyEvents = 10,
    /// The server's disk is full: nothing of the batch was logged. Retriable (once an operator
    /// frees space the server takes writes again, without a restart).
    DiskFull = 11,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 11] = [
        ErrorCode::MalformedFrame,
        ErrorCode::SchemaMismatch,
        ErrorCode::ValueTooLarge,
        ErrorCode::Overloaded,
        ErrorCode::ShuttingDown,
        ErrorCode::UnsupportedVersion,
        ErrorCode::UnknownTable,
        ErrorCode::Unauthenticated,
        ErrorCode::StorageFailure,
        ErrorCode::TooManyEvents,
        ErrorCode::DiskFull,
    ];

    /// The code for an on-wire value; `None` for values this version does not know.
    pub fn from_u16(code: u16) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_u16() == code)
    }

    pub fn as_u16(self) -> u16 {
        self as u16
    }

    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::MalformedFrame => "malformed_frame",
            ErrorCode::SchemaMismatch => "schema_mismatch",
            ErrorCode::ValueTooLarge => "value_too_large",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::UnknownTable => "unknown_table",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::StorageFailure => "storage_failure",
            ErrorCode::TooManyEvents => "too_many_events",
            ErrorCode::DiskFull => "disk_full",
        }
    }

    /// Whether a client should reconnect and resend (same sequence numbers) after this code.
    pub fn is_retriable(self) -> bool {
        matches!(
            self,
            ErrorCode::Overloaded | ErrorCode::ShuttingDown | ErrorCode::StorageFailure | ErrorCode::DiskFull
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An error the server reports to a producer in an error frame.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct IngestError {
    pub code: ErrorCode,
    pub message: String,
}

impl IngestError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> IngestError {
        IngestError {
            code,
            message: message.into(),
        }
    }

    pub fn malformed(message: impl Into<String>) -> IngestError {
        IngestError::new(ErrorCode::MalformedFrame, message)
    }
}

impl From<CodecError> for IngestError {
    fn from(e: CodecError) -> IngestError {
        let code = match &e {
            CodecError::Malformed(_) => ErrorCode::MalformedFrame,
            CodecError::SchemaMismatch(_) => ErrorCode::SchemaMismatch,
            CodecError::ValueTooLarge(_) => ErrorCode::ValueTooLarge,
            CodecError::TooManyRows { .. } => ErrorCode::TooManyEvents,
        };
        IngestError::new(code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_and_roundtrip() {
        let expected: Vec<u16> = (1..=11).collect();
        let actual: Vec<u16> = ErrorCode::ALL.iter().map(|c| c.as_u16()).collect();
        assert_eq!(actual, expected, "error codes are part of the wire format");
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_u16(code.as_u16()), Some(code));
        }
        assert_eq!(ErrorCode::from_u16(0), None);
        assert_eq!(ErrorCode::from_u16(12), None);
        assert!(ErrorCode::DiskFull.is_retriable(), "a full disk is retried once space is freed");
        assert_eq!(ErrorCode::Overloaded.to_string(), "overloaded");
    }

    #[test]
    fn codec_errors_map_to_codes() {
        let rows = CodecError::TooManyRows {
            rows: 5,
            rows_max: 4,
        };
        assert_eq!(IngestError::from(rows).code, ErrorCode::TooManyEvents);
        let bad = CodecError::Malformed("x".into());
        assert_eq!(IngestError::from(bad).code, ErrorCode::MalformedFrame);
        let err = IngestError::new(ErrorCode::UnknownTable, "no table t");
        assert_eq!(err.to_string(), "unknown_table: no table t");
    }
}
