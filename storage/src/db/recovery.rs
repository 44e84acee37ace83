//! Opening a data directory: lock it, read (or create) the manifest, drop orphan files from an
//! interrupted flush or compaction, open live segments, rebuild the dedup window from recent
//! segments, and replay the WAL after the manifest's checkpoint into memtables.

use super::{dedup_columns, now_unix_ms, DamagedSegment, DbError, DbOptions, DbState, Inner, LiveSegment, TableState};
use crate::dedup::{column_keys, DedupWindow};
use crate::manifest::{self, Manifest, TableEntry};
use super::tiers::Tiers;
use super::waiters::Waiters;
use crate::memtable::MemBatch;
use crate::producers::Producers;
use crate::segment::Segment;
use crate::{fsutil, wal_record};
use lookback_common::{Lsn, Schema};
use lookback_wal::Wal;
use parking_lot::{Condvar, Mutex};
use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

const LOCK_FILE: &str = "LOCK";
const SEGMENT_SUFFIX: &str = ".seg";

pub(crate) fn segment_path(options: &DbOptions, id: u64) -> PathBuf {
    options.segments_dir().join(format!("{id:020}{SEGMENT_SUFFIX}"))
}

pub(super) fn open(options: DbOptions) -> Result<Inner, DbError> {
    let started = Instant::now();
    for dir in [options.data_dir.clone(), options.segments_dir()] {
        std::fs::create_dir_all(&dir)
            .map_err(|e| DbError::Storage(format!("create directory {}: {e}", dir.display())))?;
    }
    let lock_file = lock_data_dir(&options.data_dir)?;
    let manifest = load_or_create_manifest(&options)?;
    remove_orphans(&options, &manifest)?;
    let tables = open_tables(&options, &manifest)?;
    let mut state = DbState {
        dedup: DedupWindow::new(options.dedup_window_ms, options.dedup_entries_max),
        producers: Producers::new(options.producers_max, &manifest.producers),
        tables,
        dropped: manifest.dropped.clone(),
        next_segment_id: manifest.next_segment_id,
        manifest_generation: manifest.generation,
    };
    rebuild_dedup(&options, &mut state)?;
    let (wal, report) = Wal::open(options.wal_options(), manifest.checkpoint_lsn, &mut |lsn, payload| {
        replay_record(&mut state, lsn, payload)
    })?;
    if let Some(t) = &report.truncated {
        tracing::warn!(path = %t.path.display(), offset = t.offset, reason = %t.reason, "truncated torn WAL tail");
    }
    tracing::info!(
        checkpoint_lsn = manifest.checkpoint_lsn,
        replayed = report.records_replayed,
        last_lsn = report.last_lsn,
        segments = state.tables.values().map(|t| t.tiers.segments.len()).sum::<usize>(),
        backend = ?wal.backend(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "recovered data directory"
    );
    let inner = Inner {
        options,
        wal,
        state: Mutex::new(state),
        commit_lock: Mutex::new(()),
        flush_lock: Mutex::new(()),
        merge_lock: Mutex::new(()),
        flush_wakeup: Condvar::new(),
        flush_wakeup_lock: Mutex::new(false),
        stopping: AtomicBool::new(false),
        last_admit_ms: AtomicU64::new(0),
        stats: Default::default(),
        waiters: Waiters::new(),
        _lock_file: lock_file,
    };
    inner.stats.recovery_micros.store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    inner.stats.recovered_records.store(report.records_replayed, Ordering::Relaxed);
    Ok(inner)
}

/// An exclusive advisory lock, so two processes never write one directory.
fn lock_data_dir(dir: &Path) -> Result<File, DbError> {
    let path = dir.join(LOCK_FILE);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| DbError::Storage(format!("open {}: {e}", path.display())))?;
    // SAFETY: flock on a file descriptor we own; no memory is passed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(DbError::Locked { path: dir.display().to_string() });
    }
    Ok(file)
}

fn load_or_create_manifest(options: &DbOptions) -> Result<Manifest, DbError> {
    if let Some(m) = manifest::read_manifest(&options.data_dir)? {
        return Ok(m);
    }
    let has_files = |dir: PathBuf| std::fs::read_dir(dir).map(|mut d| d.next().is_some()).unwrap_or(false);
    if has_files(options.wal_dir()) || has_files(options.segments_dir()) {
        return Err(DbError::Corrupt(format!(
            "data directory {} has WAL or segment files but no MANIFEST; refusing to start rather than treat it as empty",
            options.data_dir.display()
        )));
    }
    let manifest = Manifest {
        generation: 1,
        checkpoint_lsn: 0,
        next_segment_id: 1,
        tables: vec![TableEntry { schema: Schema::events(), created_lsn: 0, segments: Vec::new() }],
        producers: Vec::new(),
        dropped: Vec::new(),
    };
    manifest::write_manifest(&options.data_dir, &manifest, &options.faults)?;
    tracing::info!(dir = %options.data_dir.display(), "initialized new data directory with table events");
    Ok(manifest)
}

/// Segment files not in the manifest are leftovers of a flush or compaction that crashed
/// before its manifest commit (their rows are still in the WAL, or in the inputs).
fn remove_orphans(options: &DbOptions, manifest: &Manifest) -> Result<(), DbError> {
    let live: std::collections::HashSet<PathBuf> = manifest
        .tables
        .iter()
        .flat_map(|t| t.segments.iter().map(|s| segment_path(options, s.id)))
        .collect();
    let dir = options.segments_dir();
    let entries = std::fs::read_dir(&dir).map_err(|e| DbError::Storage(format!("list {}: {e}", dir.display())))?;
    for entry in entries {
        let path = entry.map_err(|e| DbError::Storage(format!("list {}: {e}", dir.display())))?.path();
        if !live.contains(&path) {
            tracing::info!(path = %path.display(), "removing orphan segment file");
            fsutil::remove_file(&path, &options.faults)?;
        }
    }
    Ok(())
}

