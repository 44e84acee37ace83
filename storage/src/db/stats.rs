//! Counters the engine exports on /metrics.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct DbStats {
    pub batches_admitted: AtomicU64,
    pub events_received: AtomicU64,
    pub events_accepted: AtomicU64,
    pub events_deduplicated: AtomicU64,
    pub duplicate_batches: AtomicU64,
    pub overloaded: AtomicU64,
    pub flushes: AtomicU64,
    pub flush_errors: AtomicU64,
    pub flush_micros_total: AtomicU64,
    pub compactions: AtomicU64,
    pub compaction_errors: AtomicU64,
    pub recovery_micros: AtomicU64,
    pub recovered_records: AtomicU64,
}

impl DbStats {
    pub(crate) fn record_admit(&self, received: usize, accepted: usize) {
        self.batches_admitted.fetch_add(1, Ordering::Relaxed);
        self.events_received.fetch_add(received as u64, Ordering::Relaxed);
        self.events_accepted.fetch_add(accepted as u64, Ordering::Relaxed);
        self.events_deduplicated.fetch_add((received - accepted) as u64, Ordering::Relaxed);
    }
}

/// Gauges computed from the current state.
#[derive(Debug, Clone, Default)]
pub struct StorageGauges {
    pub memtable_bytes: u64,
    pub memtable_rows: u64,
    pub segments: u64,
    pub segment_bytes: u64,
    pub segment_rows: u64,
    /// Listed segments quarantined at start-up because their file is damaged.
    pub damaged_segments: u64,
    pub dedup_keys: u64,
    pub dedup_evicted_early: u64,
    pub producers: u64,
}
