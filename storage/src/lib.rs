//! Lookback's storage layer: the write path from an admitted batch to durable columnar
//! segments, and consistent snapshots for readers.
//!
//! - [`db`]: admission (sequence check, dedup, WAL append, memtable), flush, compaction,
//!   recovery and snapshots — the only module that coordinates the others.
//! - [`memtable`], [`segment`], [`manifest`]: the in-memory and on-disk representations.
//! - [`dedup`], [`producers`]: idempotency state.
//! - [`wal_record`]: what a WAL record's payload holds.
//!
//! It knows nothing of SQL or sockets (see docs/architecture.md).

pub mod db;
pub mod dedup;
pub mod error;
pub mod fsutil;
pub mod manifest;
mod memory;
pub use memory::{advise_huge_pages, populate_writable};
pub mod memtable;
pub mod producers;
mod sched;
pub mod segment;
pub mod sort;
mod sync;
pub mod wal_record;

pub use db::{AdmitOutcome, Db, DbError, DbOptions, DbStats, StorageGauges, TableSnapshot};
pub use error::StorageError;
