//! Flushing memtables to segments, committing manifests, and size-tiered compaction.
//!
//! Commit protocol for a new segment (each step durable before the next):
//! 1. wait until the WAL is durable up to the memtable's last LSN;
//! 2. sort rows by the table's sort key and write `segments/<id>.seg` (fsync file, fsync dir);
//! 3. swap the segment in for the frozen memtable (readers switch atomically) and write the new
//!    manifest (temp, fsync, rename, fsync dir);
//! 4. checkpoint the WAL at the lowest LSN still only in memory, minus one: only now may WAL
//!    segments be recycled. Compaction inputs are deleted only after step 3.
//!
//! A crash between any two steps leaves either an orphan segment file (removed at start-up;
//! its rows are replayed from the WAL) or a committed manifest with the WAL still holding
//! records it no longer needs (skipped by LSN at replay). A failed step leaves the frozen
//! memtable in memory and is retried on the next flush, so a full disk stops flushing — and,
//! through memory_bytes_max, admission — until space returns, without a restart.

use crate::sched::set_thread_priority;
use super::recovery::segment_path;
use super::{now_unix_ms, DbError, DbState, Inner, LiveSegment};
use crate::fsutil;
use crate::manifest::{self, Manifest, SegmentEntry, TableEntry};
use crate::memtable::Memtable;
use crate::segment::{write_segment_sorting, SegmentInfo, SegmentWriteOptions};
use crate::segment::Segment;
use lookback_common::{Batch, Lsn, Schema};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub(super) fn start_flusher(inner: Arc<Inner>) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("lookback-flush".into())
        .spawn(move || flusher_loop(&inner))
        .expect("spawn the flusher thread")
}

pub(super) fn wake_flusher(inner: &Inner) {
    *inner.flush_wakeup_lock.lock() = true;
    inner.flush_wakeup.notify_one();
}

fn flusher_loop(inner: &Inner) {
    set_thread_priority(false, FLUSH_THREAD_NICE);
    let mut urgency = FlushUrgency { urgent: true };
    let interval = Duration::from_millis(inner.options.flush_interval_ms.max(10));
    let tick = interval.min(Duration::from_millis(500));
    loop {
        {
            let mut woken = inner.flush_wakeup_lock.lock();
            if !*woken {
                inner.flush_wakeup.wait_for(&mut woken, tick);
            }
            *woken = false;
        }
        if inner.stopping.load(Ordering::Acquire) || inner.wal.poisoned().is_some() {
            return;
        }
        for (table, freeze_active) in tables_due(inner, interval) {
            match flush_table(inner, &table, freeze_active, Some(&mut urgency)) {
                Ok(()) | Err(DbError::UnknownTable(_)) => {} // dropped since it was listed
                Err(e) => {
                inner.stats.flush_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(table, error = %e, "flush failed; data stays in memory and the WAL, retrying");
                std::thread::sleep(tick);
                }
            }
        }
    }
}

/// How often the compactor looks for work.
const COMPACTION_POLL_MS: u64 = 250;
/// Time without admissions after which non-urgent compaction may start.
const COMPACTION_QUIET_MS: u64 = 1_000;
/// Nice value of the compaction thread when it must compete for the CPU (too many segments):
/// merges still yield to admission and flushes, which producers wait on.
const COMPACTION_THREAD_NICE: i32 = 10;
/// Nice value of the flush thread when it must compete for the CPU: admission (which producers
/// wait on) goes first; memory_bytes_max stops admission when flushing does not keep up.
const FLUSH_THREAD_NICE: i32 = 5;
/// Memtables (active and frozen) above this share of memory_bytes_max, in percent, make the
/// next flush use more than one thread ([`FlushUrgency`]).
const FLUSH_URGENT_MEMORY_PERCENT: usize = 50;

/// How the flusher uses the CPU, chosen before each flush. Why: a flush is seconds of CPU, and
/// on both cores (ranking and encoding columns in parallel) every admission that ran beside it
/// waited for the CPU: at half the maximum ingest rate (945 k events/s) the ack p99 after
/// warm-up was 19-31 ms, with one flush thread 10-12 ms. So a flush uses one thread, leaving a
/// core to admission, while memtables hold less than
/// [`FLUSH_URGENT_MEMORY_PERCENT`] of memory_bytes_max; above it flushing is behind, producers
/// will soon wait on it, and it uses every thread the segment writer may.
struct FlushUrgency {
    urgent: bool,
}

