//! Tunables of the storage engine, each a named limit with its unit last.

use crate::segment::SegmentWriteOptions;
use lookback_common::Faults;
use lookback_wal::{IoMode, WalOptions};
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct DbOptions {
    pub data_dir: PathBuf,
    /// A table's active memtable is frozen and flushed once it holds this many bytes.
    pub memtable_bytes_max: usize,
    /// Admission stops (overloaded / backpressure) while active + frozen memtables of all tables
    /// exceed this many bytes, i.e. while flushing cannot keep up.
    pub memory_bytes_max: usize,
    /// A non-empty memtable is flushed at least this often.
    pub flush_interval_ms: u64,
    /// An (app_id, event_id) seen again within this much ingest time is dropped.
    pub dedup_window_ms: u64,
    /// Most keys the dedup window holds; beyond it the oldest generation is dropped early.
    pub dedup_entries_max: usize,
    /// Most producers whose last batch sequence is remembered.
    pub producers_max: usize,
    /// Segment encoding for flushed segments.
    pub flush_segment: SegmentWriteOptions,
    /// zstd level for segments written by compaction (they live long: spend CPU once).
    pub compaction_zstd_level: i32,
    /// Rows per block in segments written by compaction. A block is the unit of decompression,
    /// so a point read (one device's journey) decodes one block of each column it needs:
    /// 16,384-row blocks cut one conversion's attribution from 31 to 3.3 ms p50 on 10 M events,
    /// for 1.3% more bytes than 262,144-row blocks (more per-block headers and zstd frames).
    pub compaction_block_rows: usize,
    /// Number of same-level segments merged into one (size-tiered compaction).
    pub compaction_fan_in: usize,
    /// A merge never produces a segment of more rows than this (bounds compaction memory).
    pub compaction_rows_max: u64,
    /// Segments in one table above which compaction stops waiting for idle CPU and competes
    /// (at low priority) with ingest, so a long overload cannot pile up files without bound.
    pub compaction_urgent_segments: usize,
    pub wal_segment_bytes: u64,
    pub wal_io: IoMode,
    /// Flush memtables on clean shutdown so the next start replays little (off for read-only
    /// tools such as `lookback dump`).
    pub flush_on_shutdown: bool,
    pub faults: Faults,
}

impl DbOptions {
    pub fn new(data_dir: impl Into<PathBuf>) -> DbOptions {
        DbOptions {
            data_dir: data_dir.into(),
            memtable_bytes_max: 256 << 20,
            memory_bytes_max: 1 << 30,
            flush_interval_ms: 10_000,
            dedup_window_ms: 24 * 3600 * 1000,
            dedup_entries_max: 50_000_000,
            producers_max: 100_000,
            // Level 1: flushed segments are short-lived (compaction rewrites them at
            // compaction_zstd_level), and on this data level 3 saved under 0.1% of the bytes.
            flush_segment: SegmentWriteOptions { zstd_level: 1, ..SegmentWriteOptions::default() },
            // Compacted segments live long: spend the CPU once (level 9 is 0.5% smaller than 3).
            compaction_zstd_level: 9,
            compaction_block_rows: 16_384,
            compaction_fan_in: 4,
            compaction_rows_max: 8_000_000,
            compaction_urgent_segments: 24,
            wal_segment_bytes: 64 << 20,
            wal_io: IoMode::Auto,
            flush_on_shutdown: true,
            faults: Faults::none(),
        }
    }

    pub fn wal_dir(&self) -> PathBuf {
        self.data_dir.join("wal")
    }

    pub fn segments_dir(&self) -> PathBuf {
        self.data_dir.join("segments")
    }

    /// The largest WAL record (one admitted batch) these options allow.
    pub fn wal_record_bytes_max(&self) -> usize {
        lookback_wal::RECORD_BYTES_MAX_DEFAULT.min((self.wal_segment_bytes / 2) as usize)
    }

    pub(crate) fn wal_options(&self) -> WalOptions {
        let mut w = WalOptions::new(self.wal_dir());
        w.segment_bytes = self.wal_segment_bytes;
        w.record_bytes_max = self.wal_record_bytes_max();
        w.io = self.wal_io;
        w.faults = self.faults.clone();
        w
    }
}
