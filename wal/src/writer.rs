//! The writer thread: group commit.
//!
//! It takes every queued record up to `group_bytes_max`, serializes them into one buffer
//! (switching to the prepared next segment when a record does not fit the current one), issues
//! one write + fdatasync per touched segment, then publishes the durable LSN and runs the
//! group's callbacks in LSN order.
//!
//! Any write, fdatasync or segment-preparation failure poisons the WAL: nothing is retried, the
//! group's and every queued callback get `Err(Poisoned)`, and the thread exits. The order of
//! publication, callbacks and poisoning is `group_commit`'s (model-checked with loom).
//! Callbacks run on this thread and must not block on the WAL (an `append` from a callback can
//! deadlock on a full queue).

use std::fs::File;
use std::ops::Range;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use lookback_common::Lsn;

use crate::buffers::PayloadBuffers;
use crate::checkpoint::LiveSegments;
use crate::direct::DirectWrites;
use crate::durable::DurableLsn;
use crate::group_commit::{self, GroupStore};
use crate::error::file_name;
use crate::format::{decode_record, encode_record, SegmentHeader, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use crate::io::SegmentIo;
use crate::prepare::Preparer;
use crate::queue::{AppendQueue, Pending};
use crate::recovery::LiveSegment;
use crate::stats::StatsCounters;

/// The segment being appended to.
pub struct ActiveSegment {
    pub index: u64,
    pub path: PathBuf,
    pub file: Arc<File>,
    /// File size: records must end at or before it.
    pub bytes: u64,
    /// Where the next record goes.
    pub offset: u64,
}

/// One contiguous write into one segment: `buf[range]` at `offset`.
struct PlannedWrite {
    path: PathBuf,
    file: Arc<File>,
    offset: u64,
    range: Range<usize>,
}

pub struct Writer {
    pub queue: Arc<AppendQueue>,
    pub durable: Arc<DurableLsn>,
    pub stats: Arc<StatsCounters>,
    pub segments: Arc<LiveSegments>,
    pub preparer: Arc<Preparer>,
    pub io: Box<dyn SegmentIo>,
    /// `None`: the next record starts segment `next_index`.
    pub active: Option<ActiveSegment>,
    pub next_index: u64,
    /// The last LSN serialized, for the monotonicity assertion.
    pub last_lsn: Lsn,
    pub buf: Vec<u8>,
    pub direct: DirectWrites,
    /// Where written payloads go back for reuse by [`crate::Wal::payload_buffer`].
    pub buffers: Arc<PayloadBuffers>,
}

impl Writer {
    /// The thread body. A panic here is a bug; it still must not leave appenders waiting
    /// forever, so it poisons the WAL and fails every queued callback.
    pub fn run_guarded(mut self) {
        let queue = Arc::clone(&self.queue);
        let durable = Arc::clone(&self.durable);
        let body = AssertUnwindSafe(|| group_commit::run(&queue, &durable, &mut self));
        if std::panic::catch_unwind(body).is_err() {
            group_commit::poison(&queue, &durable, "panic in the wal writer thread", Vec::new());
        }
    }

    /// Serializes, writes and syncs one group. Err carries the poison reason.
    fn write_group(&mut self, group: &[Pending]) -> Result<(), String> {
        let writes = self.serialize(group)?;
        for write in &writes {
            let bytes = &self.buf[write.range.clone()];
            let started = Instant::now();
            let result = match self.direct.stage(&write.file, &write.path, write.offset, bytes) {
                Ok(Some(staged)) => self.io.write_and_sync(&staged.file, &write.path, staged.offset, staged.bytes),
                Ok(None) => self.io.write_and_sync(&write.file, &write.path, write.offset, bytes),
                Err(error) => Err(crate::io::IoFailure::write(error)),
            };
            if let Err(failure) = result {
                return Err(format!("failed {} of {}: {}", failure.step.name(), file_name(&write.path), failure.error));
            }
            self.direct.written(write.offset, bytes);
            let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            self.stats.record_sync(bytes.len() as u64, micros);
        }
        Ok(())
    }

    /// Encodes the group into `buf`, one planned write per touched segment.
    fn serialize(&mut self, group: &[Pending]) -> Result<Vec<PlannedWrite>, String> {
        self.buf.clear();
        let group_first_lsn = group.first().map_or(0, |p| p.lsn);
        let mut writes: Vec<PlannedWrite> = Vec::new();
        for record in group {
            assert_eq!(record.lsn, self.last_lsn + 1, "lsns must be contiguous and increasing");
            self.last_lsn = record.lsn;
            let record_bytes = (RECORD_HEADER_BYTES + record.payload.len()) as u64;
            let fits = self.active.as_ref().is_some_and(|a| a.offset + record_bytes <= a.bytes);
            if !fits {
                self.switch_segment(record.lsn, &mut writes)?;
            }
            let Some(active) = self.active.as_mut() else {
                unreachable!("switch_segment installs an active segment");
            };
            assert!(active.offset + record_bytes <= active.bytes, "record of {record_bytes} bytes does not fit a fresh segment");
            if writes.last().is_none_or(|w| w.path != active.path) {
                writes.push(PlannedWrite { path: active.path.clone(), file: Arc::clone(&active.file), offset: active.offset, range: self.buf.len()..self.buf.len() });
            }
            let start = self.buf.len();
            encode_record(&mut self.buf, record.lsn, group_first_lsn, &record.payload);
            debug_assert!(decode_record(&self.buf[start..]).is_ok_and(|r| r.lsn == record.lsn && r.payload.len() == record.payload.len()));
            active.offset += record_bytes;
            if let Some(w) = writes.last_mut() {
                w.range.end = self.buf.len();
            }
        }
        Ok(writes)
    }

    /// Takes the prepared next segment and starts a write at its offset 0 with its header.
    fn switch_segment(&mut self, start_lsn: Lsn, writes: &mut Vec<PlannedWrite>) -> Result<(), String> {
        let index = self.next_index;
        if let Some(previous) = &self.active {
            assert_eq!(index, previous.index + 1, "segments are written in index order");
        }
        let prepared = self
            .preparer
            .take(index)
            .map_err(|e| format!("failed preparation of segment {index}: {e}"))?;
        let file = Arc::new(prepared.file);
        let start = self.buf.len();
        SegmentHeader { index, start_lsn }.encode(&mut self.buf);
        writes.push(PlannedWrite { path: prepared.path.clone(), file: Arc::clone(&file), offset: 0, range: start..self.buf.len() });
        self.segments.push(LiveSegment { index, start_lsn, path: prepared.path.clone() });
        self.active = Some(ActiveSegment { index, path: prepared.path, file, bytes: prepared.bytes, offset: SEGMENT_HEADER_BYTES as u64 });
        self.next_index = index + 1;
        Ok(())
    }
}

impl GroupStore for Writer {
    fn commit(&mut self, group: &[Pending]) -> Result<(), String> {
        self.write_group(group)
    }

    fn durable(&mut self, records: u64) {
        self.stats.record_durable(records);
    }

    fn recycle(&mut self, payload: Vec<u8>) {
        self.buffers.give(payload);
    }
}