impl FlushUrgency {
    fn judge(&mut self, inner: &Inner) {
        let used = super::memory_bytes(&inner.state.lock());
        self.urgent = used * 100 > inner.options.memory_bytes_max.saturating_mul(FLUSH_URGENT_MEMORY_PERCENT);
    }

    fn threads(&self, inner: &Inner) -> usize {
        if self.urgent {
            inner.options.flush_segment.threads
        } else {
            1
        }
    }
}

pub(super) fn start_compactor(inner: Arc<Inner>) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("lookback-compact".into())
        .spawn(move || compactor_loop(&inner))
        .expect("spawn the compaction thread")
}

/// Compaction waits for ingest to pause for [`COMPACTION_QUIET_MS`] and then runs on idle
/// CPU only (SCHED_IDLE), so it never slows ingest, until some table holds more than
/// `compaction_urgent_segments` segments; then it runs regardless, at a low priority. A merge
/// decodes its inputs whole (memory: about their decoded size), so deferring merges also keeps
/// that memory out of the way of a burst.
fn compactor_loop(inner: &Inner) {
    let mut urgent = None;
    while !inner.stopping.load(Ordering::Acquire) && inner.wal.poisoned().is_none() {
        let now_urgent = segments_max(inner) > inner.options.compaction_urgent_segments;
        if urgent != Some(now_urgent) {
            set_thread_priority(!now_urgent, COMPACTION_THREAD_NICE);
            urgent = Some(now_urgent);
        }
        let quiet = now_unix_ms().saturating_sub(inner.last_admit_ms.load(Ordering::Relaxed)) >= COMPACTION_QUIET_MS;
        if !now_urgent && !quiet {
            std::thread::sleep(Duration::from_millis(COMPACTION_POLL_MS));
            continue;
        }
        match compact_tiered(inner, 1) {
            Ok(true) => continue,
            Ok(false) | Err(DbError::UnknownTable(_)) => {}
            Err(e) => {
                inner.stats.compaction_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "compaction failed; will retry");
            }
        }
        std::thread::sleep(Duration::from_millis(COMPACTION_POLL_MS));
    }
}

fn segments_max(inner: &Inner) -> usize {
    inner.state.lock().tables.values().map(|t| t.tiers.segments.len()).max().unwrap_or(0)
}

/// Tables with frozen memtables (frozen full by admission, or left over from a failed flush),
/// or whose active memtable is full or holds a batch older than the flush interval; with
/// whether the active memtable is due too. A table flushed only for its frozen memtables keeps
/// its active one: freezing that too would write a tiny segment of whatever arrived meanwhile.
fn tables_due(inner: &Inner, interval: Duration) -> Vec<(String, bool)> {
    let state = inner.state.lock();
    let now = now_unix_ms();
    state
        .tables
        .iter()
        .map(|(name, t)| {
            let full = t.tiers.active.bytes() >= inner.options.memtable_bytes_max;
            let old = t.tiers.active.batches().first().is_some_and(|b| now.saturating_sub(b.ingest_unix_ms) >= interval.as_millis() as u64);
            (name.clone(), full || old, !t.tiers.frozen.is_empty())
        })
        .filter(|(_, active_due, frozen)| *active_due || *frozen)
        .map(|(name, active_due, _)| (name, active_due))
        .collect()
}

pub(super) fn flush_all(inner: &Inner) -> Result<(), DbError> {
    let names: Vec<String> = inner.state.lock().tables.keys().cloned().collect();
    for name in names {
        flush_table(inner, &name, true, None)?;
    }
    Ok(())
}

