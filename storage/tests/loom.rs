//! Loom model of a table's tiers under concurrent admission, flush, compaction and readers:
//! the storage crate's own `memtable.rs` and `db/tiers.rs` compiled against a model segment
//! (a list of row ids instead of a file), driven with the lock discipline of `db/mod.rs` and
//! `db/flush.rs`: every transition under the state lock, writing and merging segments outside
//! it, flushes serialized by a flush lock and merges by a merge lock, readers taking a snapshot
//! in one step and reading it after the lock is released.
//!
//! What must hold in every interleaving loom runs (up to `PREEMPTIONS_MAX` preemptions):
//! - a reader's snapshot at `visible_lsn` holds every row with an LSN up to it exactly once
//!   (never a row twice, as a frozen memtable and its segment, or compaction inputs and their
//!   output; never a row missing) and nothing newer: segments hold only durable rows;
//! - the rows a reader pinned stay readable after a flush or a merge replaced them;
//! - no segment still listed has had its file removed (compaction removes inputs only after
//!   the commit that replaced them);
//! - the WAL checkpoint computed at each commit never passes a row held only in memory.
//!
//! The order of steps inside `flush_frozen` and `merge` is mirrored here, not compiled: they
//! do I/O. What is compiled is every transition those steps make on the tiers.
//!
//! Also modelled, compiled from `db/waiters.rs`: the ack of a resent batch, which waits for its
//! original's LSN to become durable, must be sent exactly once, never before that LSN is
//! durable, never lost between the WAL's publication and its callbacks, and must fail (not
//! hang) when the WAL is poisoned first.

#![allow(clippy::unwrap_used)] // a model fails by panicking

#[allow(dead_code)] // the memtable's accessors for gauges and flushing are not all modelled
#[path = "../src/memtable.rs"]
mod memtable;

#[allow(dead_code)]
#[path = "../src/db/tiers.rs"]
mod tiers;

#[allow(dead_code, unused_imports)] // the condition variable and atomics are the WAL's
#[path = "../../wal/tests/support/loom_sync.rs"]
mod sync;

#[path = "../src/db/waiters.rs"]
mod waiters;

use lookback_common::{Batch, Column, ColumnDef, ColumnType, ColumnValues, Lsn, Schema};
use loom::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread;
use memtable::{MemBatch, Memtable};
use tiers::{TierSegment, Tiers};
use waiters::{Durability, Waiters};

/// See `wal/tests/loom.rs`: 2-3 preemptions find nearly all lock-protocol bugs.
const PREEMPTIONS_MAX: usize = 3;

/// Batches in the two segments the table starts with, the memtable it starts with, and the
/// batch admitted while the model runs: one row each, whose id is its LSN.
const SEGMENT_LSNS: [Lsn; 2] = [1, 2];
const MEMTABLE_LSN: Lsn = 3;
const ADMITTED_LSN: Lsn = 4;

#[derive(Clone)]
struct ModelSegment {
    id: u64,
    min_lsn: Lsn,
    max_lsn: Lsn,
    rows: Vec<i64>,
    /// The segment's file was removed (a reader's mapping would still be valid).
    removed: Arc<AtomicBool>,
}

impl TierSegment for ModelSegment {
    fn id(&self) -> u64 {
        self.id
    }

    fn min_lsn(&self) -> Lsn {
        self.min_lsn
    }
}

struct State {
    tiers: Tiers<ModelSegment>,
    last_assigned: Lsn,
    next_segment_id: u64,
    checkpoint_lsn: Lsn,
}

struct Table {
    state: Mutex<State>,
    /// The WAL's durable LSN.
    durable: AtomicU64,
    flush_lock: Mutex<()>,
    merge_lock: Mutex<()>,
}

fn schema() -> Schema {
    Schema::new("t", vec![ColumnDef::new("id", ColumnType::Int64, false)], vec![0], vec![]).unwrap()
}

fn batch(lsn: Lsn) -> MemBatch {
    let column = Column::new(ColumnValues::Int64(vec![lsn as i64]), None);
    MemBatch { lsn, ingest_unix_ms: 0, batch: std::sync::Arc::new(Batch::try_new(&schema(), vec![column]).unwrap()) }
}

fn rows_of(batch: &Batch) -> Vec<i64> {
    match &batch.column(0).values {
        ColumnValues::Int64(ids) => ids.clone(),
        other => panic!("the model's column is int64, not {other:?}"),
    }
}

fn segment(id: u64, rows: Vec<i64>) -> ModelSegment {
    let (min, max) = (*rows.iter().min().unwrap() as Lsn, *rows.iter().max().unwrap() as Lsn);
    ModelSegment { id, min_lsn: min, max_lsn: max, rows, removed: Arc::new(AtomicBool::new(false)) }
}

impl Table {
    fn new() -> Table {
        let segments = SEGMENT_LSNS.iter().zip(1..).map(|(&lsn, id)| segment(id, vec![lsn as i64])).collect();
        let mut tiers = Tiers::new(segments);
        tiers.admit(batch(MEMTABLE_LSN), usize::MAX);
        let state = State { tiers, last_assigned: MEMTABLE_LSN, next_segment_id: 3, checkpoint_lsn: MEMTABLE_LSN - 1 };
        Table {
            state: Mutex::new(state),
            durable: AtomicU64::new(MEMTABLE_LSN),
            flush_lock: Mutex::new(()),
            merge_lock: Mutex::new(()),
        }
    }

