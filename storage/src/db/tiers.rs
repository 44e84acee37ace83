//! A table's tiers: the active memtable, the frozen memtables being flushed, and the live
//! segments, with every transition admission, flushing, compaction and readers make on them.
//!
//! Why its own module: what readers see rests on these transitions being made whole under the
//! state lock (a frozen memtable leaves in the same step its segment arrives, compaction inputs
//! leave in the same step their output arrives, a snapshot is taken in one step), and on
//! the slow work (writing a segment, merging) running between them without the lock.
//! `storage/tests/loom.rs` compiles this file and `memtable.rs` with a model segment type and
//! model-checks admission, flush, compaction and readers racing; `db/mod.rs` and `db/flush.rs`
//! call the same functions under the real lock.

use crate::memtable::{MemBatch, Memtable};
use lookback_common::{Batch, Lsn};
use std::sync::Arc;

/// What the tiers need to know of a segment.
pub trait TierSegment {
    fn id(&self) -> u64;
    fn min_lsn(&self) -> Lsn;
}

pub struct Tiers<S> {
    pub active: Memtable,
    /// Frozen memtables being flushed, oldest first.
    pub frozen: Vec<Arc<Memtable>>,
    /// Ordered by `min_lsn`.
    pub segments: Vec<S>,
}

impl<S: TierSegment> Tiers<S> {
    pub fn new(segments: Vec<S>) -> Tiers<S> {
        Tiers { active: Memtable::default(), frozen: Vec::new(), segments }
    }

    /// Adds an admitted batch; freezes the active memtable once it holds `memtable_bytes_max`
    /// (then returns true: the flusher should be woken).
    pub fn admit(&mut self, entry: MemBatch, memtable_bytes_max: usize) -> bool {
        self.active.push(entry);
        let full = self.active.bytes() >= memtable_bytes_max;
        if full {
            self.freeze_active();
        }
        full
    }

    /// Moves a non-empty active memtable to the end of the frozen list.
    pub fn freeze_active(&mut self) {
        if !self.active.is_empty() {
            let active = std::mem::take(&mut self.active);
            self.frozen.push(Arc::new(active));
        }
    }

    /// The frozen memtables to flush, oldest first.
    pub fn frozen(&self) -> Vec<Arc<Memtable>> {
        self.frozen.clone()
    }

    /// A flushed memtable is replaced by its segment (none when it held no rows), in one step.
    pub fn commit_flush(&mut self, flushed: &Arc<Memtable>, segment: Option<S>) {
        let before = self.frozen.len();
        self.frozen.retain(|f| !Arc::ptr_eq(f, flushed));
        assert_eq!(self.frozen.len() + 1, before, "a flushed memtable was frozen exactly once");
        self.segments.extend(segment);
        self.segments.sort_by_key(S::min_lsn);
    }

    /// The live segments named `ids`, or `None` when some already left (a concurrent commit
    /// changed the set; the merge must be planned again).
    pub fn merge_inputs(&self, ids: &[u64]) -> Option<Vec<&S>> {
        let inputs: Vec<&S> = self.segments.iter().filter(|s| ids.contains(&s.id())).collect();
        (inputs.len() == ids.len()).then_some(inputs)
    }

    /// Compaction's inputs are replaced by its output, in one step.
    pub fn commit_merge(&mut self, ids: &[u64], output: S) {
        let before = self.segments.len();
        self.segments.retain(|s| !ids.contains(&s.id()));
        assert_eq!(self.segments.len() + ids.len(), before, "every merge input is still live at its commit");
        self.segments.push(output);
        self.segments.sort_by_key(S::min_lsn);
    }

    /// Frozen memtables oldest first, then the active one.
    pub fn memtables(&self) -> impl Iterator<Item = &Memtable> {
        self.frozen.iter().map(|f| f.as_ref()).chain(std::iter::once(&self.active))
    }

    /// The lowest LSN held only in memory: the WAL must keep it and everything after it.
    pub fn oldest_in_memory(&self) -> Option<Lsn> {
        self.memtables().filter_map(Memtable::min_lsn).min()
    }

    pub fn memory_bytes(&self) -> usize {
        self.memtables().map(Memtable::bytes).sum()
    }

    /// What a reader at `visible_lsn` sees of the memtables (the segments are all visible:
    /// only durable batches are flushed).
    pub fn visible_batches(&self, visible_lsn: Lsn) -> Vec<Arc<Batch>> {
        self.memtables().flat_map(|m| m.visible(visible_lsn).cloned()).collect()
    }
}
