//! The memtable: admitted batches in LSN order, held in memory until flushed to a segment.
//!
//! Batches are immutable and shared (`Arc`), so a reader's snapshot is a cheap clone of the
//! list, and a frozen memtable can be flushed while new batches go to a fresh active one. Each
//! batch carries its LSN: readers see only batches at or below the WAL's durable LSN, so a query
//! never returns an event that could still be lost.

use lookback_common::{Batch, Lsn};
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct MemBatch {
    pub lsn: Lsn,
    pub ingest_unix_ms: u64,
    pub batch: Arc<Batch>,
}

#[derive(Debug, Clone, Default)]
pub struct Memtable {
    batches: Vec<MemBatch>,
    bytes: usize,
    rows: usize,
}

impl Memtable {
    pub fn push(&mut self, entry: MemBatch) {
        if let Some(last) = self.batches.last() {
            assert!(entry.lsn > last.lsn, "memtable LSNs must increase: {} after {}", entry.lsn, last.lsn);
        }
        self.bytes += entry.batch.heap_bytes() + std::mem::size_of::<MemBatch>();
        self.rows += entry.batch.rows();
        self.batches.push(entry);
    }

    pub fn batches(&self) -> &[MemBatch] {
        &self.batches
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// True when no batch (not even an empty one carrying only a producer sequence) is held.
    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    pub fn min_lsn(&self) -> Option<Lsn> {
        self.batches.first().map(|b| b.lsn)
    }

    pub fn max_lsn(&self) -> Option<Lsn> {
        self.batches.last().map(|b| b.lsn)
    }

    pub fn ingest_range_ms(&self) -> (u64, u64) {
        let min = self.batches.iter().map(|b| b.ingest_unix_ms).min().unwrap_or(0);
        let max = self.batches.iter().map(|b| b.ingest_unix_ms).max().unwrap_or(0);
        (min, max)
    }

    /// The batches visible at `lsn` (non-empty ones only).
    pub fn visible(&self, lsn: Lsn) -> impl Iterator<Item = &Arc<Batch>> {
        self.batches.iter().filter(move |b| b.lsn <= lsn && b.batch.rows() > 0).map(|b| &b.batch)
    }
}
