//! Types shared by every layer of Lookback that touches bytes: the typed table schema, the
//! columnar [`Batch`] that flows from the ingest protocol through the WAL into the memtable and
//! segments, the batch codec (one encoding for the wire and the WAL, so a batch is decoded once
//! and logged as received), and a bounds-checked [`ByteReader`] for decoding untrusted input.
//!
//! This crate knows nothing of files, sockets or SQL. It is deliberately small so the ingest
//! client library can depend on it without pulling in the storage engine.

pub mod batch;
pub mod batch_codec;
pub mod bytes;
pub mod faults;
pub mod powerloss;
pub mod schema;
pub mod time;

pub use batch::{Batch, BatchBuilder, Column, ColumnValues, TextValues, Value};
pub use batch_codec::{decode_batch, encode_batch, encode_batch_compact, CodecError, DecodeLimits};
pub use bytes::{ByteReader, ReadError};
pub use faults::{FaultAction, FaultOp, FaultRule, Faults};
pub use schema::{ColumnDef, ColumnType, Schema, SchemaError};

/// Log sequence number: assigned by the WAL to every record, strictly increasing, never reused.
/// LSN 0 means "nothing": the first record has LSN 1.
pub type Lsn = u64;

/// CRC-32 (IEEE) used by every checksum in Lookback's formats.
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}
