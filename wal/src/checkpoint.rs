//! The list of live segments and checkpoint-driven retirement of old ones.
//!
//! A segment holds LSNs `[start_lsn, next segment's start_lsn)`. After `checkpoint(lsn)` a
//! segment whose every record is `<= lsn` (and durable) is retired into the recycle pool or
//! deleted, oldest first, so the remaining indexes stay contiguous. The last segment (the one
//! being appended to) is never retired: it has no successor to bound its LSNs.

use std::collections::VecDeque;

use lookback_common::Lsn;
use parking_lot::Mutex;

use crate::error::WalError;
use crate::recovery::LiveSegment;
use crate::recycle::RecyclePool;
use crate::segment_files::SegmentDir;

pub struct LiveSegments {
    list: Mutex<VecDeque<LiveSegment>>,
}

impl LiveSegments {
    pub fn new(segments: Vec<LiveSegment>) -> LiveSegments {
        LiveSegments { list: Mutex::new(segments.into()) }
    }

    /// Records a segment the writer switched to.
    pub fn push(&self, segment: LiveSegment) {
        let mut list = self.list.lock();
        if let Some(last) = list.back() {
            assert_eq!(segment.index, last.index + 1, "segment indexes must be contiguous");
            assert!(segment.start_lsn > last.start_lsn, "segment start lsns must increase");
        }
        list.push_back(segment);
    }

    pub fn len(&self) -> usize {
        self.list.lock().len()
    }

    /// Retires every segment whose records are all `<= covered_lsn`.
    pub fn retire_covered(&self, covered_lsn: Lsn, dir: &SegmentDir, pool: &RecyclePool) -> Result<(), WalError> {
        let victims = self.take_covered(covered_lsn);
        for (i, victim) in victims.iter().enumerate() {
            if let Err(error) = pool.retire(dir, &victim.path) {
                self.put_back(&victims[i..]);
                return Err(error);
            }
            tracing::debug!(index = victim.index, "retired wal segment after checkpoint");
        }
        if victims.is_empty() {
            return Ok(());
        }
        dir.sync_dir()
    }

    fn take_covered(&self, covered_lsn: Lsn) -> Vec<LiveSegment> {
        let mut list = self.list.lock();
        let mut victims = Vec::new();
        while list.len() >= 2 && list[1].start_lsn - 1 <= covered_lsn {
            victims.extend(list.pop_front());
        }
        victims
    }

    fn put_back(&self, segments: &[LiveSegment]) {
        let mut list = self.list.lock();
        for segment in segments.iter().rev() {
            list.push_front(segment.clone());
        }
    }
}
