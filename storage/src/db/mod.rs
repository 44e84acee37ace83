//! The database: the write path that ties the WAL, memtables, segments and the manifest
//! together, and the consistent snapshots readers take.
//!
//! Admission (`admit`) runs under one sequencer lock: check the producer's batch sequence, drop
//! event ids seen within the dedup window, append the surviving rows to the WAL (which assigns
//! the LSN in the same order), and add them to the table's memtable. The lock makes LSN order,
//! memtable order and dedup decisions one order. Durability is signalled by the WAL's group
//! commit; readers see memtable rows only up to the durable LSN.
//!
//! A background flusher freezes full (or old) memtables, writes them as sorted segments,
//! commits a new manifest, checkpoints the WAL, and runs size-tiered compaction. See
//! docs/architecture.md and docs/durability.md.

mod ddl;
mod error;
mod flush;
mod options;
mod recovery;
mod stats;
mod tiers;
mod waiters;

pub use error::DbError;
pub use options::DbOptions;
pub use stats::{DbStats, StorageGauges};

use crate::dedup::{column_keys, DedupWindow};
use crate::manifest::{DroppedTable, SegmentEntry};
use crate::memtable::MemBatch;
use tiers::{TierSegment, Tiers};
use waiters::{Durability, Waiters};
use crate::producers::Producers;
use crate::segment::Segment;
use crate::wal_record::{self, PendingRecord};
use lookback_common::{Batch, ColumnType, Lsn, Schema};
use lookback_wal::{Wal, WalError};
use parking_lot::{Condvar, Mutex};
use std::collections::HashMap;
use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

/// Called once when an admitted batch is durable (or can never be).
pub type DurableCallback = Box<dyn FnOnce(Result<Lsn, DbError>) + Send>;

/// What admission decided for one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmitOutcome {
    pub lsn: Lsn,
    pub accepted: u32,
    pub deduplicated: u32,
    /// The producer already sent this sequence: nothing new was written.
    pub duplicate_batch: bool,
}

/// A consistent view of one table at `visible_lsn`.
#[derive(Clone)]
pub struct TableSnapshot {
    pub schema: Arc<Schema>,
    pub visible_lsn: Lsn,
    pub memtable: Vec<Arc<Batch>>,
    pub segments: Vec<Arc<Segment>>,
}

impl TableSnapshot {
    pub fn rows(&self) -> u64 {
        let mem: usize = self.memtable.iter().map(|b| b.rows()).sum();
        mem as u64 + self.segments.iter().map(|s| s.rows()).sum::<u64>()
    }
}

pub(crate) struct LiveSegment {
    pub entry: SegmentEntry,
    pub segment: Arc<Segment>,
}

/// A listed segment whose file is damaged (see [`TableState::damaged`]).
pub(crate) struct DamagedSegment {
    pub entry: SegmentEntry,
    pub reason: String,
}

impl TierSegment for LiveSegment {
    fn id(&self) -> u64 {
        self.entry.id
    }

    fn min_lsn(&self) -> Lsn {
        self.entry.min_lsn
    }
}

pub(crate) struct TableState {
    pub schema: Arc<Schema>,
    /// The last LSN assigned before the table existed (see manifest.rs).
    pub created_lsn: Lsn,
    pub tiers: Tiers<LiveSegment>,
    /// Listed segments that failed their checksums when opened at start-up. Kept in the
    /// manifest (the file may be restored from a copy) but never read: every snapshot of the
    /// table fails with their damage (XX001), so no query answers without their rows.
    pub damaged: Vec<DamagedSegment>,
    /// (app_id column, event_id column) when the table deduplicates event ids.
    pub dedup_columns: Option<(usize, usize)>,
}

pub(crate) struct DbState {
    pub tables: HashMap<String, TableState>,
    /// Dropped tables whose WAL records may still be replayed (see manifest.rs).
    pub dropped: Vec<DroppedTable>,
    pub producers: Producers,
    pub dedup: DedupWindow,
    pub next_segment_id: u64,
    pub manifest_generation: u64,
}