    /// `admit`: LSN assignment and the memtable push under the state lock (a 1-byte memtable
    /// limit freezes every batch), then the WAL makes it durable.
    fn admit(&self) {
        let lsn = {
            let mut state = self.state.lock().unwrap();
            state.last_assigned += 1;
            let lsn = state.last_assigned;
            assert_eq!(lsn, ADMITTED_LSN);
            state.tiers.admit(batch(lsn), 1);
            lsn
        };
        self.durable.store(lsn, Ordering::Release);
    }

    /// `flush_table` with `freeze_active`, then `flush_frozen` of each frozen memtable.
    fn flush(&self) {
        let _flush = self.flush_lock.lock().unwrap();
        let frozen = {
            let mut state = self.state.lock().unwrap();
            state.tiers.freeze_active();
            state.tiers.frozen()
        };
        for m in frozen {
            self.wait_durable(m.max_lsn().unwrap());
            let rows: Vec<i64> = m.batches().iter().flat_map(|b| rows_of(&b.batch)).collect();
            let id = self.take_segment_id();
            let written = segment(id, rows);
            let mut state = self.state.lock().unwrap();
            state.tiers.commit_flush(&m, Some(written));
            commit_manifest(&mut state);
        }
    }

    /// `merge` of the two oldest segments, if there are two.
    fn compact(&self) {
        let _merge = self.merge_lock.lock().unwrap();
        let inputs: Vec<ModelSegment> = {
            let state = self.state.lock().unwrap();
            let ids: Vec<u64> = state.tiers.segments.iter().take(2).map(|s| s.id).collect();
            if ids.len() < 2 {
                return;
            }
            state.tiers.merge_inputs(&ids).unwrap().into_iter().cloned().collect()
        };
        let ids: Vec<u64> = inputs.iter().map(|s| s.id).collect();
        let rows: Vec<i64> = inputs.iter().flat_map(|s| s.rows.iter().copied()).collect();
        let output = segment(self.take_segment_id(), rows);
        {
            let mut state = self.state.lock().unwrap();
            state.tiers.commit_merge(&ids, output);
            commit_manifest(&mut state);
        }
        for input in &inputs {
            input.removed.store(true, Ordering::Release);
        }
    }

    fn take_segment_id(&self) -> u64 {
        let mut state = self.state.lock().unwrap();
        state.next_segment_id += 1;
        state.next_segment_id - 1
    }

    fn wait_durable(&self, lsn: Lsn) {
        while self.durable.load(Ordering::Acquire) < lsn {
            thread::yield_now();
        }
    }

    /// `Db::snapshot`, then reading what it pinned after the lock is released.
    fn read(&self) -> (Lsn, Vec<i64>) {
        let (visible_lsn, batches, segments) = {
            let state = self.state.lock().unwrap();
            let visible_lsn = self.durable.load(Ordering::Acquire);
            for s in &state.tiers.segments {
                assert!(!s.removed.load(Ordering::Acquire), "segment {} is listed but its file was removed", s.id);
            }
            (visible_lsn, state.tiers.visible_batches(visible_lsn), state.tiers.segments.clone())
        };
        let mut rows: Vec<i64> = batches.iter().flat_map(|b| rows_of(b)).collect();
        for s in &segments {
            assert!(s.max_lsn <= visible_lsn, "segment {} holds lsn {} past the durable lsn {visible_lsn}", s.id, s.max_lsn);
            rows.extend(&s.rows);
        }
        rows.sort_unstable();
        let expected: Vec<i64> = (1..=visible_lsn as i64).collect();
        assert_eq!(rows, expected, "a snapshot at lsn {visible_lsn} holds each row up to it exactly once");
        (visible_lsn, rows)
    }
}

/// `build_manifest`'s checkpoint: below the oldest LSN held only in memory. The WAL may drop
/// every record up to it, so each must be in a segment.
fn commit_manifest(state: &mut State) {
    let checkpoint = state.tiers.oldest_in_memory().map_or(state.last_assigned, |lsn| lsn - 1);
    assert!(checkpoint >= state.checkpoint_lsn, "the checkpoint went back from {} to {checkpoint}", state.checkpoint_lsn);
    for lsn in 1..=checkpoint as i64 {
        let in_segment = state.tiers.segments.iter().any(|s| s.rows.contains(&lsn));
        assert!(in_segment, "checkpoint {checkpoint} passes lsn {lsn}, which is only in memory");
    }
    state.checkpoint_lsn = checkpoint;
}

fn check(model: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    // LOOM_MAX_PREEMPTIONS (read by loom) overrides the bound for a longer run.
    if std::env::var_os("LOOM_MAX_PREEMPTIONS").is_none() {
        builder.preemption_bound = Some(PREEMPTIONS_MAX);
    }
    builder.check(model);
}

