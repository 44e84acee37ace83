//! Immutable columnar segment files: the on-disk form of flushed and compacted rows.
//!
//! A segment holds one sorted [`Batch`](lookback_common::Batch) of one [`Schema`]. Rows are cut
//! into blocks of `block_rows` rows; each (block, column) pair is one *column block*, encoded
//! with the cheapest of a few type-specific encodings and compressed with zstd (or stored raw
//! when zstd does not shrink it). A text column whose values repeat gets one *segment
//! dictionary* (sorted, packed, stored once; see `dictionary.rs`) and its column blocks then
//! hold only codes into it. A footer at the end describes every dictionary and column block
//! (offset, lengths, encoding, crc32, null count, zone map) and the bitmap index; a fixed-size
//! trailer locates the footer. The byte layout is in `docs/format.md`.
//!
//! ```text
//! header (16) | segment dictionaries | column blocks (block-major) | bitmaps | footer | trailer (28)
//! ```
//!
//! Invariants: rows are sorted by `schema.sort_key` (asserted before writing); the file is
//! written once, fsynced, and never modified (so it is safe to mmap); every byte between the
//! header and the footer belongs to exactly one checksummed dictionary, column block or bitmap
//! (checked at open), so any corruption is detected before it is decoded. Any one block decodes
//! independently of other blocks: it needs at most its column's segment dictionary, which a
//! [`Segment`] decodes once, on first use, and caches.
//!
//! Not here: naming, renaming into place and directory fsync (the caller's commit protocol),
//! caching of decoded blocks, and query evaluation.

mod bitmap;
mod dictionary;
mod encoding;
mod fingerprint;
mod footer;
mod intern;
mod numeric;
mod parallel;
mod reader;
mod text;
mod rows;
mod writer;
mod zone_map;

pub(crate) use intern::prefetch;
pub use dictionary::TextDictionary;
pub use fingerprint::{fingerprint_columns, key_hash, value_hash, FingerprintIndex};
pub use reader::{BlockColumn, Segment};
pub use writer::{write_segment, write_segment_sorting};
pub use zone_map::ZoneMap;

use lookback_common::Lsn;

/// First 8 bytes of every segment file, and its last 8.
pub const SEGMENT_MAGIC: [u8; 8] = *b"LBSEGMNT";
/// The format version this build writes. Version 2 added the fingerprint index.
pub const SEGMENT_FORMAT_VERSION: u32 = 2;
/// The oldest version this build reads (version 1 files have no fingerprint index). Files with
/// a version outside `SEGMENT_FORMAT_VERSION_MIN..=SEGMENT_FORMAT_VERSION` are refused.
pub const SEGMENT_FORMAT_VERSION_MIN: u32 = 1;

/// Header: magic, u32 version, u32 flags (must be 0).
pub(crate) const HEADER_BYTES: u64 = 16;
/// Trailer: u64 footer_offset, u32 footer_len, u32 footer_crc32, u32 version, magic.
pub(crate) const TRAILER_BYTES: u64 = 28;

/// Rows per segment: row ids in bitmaps are u32.
pub const SEGMENT_ROWS_MAX: u64 = u32::MAX as u64;
/// Rows per block (bounds every per-block allocation when decoding).
pub const BLOCK_ROWS_MAX: usize = 1 << 20;
/// Decoded bytes of one column block (and expanded text of one block).
pub const COLUMN_BLOCK_RAW_BYTES_MAX: usize = 1 << 30;
/// Footer bytes.
pub const FOOTER_BYTES_MAX: usize = 64 << 20;
/// Bytes of a text min/max kept in a zone map; longer values give no bound.
pub const ZONE_TEXT_BYTES_MAX: usize = 128;
/// Entries of one segment dictionary; a text column with more distinct values keeps per-block
/// encodings. Bounds the dictionary a reader decodes and caches per column.
pub const SEGMENT_DICTIONARY_ENTRIES_MAX: usize = 1 << 22;

/// Knobs of [`write_segment`]. Readers need none of them: the file describes itself.
#[derive(Clone, Debug)]
pub struct SegmentWriteOptions {
    /// Rows per block (1..=[`BLOCK_ROWS_MAX`]). Smaller blocks prune better, compress worse.
    pub block_rows: usize,
    /// zstd level for column blocks (flush: low; compaction: higher).
    pub zstd_level: i32,
    /// A text column block with more distinct values than this is never dictionary-encoded.
    pub dictionary_values_max: usize,
    /// Threads that rank and encode columns (at least 1; default: the machine's parallelism,
    /// at most [`WRITE_THREADS_MAX`]).
    pub threads: usize,
}

/// The most threads one segment write uses by default.
pub const WRITE_THREADS_MAX: usize = parallel::THREADS_MAX;

impl Default for SegmentWriteOptions {
    fn default() -> Self {
        SegmentWriteOptions {
            block_rows: 65_536,
            zstd_level: 3,
            dictionary_values_max: 65_536,
            threads: parallel::threads(),
        }
    }
}

/// Identity and LSN range of a segment, stored in its footer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    pub segment_id: u64,
    pub min_lsn: Lsn,
    pub max_lsn: Lsn,
}

/// Sizes of a written segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentSummary {
    pub rows: u64,
    pub file_bytes: u64,
    /// Stored (compressed) bytes per schema column, validity included.
    pub column_bytes: Vec<u64>,
    /// Bytes of the index sections (bitmaps and the fingerprint index).
    pub index_bytes: u64,
}