/// Flushes every frozen memtable of `table`, oldest first, after freezing the active one too
/// when `freeze_active`. The flusher thread passes its `urgency`, judged before each flush.
fn flush_table(inner: &Inner, table: &str, freeze_active: bool, mut urgency: Option<&mut FlushUrgency>) -> Result<(), DbError> {
    let _flush = inner.flush_lock.lock();
    let frozen: Vec<Arc<Memtable>> = {
        let mut state = inner.state.lock();
        let t = state.tables.get_mut(table).ok_or_else(|| DbError::UnknownTable(table.into()))?;
        if freeze_active {
            t.tiers.freeze_active();
        }
        t.tiers.frozen()
    };
    for m in frozen {
        let threads = match urgency.as_deref_mut() {
            Some(urgency) => {
                urgency.judge(inner);
                urgency.threads(inner)
            }
            None => inner.options.flush_segment.threads,
        };
        flush_frozen(inner, table, &m, threads)?;
    }
    Ok(())
}

/// Writes a frozen memtable as a segment (ranking and encoding on `threads` threads) and
/// commits it.
fn flush_frozen(inner: &Inner, table: &str, frozen: &Arc<Memtable>, threads: usize) -> Result<(), DbError> {
    let started = Instant::now();
    let (min_lsn, max_lsn) = (frozen.min_lsn().unwrap_or(0), frozen.max_lsn().unwrap_or(0));
    inner.wal.wait_durable(max_lsn)?;
    let schema = table_schema(inner, table)?;
    let parts: Vec<&Batch> = frozen.batches().iter().map(|b| b.batch.as_ref()).filter(|b| b.rows() > 0).collect();
    let new_segment = if parts.is_empty() {
        None
    } else {
        let ingest = frozen.ingest_range_ms();
        let info = (min_lsn, max_lsn, ingest, 0u8);
        let options = SegmentWriteOptions { threads, ..inner.options.flush_segment.clone() };
        Some(write_sorted_segment(inner, &schema, &parts, info, &options)?)
    };
    commit(inner, |state| {
        let t = state.tables.get_mut(table).expect("tables are never dropped while flushing");
        t.tiers.commit_flush(frozen, new_segment);
    })?;
    inner.stats.flushes.fetch_add(1, Ordering::Relaxed);
    inner.stats.flush_micros_total.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    tracing::debug!(table, rows = frozen.rows(), min_lsn, max_lsn, ms = started.elapsed().as_millis() as u64, "flushed memtable");
    Ok(())
}

fn table_schema(inner: &Inner, table: &str) -> Result<Arc<Schema>, DbError> {
    let state = inner.state.lock();
    Ok(state.tables.get(table).ok_or_else(|| DbError::UnknownTable(table.into()))?.schema.clone())
}

/// (min_lsn, max_lsn, (min_ingest_ms, max_ingest_ms), level)
type SegmentOrigin = (Lsn, Lsn, (u64, u64), u8);

/// Writes the rows of `batches`, sorted, as a new segment file, syncs the directory and
/// opens it.
fn write_sorted_segment(
    inner: &Inner,
    schema: &Schema,
    batches: &[&Batch],
    (min_lsn, max_lsn, (min_ingest_ms, max_ingest_ms), level): SegmentOrigin,
    write_options: &SegmentWriteOptions,
) -> Result<LiveSegment, DbError> {
    let id = {
        let mut state = inner.state.lock();
        state.next_segment_id += 1;
        state.next_segment_id - 1
    };
    let rows: usize = batches.iter().map(|b| b.rows()).sum();
    let path = segment_path(&inner.options, id);
    let info = SegmentInfo { segment_id: id, min_lsn, max_lsn };
    let faults = &inner.options.faults;
    let written = write_segment_sorting(&path, schema, batches, &info, write_options, faults)
        .and_then(|summary| fsutil::sync_dir(&inner.options.segments_dir(), faults).map(|_| summary));
    let summary = match written {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            return Err(e.into());
        }
    };
    let segment = Segment::open(&path)?;
    assert_eq!(segment.rows(), rows as u64, "segment read back must hold every row written");
    let entry = SegmentEntry { id, rows: summary.rows, file_bytes: summary.file_bytes, min_lsn, max_lsn, min_ingest_ms, max_ingest_ms, level };
    Ok(LiveSegment { entry, segment: Arc::new(segment) })
}