#[test]
fn readers_see_every_row_once_while_admission_flush_and_compaction_race() {
    check(|| {
        let table = Arc::new(Table::new());
        let spawn = |work: fn(&Table)| {
            let table = Arc::clone(&table);
            thread::spawn(move || work(&table))
        };
        let workers = [spawn(Table::admit), spawn(Table::flush), spawn(Table::compact)];
        let reader = {
            let table = Arc::clone(&table);
            thread::spawn(move || table.read())
        };
        let (seen_lsn, _) = reader.join().unwrap();
        assert!(seen_lsn >= MEMTABLE_LSN);
        for worker in workers {
            worker.join().unwrap();
        }
        let (last, rows) = table.read();
        assert_eq!((last, rows.len()), (ADMITTED_LSN, ADMITTED_LSN as usize));
        let state = table.state.lock().unwrap();
        // The flush may have run before the admission: then only that batch is still in memory.
        let in_memory: Vec<Lsn> = state.tiers.memtables().flat_map(Memtable::batches).map(|b| b.lsn).collect();
        assert!(in_memory.is_empty() || in_memory == [ADMITTED_LSN], "{in_memory:?} left in memory");
    });
}

#[test]
fn a_snapshot_keeps_its_rows_after_flush_and_merge_replace_them() {
    check(|| {
        let table = Arc::new(Table::new());
        let pinned = {
            let state = table.state.lock().unwrap();
            (state.tiers.visible_batches(MEMTABLE_LSN), state.tiers.segments.clone())
        };
        let flusher = {
            let table = Arc::clone(&table);
            thread::spawn(move || {
                table.flush();
                table.compact();
            })
        };
        let reader = thread::spawn(move || {
            let (batches, segments) = pinned;
            let mut rows: Vec<i64> = batches.iter().flat_map(|b| rows_of(b)).collect();
            rows.extend(segments.iter().flat_map(|s| s.rows.iter().copied()));
            rows.sort_unstable();
            assert_eq!(rows, vec![1, 2, 3]);
        });
        reader.join().unwrap();
        flusher.join().unwrap();
        let state = table.state.lock().unwrap();
        assert!(state.tiers.frozen.is_empty() && state.tiers.active.is_empty());
        assert_eq!(state.checkpoint_lsn, MEMTABLE_LSN, "with nothing in memory the checkpoint is the last lsn");
    });
}

/// The WAL as the waiters read it.
struct ModelWal {
    durable: AtomicU64,
    poisoned: AtomicBool,
}

const POISON: &str = "wal is poisoned after a failed fdatasync";

impl Durability<String> for ModelWal {
    fn durable_lsn(&self) -> Lsn {
        self.durable.load(Ordering::Acquire)
    }

    fn poisoned(&self) -> Option<String> {
        self.poisoned.load(Ordering::Acquire).then(|| POISON.to_string())
    }
}

/// One resent batch of the original at `lsn`, arriving while `wal_steps` run on the WAL's
/// writer thread; returns every ack it got, each with the durable LSN when it was sent.
fn resend_during(lsn: Lsn, wal_steps: fn(&ModelWal, &Waiters<String>)) -> Vec<(Result<Lsn, String>, Lsn)> {
    let wal = Arc::new(ModelWal { durable: AtomicU64::new(0), poisoned: AtomicBool::new(false) });
    let waiters = Arc::new(Waiters::<String>::new());
    let acks = Arc::new(Mutex::new(Vec::new()));
    let writer = {
        let (wal, waiters) = (Arc::clone(&wal), Arc::clone(&waiters));
        thread::spawn(move || wal_steps(&wal, &waiters))
    };
    let callback = {
        let (wal, acks) = (Arc::clone(&wal), Arc::clone(&acks));
        Box::new(move |result| acks.lock().unwrap().push((result, wal.durable_lsn())))
    };
    waiters.when_durable(lsn, wal.as_ref(), callback);
    writer.join().unwrap();
    let acks = acks.lock().unwrap().clone();
    acks
}

#[test]
fn a_resent_batch_is_acknowledged_once_and_only_after_its_original_is_durable() {
    check(|| {
        // Group commit: publish, then the group's callbacks release waiters; twice.
        let acks = resend_during(2, |wal, waiters| {
            for lsn in [1, 2] {
                wal.durable.store(lsn, Ordering::Release);
                waiters.release(wal, Ok(lsn));
            }
        });
        assert_eq!(acks.len(), 1, "exactly one ack: {acks:?}");
        let (result, seen) = &acks[0];
        assert_eq!(result, &Ok(2));
        assert!(*seen >= 2, "acknowledged while the durable lsn was {seen}");
    });
}

#[test]
fn a_resent_batch_fails_once_when_the_wal_is_poisoned_first() {
    check(|| {
        // A failed fdatasync: the poison is set, then every callback runs with the error.
        let acks = resend_during(1, |wal, waiters| {
            wal.poisoned.store(true, Ordering::Release);
            waiters.release(wal, Err(POISON.to_string()));
        });
        assert_eq!(acks, vec![(Err(POISON.to_string()), 0)], "one failure, no ack, no hang");
    });
}