pub(crate) struct Inner {
    pub options: DbOptions,
    pub wal: Wal,
    pub state: Mutex<DbState>,
    /// Serializes manifest commits (short: mutate state, write manifest, checkpoint WAL).
    pub commit_lock: Mutex<()>,
    /// Serializes whole flushes (freeze, write segments, commit).
    pub flush_lock: Mutex<()>,
    /// Serializes whole merges; held for seconds, so never by the flusher.
    pub merge_lock: Mutex<()>,
    pub flush_wakeup: Condvar,
    pub flush_wakeup_lock: Mutex<bool>,
    pub stopping: AtomicBool,
    /// Wall-clock ms of the last admission; compaction waits for a quiet moment.
    pub last_admit_ms: AtomicU64,
    pub stats: DbStats,
    /// Acks of duplicate batches whose original is not yet durable (see `waiters`).
    pub waiters: Waiters<DbError>,
    _lock_file: File,
}

pub struct Db {
    inner: Arc<Inner>,
    flusher: Mutex<Option<JoinHandle<()>>>,
    compactor: Mutex<Option<JoinHandle<()>>>,
}

pub(crate) fn now_unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The `events` table deduplicates event ids (its text `app_id` and uuid `event_id`
/// columns); tables created by users store every row they are given.
pub(crate) fn dedup_columns(schema: &Schema) -> Option<(usize, usize)> {
    if schema.name != lookback_common::schema::events::TABLE_NAME {
        return None;
    }
    let app = schema.column_index("app_id")?;
    let id = schema.column_index("event_id")?;
    let types = (schema.columns[app].ty, schema.columns[id].ty);
    (types == (ColumnType::Text, ColumnType::Uuid)).then_some((app, id))
}

impl Db {
    /// Opens (or creates) the data directory and recovers it. See recovery.rs.
    pub fn open(options: DbOptions) -> Result<Db, DbError> {
        let inner = Arc::new(recovery::open(options)?);
        let flusher = flush::start_flusher(inner.clone());
        let compactor = flush::start_compactor(inner.clone());
        Ok(Db { inner, flusher: Mutex::new(Some(flusher)), compactor: Mutex::new(Some(compactor)) })
    }

    pub fn options(&self) -> &DbOptions {
        &self.inner.options
    }

    pub fn schema(&self, table: &str) -> Option<Arc<Schema>> {
        self.inner.state.lock().tables.get(table).map(|t| t.schema.clone())
    }

    pub fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.inner.state.lock().tables.keys().cloned().collect();
        names.sort();
        names
    }

    pub fn producer_last_seq(&self, producer_id: u64) -> u64 {
        self.inner.state.lock().producers.get(producer_id).map_or(0, |p| p.last_seq)
    }

    pub fn stats(&self) -> &DbStats {
        &self.inner.stats
    }

    pub fn gauges(&self) -> StorageGauges {
        let state = self.inner.state.lock();
        let mut g = StorageGauges {
            dedup_keys: state.dedup.len() as u64,
            dedup_evicted_early: state.dedup.evicted_early,
            producers: state.producers.len() as u64,
            ..StorageGauges::default()
        };
        for t in state.tables.values() {
            for m in t.tiers.memtables() {
                g.memtable_bytes += m.bytes() as u64;
                g.memtable_rows += m.rows() as u64;
            }
            g.damaged_segments += t.damaged.len() as u64;
            for s in &t.tiers.segments {
                g.segments += 1;
                g.segment_bytes += s.entry.file_bytes;
                g.segment_rows += s.entry.rows;
            }
        }
        g
    }

    /// Per-column on-disk bytes of a table's live segments (for the storage breakdown).
    pub fn column_bytes(&self, table: &str) -> Result<Vec<(String, u64)>, DbError> {
        let snap = self.snapshot(table)?;
        let mut out: Vec<(String, u64)> = snap.schema.columns.iter().map(|c| (c.name.clone(), 0)).collect();
        for seg in &snap.segments {
            for (slot, bytes) in out.iter_mut().zip(seg.column_bytes()) {
                slot.1 += bytes;
            }
        }
        let index: u64 = snap.segments.iter().map(|s| s.index_bytes()).sum();
        out.push(("(indexes: bitmaps, fingerprints)".to_string(), index));
        Ok(out)
    }

    pub fn wal(&self) -> &Wal {
        &self.inner.wal
    }

    /// Admits a batch: see the module docs. `on_durable` is called exactly once.
    pub fn admit(
        &self,
        table: &str,
        producer_id: u64,
        seq: u64,
        batch: Batch,
        on_durable: DurableCallback,
    ) -> Result<AdmitOutcome, DbError> {
        admit(&self.inner, table, producer_id, seq, batch, None, on_durable)
    }

    /// [`Self::admit`] of a batch that arrived encoded: `encoded` is its batch-codec encoding
    /// (it decodes to `batch`), logged as it is unless deduplication drops rows.
    pub fn admit_encoded(
        &self,
        table: &str,
        producer_id: u64,
        seq: u64,
        batch: Batch,
        encoded: &[u8],
        on_durable: DurableCallback,
    ) -> Result<AdmitOutcome, DbError> {
        admit(&self.inner, table, producer_id, seq, batch, Some(encoded), on_durable)
    }

    /// False while memtables exceed `memory_bytes_max` (admission would answer overloaded).
    pub fn has_memory_room(&self) -> bool {
        memory_bytes(&self.inner.state.lock()) < self.inner.options.memory_bytes_max
    }

    /// A consistent snapshot of `table` at the current durable LSN.
    pub fn snapshot(&self, table: &str) -> Result<TableSnapshot, DbError> {
        let state = self.inner.state.lock();
        let t = state.tables.get(table).ok_or_else(|| DbError::UnknownTable(table.to_string()))?;
        if let Some(d) = t.damaged.first() {
            return Err(DbError::Corrupt(format!(
                "table {table} cannot be read: its segment {} is corrupt ({}); restore segments/{}.seg from a copy and restart",
                d.entry.id, d.reason, d.entry.id
            )));
        }
        let visible_lsn = self.inner.wal.durable_lsn();
        let memtable = t.tiers.visible_batches(visible_lsn);
        let segments = t.tiers.segments.iter().map(|s| s.segment.clone()).collect();
        Ok(TableSnapshot { schema: t.schema.clone(), visible_lsn, memtable, segments })
    }

    /// Creates an empty table: durable (in the manifest) when this returns. Its columns must
    /// not name a sort key or bitmap index the segment writer cannot build.
    pub fn create_table(&self, schema: Schema) -> Result<(), DbError> {
        ddl::create_table(&self.inner, schema)
    }

    /// Drops a table and deletes its segments; durable when this returns. Rows of it still in
    /// the WAL are skipped by recovery.
    pub fn drop_table(&self, name: &str) -> Result<(), DbError> {
        ddl::drop_table(&self.inner, name)
    }

    /// Flushes every memtable and waits for it (used by tests, admin and clean shutdown).
    pub fn flush_all(&self) -> Result<(), DbError> {
        flush::flush_all(&self.inner)
    }

    /// Flushes, then merges segments as far as `compaction_rows_max` allows.
    pub fn compact_all(&self) -> Result<(), DbError> {
        flush::flush_all(&self.inner)?;
        flush::compact_full(&self.inner)
    }

    /// Stops the flusher, flushes what is in memory (best effort), and shuts the WAL down.
    pub fn shutdown(&self) {
        if self.inner.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        flush::wake_flusher(&self.inner);
        for thread in [&self.flusher, &self.compactor] {
            if let Some(h) = thread.lock().take() {
                let _ = h.join();
            }
        }
        if self.inner.options.flush_on_shutdown && self.inner.wal.poisoned().is_none() {
            if let Err(e) = flush::flush_all(&self.inner) {
                tracing::warn!(error = %e, "final flush at shutdown failed; the WAL still holds the data");
            }
        }
        self.inner.wal.shutdown();
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn memory_bytes(state: &DbState) -> usize {
    state
        .tables
        .values()
        .map(|t| t.tiers.memory_bytes())
        .sum()
}

fn admit(
    inner: &Arc<Inner>,
    table: &str,
    producer_id: u64,
    seq: u64,
    batch: Batch,
    encoded: Option<&[u8]>,
    on_durable: DurableCallback,
) -> Result<AdmitOutcome, DbError> {
    if inner.stopping.load(Ordering::Acquire) {
        return Err(DbError::ShuttingDown);
    }
    if let Some(reason) = inner.wal.poisoned() {
        return Err(DbError::Wal(WalError::Poisoned(reason)));
    }
    // Copied before the lock: under it, only the ingest time is written.
    let pending = encoded.map(|bytes| PendingRecord::new(inner.wal.payload_buffer(), table, producer_id, seq, bytes));
    let mut state = inner.state.lock();
    if producer_id != 0 {
        if let Some(p) = state.producers.get(producer_id).filter(|p| seq <= p.last_seq) {
            drop(state);
            return Ok(admit_duplicate_batch(inner, p.last_lsn, batch.rows(), on_durable));
        }
    }
    let used = memory_bytes(&state);
    if used >= inner.options.memory_bytes_max {
        inner.stats.overloaded.fetch_add(1, Ordering::Relaxed);
        return Err(DbError::Overloaded(format!(
            "memtables hold {used} bytes, over memory_bytes_max {}; flushing is behind",
            inner.options.memory_bytes_max
        )));
    }
    let t = state.tables.get(table).ok_or_else(|| DbError::UnknownTable(table.to_string()))?;
    let schema = t.schema.clone();
    if batch.columns().len() != schema.columns.len() {
        return Err(DbError::SchemaMismatch(format!("table {table} has {} columns", schema.columns.len())));
    }
    let now_ms = now_unix_ms();
    inner.last_admit_ms.store(now_ms, Ordering::Relaxed);
    let rows_in = batch.rows();
    let dedup_columns = t.dedup_columns;
    let batch = match dedup_columns {
        Some(cols) => dedup_batch(&mut state.dedup, batch, cols, now_ms),
        None => batch,
    };
    let accepted = batch.rows();
    let payload = match pending {
        Some(pending) if accepted == rows_in => pending.finish(now_ms),
        pending => {
            let buffer = pending.map_or_else(|| inner.wal.payload_buffer(), PendingRecord::into_buffer);
            wal_record::encode_into(buffer, table, producer_id, seq, now_ms, &batch)
        }
    };
    let waiter_inner = inner.clone();
    let appended = inner.wal.append(
        payload,
        Box::new(move |res: Result<Lsn, WalError>| {
            let res = res.map_err(DbError::Wal);
            on_durable(res.clone());
            waiter_inner.waiters.release(&waiter_inner.wal, res);
        }),
    );
    let lsn = match appended {
        Ok(lsn) => lsn,
        Err(e) => {
            // Nothing was logged: the events must not count as seen. The keys inserted are
            // exactly those of the surviving rows.
            if let Some((app, id)) = dedup_columns {
                state.dedup.forget(column_keys(batch.column(app), batch.column(id)));
            }
            return Err(match e {
                WalError::RecordTooLarge { bytes, max } => DbError::TooLarge(format!(
                    "the batch encodes to a {bytes}-byte log record, over the {max}-byte limit; send smaller batches"
                )),
                other => DbError::Wal(other),
            });
        }
    };
    state.producers.record(producer_id, seq, lsn);
    let t = state.tables.get_mut(table).expect("table checked above");
    // A full memtable is frozen here, not when the flusher gets to it: while the flusher is busy
    // with an earlier one, the active memtable would otherwise keep growing (to 3x its limit was
    // seen), and a flush that large both takes seconds and frees its memory only at the end.
    let flush_now = t.tiers.admit(MemBatch { lsn, ingest_unix_ms: now_ms, batch: Arc::new(batch) }, inner.options.memtable_bytes_max);
    drop(state);
    inner.stats.record_admit(rows_in, accepted);
    if flush_now {
        flush::wake_flusher(inner);
    }
    Ok(AdmitOutcome {
        lsn,
        accepted: accepted as u32,
        deduplicated: (rows_in - accepted) as u32,
        duplicate_batch: false,
    })
}

/// Acknowledges a resent batch with the LSN of the producer's last applied batch, once that LSN
/// is durable (immediately if it already is).
fn admit_duplicate_batch(inner: &Arc<Inner>, last_lsn: Lsn, rows: usize, on_durable: DurableCallback) -> AdmitOutcome {
    inner.stats.duplicate_batches.fetch_add(1, Ordering::Relaxed);
    inner.waiters.when_durable(last_lsn, &inner.wal, on_durable);
    AdmitOutcome { lsn: last_lsn, accepted: 0, deduplicated: rows as u32, duplicate_batch: true }
}

impl Durability<DbError> for Wal {
    fn durable_lsn(&self) -> Lsn {
        Wal::durable_lsn(self)
    }

    fn poisoned(&self) -> Option<DbError> {
        Wal::poisoned(self).map(|reason| DbError::Wal(WalError::Poisoned(reason)))
    }
}

/// Drops rows whose (app_id, event_id) is in the window or repeats within the batch; the
/// surviving rows' keys are now in the window.
fn dedup_batch(window: &mut DedupWindow, batch: Batch, (app, id): (usize, usize), now_ms: u64) -> Batch {
    let keys: Vec<u128> = column_keys(batch.column(app), batch.column(id)).collect();
    let mut keep: Vec<u32> = Vec::with_capacity(keys.len());
    window.insert_batch(&keys, now_ms, |row| keep.push(row as u32));
    if keep.len() == batch.rows() {
        batch
    } else {
        batch.take(&keep)
    }
}
