//! Lookback's write-ahead log: segmented, CRC-framed records with group commit through
//! io_uring or pwrite.
//!
//! Every ingested batch is appended here before it is acknowledged. [`Wal::append`] assigns the
//! next LSN (strictly increasing, first record ever = 1) and queues the payload; one writer
//! thread coalesces queued records into a group, writes it with one write + one fdatasync per
//! touched segment, then publishes [`Wal::durable_lsn`] and calls each record's callback in LSN
//! order. A failed write or fdatasync poisons the WAL for good (no retry: after a failed fsync
//! the page cache can no longer be trusted); restart to recover.
//!
//! On disk: `wal-{index:020}.log` segment files of exactly `segment_bytes`, pre-zeroed, each a
//! 32-byte header and packed records; see [`mod@format`] for byte layouts and the `recovery`
//! module for how a torn tail is told from corruption. `docs/format.md` has the same with diagrams.
//!
//! Crate layout: `buffers` (payload buffers reused across appends), `options` (configuration, limits), `format` (pure encode/decode), `io`
//! (pwrite and io_uring backends behind one trait), `segment_files` (naming, durable file
//! operations), `prepare` (background zeroing of the next segment), `recycle` (old segments
//! kept for reuse), `recovery`, `queue` (bounded append queue), `group_commit` (the commit
//! protocol), `sync` (its primitives, swapped for loom's by the model in `tests/loom.rs`),
//! `writer` (group commit thread), `durable`, `checkpoint`, `stats`, and `wal` (the public handle).
//!
//! Not here: what payloads mean (the storage layer decodes batches), and the checkpoint LSN's
//! own durability (the storage manifest records it and passes it to [`Wal::open`]).

mod buffers;
mod checkpoint;
mod direct;
mod durable;
mod error;
pub mod format;
mod group_commit;
mod io;
mod options;
mod prepare;
mod queue;
mod recovery;
mod recycle;
mod segment_files;
mod stats;
mod sync;
mod wal;
mod writer;

pub use buffers::{PAYLOAD_BUFFERS_MAX, PAYLOAD_BUFFER_BYTES_MAX};
pub use error::WalError;
pub use io::io_uring_available;
pub use lookback_common::Lsn;
pub use options::{
    IoBackendKind, IoMode, WalOptions, GROUP_BYTES_MAX_DEFAULT, QUEUE_BYTES_MAX_DEFAULT, RECORD_BYTES_MAX_DEFAULT,
    RECYCLED_SEGMENTS_MAX_DEFAULT, SEGMENT_BYTES_DEFAULT, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN,
};
pub use recovery::{RecoveryReport, Truncation};
pub use stats::{WalStats, SYNC_MICROS_BOUNDS};
pub use wal::Wal;