/// Applies `mutate` to the state and durably writes the resulting manifest, then checkpoints
/// the WAL, under `commit_lock` so manifests are written in generation order.
fn commit(inner: &Inner, mutate: impl FnOnce(&mut DbState)) -> Result<(), DbError> {
    let _commit = inner.commit_lock.lock();
    let (manifest, last_assigned) = {
        let mut state = inner.state.lock();
        mutate(&mut state);
        state.manifest_generation += 1;
        let last_assigned = inner.wal.last_assigned_lsn();
        (build_manifest(&mut state, last_assigned), last_assigned)
    };
    // The manifest's producer sequences name batches up to `last_assigned`; they must be in the
    // durable WAL before the manifest says they were applied. Otherwise a crash right after
    // this write loses a batch the manifest counts as applied, and its resend is acknowledged
    // as a duplicate: an acknowledged batch lost (seen in the SIGKILL test).
    inner.wal.wait_durable(last_assigned)?;
    manifest::write_manifest(&inner.options.data_dir, &manifest, &inner.options.faults)?;
    inner.wal.checkpoint(manifest.checkpoint_lsn)?;
    Ok(())
}

/// Builds the manifest for the current state. The checkpoint is the LSN below the oldest
/// record still only in a memtable; with nothing in memory, everything assigned is in segments
/// (admission assigns LSNs and fills memtables under the same lock that is held here).
/// Dropped tables whose records are all behind the checkpoint are forgotten.
pub(super) fn build_manifest(state: &mut DbState, last_assigned: Lsn) -> Manifest {
    let oldest_in_memory = state.tables.values().filter_map(|t| t.tiers.oldest_in_memory()).min();
    let checkpoint_lsn = oldest_in_memory.map_or(last_assigned, |lsn| lsn - 1);
    state.dropped.retain(|d| d.drop_lsn > checkpoint_lsn);
    let mut tables: Vec<TableEntry> = state
        .tables
        .values()
        .map(|t| TableEntry {
            schema: t.schema.as_ref().clone(),
            created_lsn: t.created_lsn,
            segments: listed_segments(t),
        })
        .collect();
    tables.sort_by(|a, b| a.schema.name.cmp(&b.schema.name));
    Manifest {
        generation: state.manifest_generation,
        checkpoint_lsn,
        next_segment_id: state.next_segment_id,
        tables,
        producers: state.producers.entries(),
        dropped: state.dropped.clone(),
    }
}

/// Every segment the manifest lists for a table: the live ones and the damaged ones, which
/// stay listed (so neither their file nor their rows are forgotten) but are never merged.
fn listed_segments(t: &super::TableState) -> Vec<SegmentEntry> {
    let mut entries: Vec<SegmentEntry> =
        t.tiers.segments.iter().map(|s| s.entry.clone()).chain(t.damaged.iter().map(|d| d.entry.clone())).collect();
    entries.sort_by_key(|e| e.min_lsn);
    entries
}

/// Size-tiered compaction: while some level of some table holds `compaction_fan_in` segments
/// whose rows fit in `compaction_rows_max`, merge the oldest of them into the next level; at
/// most `merges_max` merges per call. Returns whether it merged anything.
fn compact_tiered(inner: &Inner, merges_max: usize) -> Result<bool, DbError> {
    let mut merged = false;
    for _ in 0..merges_max {
        let pick = {
            let state = inner.state.lock();
            state.tables.iter().find_map(|(name, t)| pick_tier(inner, &t.tiers.segments).map(|ids| (name.clone(), ids)))
        };
        let Some((table, ids)) = pick else { return Ok(merged) };
        if inner.stopping.load(Ordering::Acquire) {
            return Ok(merged);
        }
        merge(inner, &table, &ids)?;
        merged = true;
    }
    Ok(merged)
}

fn pick_tier(inner: &Inner, segments: &[LiveSegment]) -> Option<Vec<u64>> {
    let fan_in = inner.options.compaction_fan_in.max(2);
    let max_level = segments.iter().map(|s| s.entry.level).max()?;
    for level in 0..=max_level {
        let mut at: Vec<&LiveSegment> = segments.iter().filter(|s| s.entry.level == level).collect();
        if at.len() < fan_in {
            continue;
        }
        at.sort_by_key(|s| s.entry.min_lsn);
        let group = &at[..fan_in];
        if group.iter().map(|s| s.entry.rows).sum::<u64>() <= inner.options.compaction_rows_max {
            return Some(group.iter().map(|s| s.entry.id).collect());
        }
    }
    None
}