fn open_tables(options: &DbOptions, manifest: &Manifest) -> Result<HashMap<String, TableState>, DbError> {
    let mut tables = HashMap::new();
    for t in &manifest.tables {
        let schema = Arc::new(t.schema.clone());
        let (mut segments, mut damaged) = (Vec::with_capacity(t.segments.len()), Vec::new());
        for entry in &t.segments {
            match open_segment(options, &schema, entry) {
                Ok(segment) => segments.push(LiveSegment { entry: entry.clone(), segment: Arc::new(segment) }),
                // A damaged file must not keep the server (and every other table) down: the
                // table's queries answer XX001 until it is restored; see TableState::damaged.
                Err(DbError::Corrupt(reason)) => {
                    tracing::error!(table = %t.schema.name, segment = entry.id, %reason, "damaged segment: queries of this table fail until it is restored");
                    damaged.push(DamagedSegment { entry: entry.clone(), reason });
                }
                Err(e) => return Err(e),
            }
        }
        let state = TableState {
            damaged,
            dedup_columns: dedup_columns(&schema),
            created_lsn: t.created_lsn,
            schema,
            tiers: Tiers::new(segments),
        };
        tables.insert(t.schema.name.clone(), state);
    }
    Ok(tables)
}

/// Opens a listed segment and checks it against its manifest entry. A missing file or an I/O
/// failure is an error; damage (`DbError::Corrupt`) is for the caller to quarantine.
fn open_segment(options: &DbOptions, schema: &Schema, entry: &crate::manifest::SegmentEntry) -> Result<Segment, DbError> {
    let path = segment_path(options, entry.id);
    let segment = Segment::open(&path)?;
    if segment.rows() != entry.rows || segment.schema() != schema {
        return Err(DbError::Corrupt(format!(
            "segment {} does not match the manifest (rows {} vs {})",
            path.display(),
            segment.rows(),
            entry.rows
        )));
    }
    Ok(segment)
}

/// Re-inserts the event keys of segments written within the dedup window, newest first, up to
/// the window's entry limit, so a retry that arrives after a restart is still recognised.
/// A corrupt block is logged and skipped (with the rest of its segment), not fatal.
fn rebuild_dedup(options: &DbOptions, state: &mut DbState) -> Result<(), DbError> {
    let now = now_unix_ms();
    let horizon = now.saturating_sub(options.dedup_window_ms);
    let mut budget = options.dedup_entries_max as u64;
    for t in state.tables.values() {
        let Some((app, id)) = t.dedup_columns else { continue };
        let mut recent: Vec<&LiveSegment> = t.tiers.segments.iter().filter(|s| s.entry.max_ingest_ms >= horizon).collect();
        recent.sort_by_key(|s| std::cmp::Reverse(s.entry.max_ingest_ms));
        for s in recent {
            if s.entry.rows > budget {
                break;
            }
            budget -= s.entry.rows;
            for block in 0..s.segment.block_count() {
                let cols = match s.segment.read_block(block, &[app, id]) {
                    Ok(cols) => cols,
                    // One damaged block must not keep the server down: queries that read it
                    // answer XX001; only its keys are missing from the dedup window (a second
                    // line of defence behind producer sequences).
                    Err(e @ crate::error::StorageError::Corrupt { .. }) => {
                        tracing::error!(error = %e, "corrupt segment block: its event keys are left out of the dedup window");
                        break;
                    }
                    Err(e) => return Err(e.into()),
                };
                let keys: Vec<u128> = column_keys(&cols[0], &cols[1]).collect();
                state.dedup.insert_batch(&keys, now, |_| {});
            }
        }
    }
    Ok(())
}

/// Replays one WAL record into its table's memtable. A record of a dropped table (at or below
/// its drop LSN, including one of an older table of the same name as a live one) is skipped;
/// a record of a table that never existed is corruption.
fn replay_record(state: &mut DbState, lsn: Lsn, payload: &[u8]) -> Result<(), String> {
    let header = wal_record::decode_header(payload).map_err(|e| format!("wal record {lsn}: {e}"))?;
    let live = state.tables.get(header.table).is_some_and(|t| lsn > t.created_lsn);
    if !live {
        if state.dropped.iter().any(|d| d.name == header.table && lsn <= d.drop_lsn) {
            state.producers.record(header.producer_id, header.seq, lsn);
            return Ok(());
        }
        return Err(format!("wal record {lsn}: unknown table {:?}", header.table));
    }
    let table = state.tables.get_mut(header.table).expect("checked live above");
    let batch = wal_record::decode_record_batch(&header, &table.schema)
        .map_err(|e| format!("wal record {lsn}: {e}"))?;
    if let Some((app, id)) = table.dedup_columns {
        let keys: Vec<u128> = column_keys(batch.column(app), batch.column(id)).collect();
        state.dedup.insert_batch(&keys, header.ingest_unix_ms, |_| {});
    }
    table.tiers.active.push(MemBatch { lsn, ingest_unix_ms: header.ingest_unix_ms, batch: Arc::new(batch) });
    state.producers.record(header.producer_id, header.seq, lsn);
    Ok(())
}
