//! Counters the writer thread updates and [`crate::Wal::stats`] reads, including a
//! Prometheus-style histogram of group-commit sync latency.
//!
//! A "sync" is one segment's write + fdatasync in a group commit; its latency is measured from
//! issuing the write to the fdatasync completing. Counters are relaxed atomics: a snapshot is
//! not a consistent cut, which is fine for metrics.

use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds (µs) of the sync latency histogram buckets; the last one catches everything.
pub const SYNC_MICROS_BOUNDS: [u64; 12] = [50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, u64::MAX];

#[derive(Clone, Debug, Default)]
pub struct WalStats {
    /// Records made durable by this process.
    pub records: u64,
    /// Bytes written by group commits (headers included).
    pub bytes_written: u64,
    pub syncs: u64,
    pub sync_micros_total: u64,
    /// Cumulative histogram: (upper bound µs, syncs at or below it).
    pub sync_micros_buckets: Vec<(u64, u64)>,
    /// Live segment files holding records.
    pub segment_files: u64,
    /// Payload bytes queued or in flight.
    pub queued_bytes: u64,
}

#[derive(Debug, Default)]
pub struct StatsCounters {
    records: AtomicU64,
    bytes_written: AtomicU64,
    syncs: AtomicU64,
    sync_micros_total: AtomicU64,
    sync_micros_counts: [AtomicU64; SYNC_MICROS_BOUNDS.len()],
}

impl StatsCounters {
    pub fn record_sync(&self, bytes: u64, micros: u64) {
        self.bytes_written.fetch_add(bytes, Ordering::Relaxed);
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.sync_micros_total.fetch_add(micros, Ordering::Relaxed);
        let bucket = SYNC_MICROS_BOUNDS.iter().position(|bound| micros <= *bound).unwrap_or(SYNC_MICROS_BOUNDS.len() - 1);
        self.sync_micros_counts[bucket].fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_durable(&self, records: u64) {
        self.records.fetch_add(records, Ordering::Relaxed);
    }

    pub fn snapshot(&self, segment_files: u64, queued_bytes: u64) -> WalStats {
        let mut cumulative = 0;
        let sync_micros_buckets = SYNC_MICROS_BOUNDS
            .iter()
            .zip(&self.sync_micros_counts)
            .map(|(bound, count)| {
                cumulative += count.load(Ordering::Relaxed);
                (*bound, cumulative)
            })
            .collect();
        WalStats {
            records: self.records.load(Ordering::Relaxed),
            bytes_written: self.bytes_written.load(Ordering::Relaxed),
            syncs: self.syncs.load(Ordering::Relaxed),
            sync_micros_total: self.sync_micros_total.load(Ordering::Relaxed),
            sync_micros_buckets,
            segment_files,
            queued_bytes,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests panic with the error
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let counters = StatsCounters::default();
        for micros in [10, 50, 51, 3000, u64::MAX] {
            counters.record_sync(100, micros);
        }
        let stats = counters.snapshot(2, 7);
        assert_eq!(stats.syncs, 5);
        assert_eq!(stats.bytes_written, 500);
        assert_eq!(stats.sync_micros_buckets.len(), 12);
        assert_eq!(stats.sync_micros_buckets[0], (50, 2));
        assert_eq!(stats.sync_micros_buckets[1], (100, 3));
        assert_eq!(stats.sync_micros_buckets[6], (5000, 4));
        assert_eq!(stats.sync_micros_buckets[11], (u64::MAX, 5));
        assert_eq!((stats.segment_files, stats.queued_bytes), (2, 7));
    }
}