/// Passes of [`compact_full`]: a pass can find its plan stale (the background compactor merged
/// some of the same segments meanwhile) and then plans again; bounded, since ingest may keep
/// adding segments.
const COMPACT_FULL_PASSES_MAX: usize = 4;

/// Merges every table's segments into as few as `compaction_rows_max` allows.
pub(super) fn compact_full(inner: &Inner) -> Result<(), DbError> {
    for _ in 0..COMPACT_FULL_PASSES_MAX {
        let plans: Vec<(String, Vec<Vec<u64>>)> = {
            let state = inner.state.lock();
            state.tables.iter().map(|(name, t)| (name.clone(), plan_full(&t.tiers.segments, inner.options.compaction_rows_max))).collect()
        };
        if plans.iter().all(|(_, groups)| groups.is_empty()) {
            break;
        }
        for (table, groups) in plans {
            for ids in groups {
                merge(inner, &table, &ids)?;
            }
        }
    }
    Ok(())
}

fn plan_full(segments: &[LiveSegment], rows_max: u64) -> Vec<Vec<u64>> {
    let mut sorted: Vec<&LiveSegment> = segments.iter().collect();
    sorted.sort_by_key(|s| s.entry.min_lsn);
    let mut groups: Vec<Vec<u64>> = Vec::new();
    let (mut current, mut rows) = (Vec::new(), 0u64);
    for s in sorted {
        if rows + s.entry.rows > rows_max && !current.is_empty() {
            groups.push(std::mem::take(&mut current));
            rows = 0;
        }
        current.push(s.entry.id);
        rows += s.entry.rows;
    }
    groups.push(current);
    groups.retain(|g| g.len() > 1);
    groups
}

fn merge(inner: &Inner, table: &str, ids: &[u64]) -> Result<(), DbError> {
    let _merge = inner.merge_lock.lock();
    let started = Instant::now();
    let (schema, inputs) = {
        let state = inner.state.lock();
        let t = state.tables.get(table).ok_or_else(|| DbError::UnknownTable(table.into()))?;
        // None: a concurrent commit already changed this set; the next pass re-plans.
        let Some(inputs) = t.tiers.merge_inputs(ids) else { return Ok(()) };
        let inputs: Vec<(SegmentEntry, Arc<Segment>)> = inputs.into_iter().map(|s| (s.entry.clone(), s.segment.clone())).collect();
        (t.schema.clone(), inputs)
    };
    let batches = inputs.iter().map(|(_, s)| s.read_all()).collect::<Result<Vec<Batch>, _>>()?;
    let refs: Vec<&Batch> = batches.iter().collect();
    let origin = (
        inputs.iter().map(|(e, _)| e.min_lsn).min().unwrap_or(0),
        inputs.iter().map(|(e, _)| e.max_lsn).max().unwrap_or(0),
        (
            inputs.iter().map(|(e, _)| e.min_ingest_ms).min().unwrap_or(0),
            inputs.iter().map(|(e, _)| e.max_ingest_ms).max().unwrap_or(0),
        ),
        inputs.iter().map(|(e, _)| e.level).max().unwrap_or(0).saturating_add(1),
    );
    let options = SegmentWriteOptions {
        zstd_level: inner.options.compaction_zstd_level,
        block_rows: inner.options.compaction_block_rows,
        ..inner.options.flush_segment.clone()
    };
    let output = write_sorted_segment(inner, &schema, &refs, origin, &options)?;
    drop(refs);
    drop(batches);
    let (out_id, out_rows) = (output.entry.id, output.entry.rows);
    commit(inner, |state| {
        let t = state.tables.get_mut(table).expect("tables are never dropped while compacting");
        t.tiers.commit_merge(ids, output);
    })?;
    for (entry, _) in &inputs {
        fsutil::remove_file(&segment_path(&inner.options, entry.id), &inner.options.faults)?;
    }
    inner.stats.compactions.fetch_add(1, Ordering::Relaxed);
    tracing::info!(table, inputs = ids.len(), output = out_id, rows = out_rows, ms = started.elapsed().as_millis() as u64, "compacted segments");
    Ok(())
}
