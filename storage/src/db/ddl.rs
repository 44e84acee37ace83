//! Creating and dropping tables.
//!
//! A table's existence is manifest state, so CREATE and DROP are manifest replacements, written
//! while the state lock is held: no batch can be admitted to a new table before the manifest
//! that creates it is durable, and none to a dropped one after it is gone. The manifest write
//! (an fsync or two) stalls admission for that long; tables are created and dropped rarely.
//!
//! The WAL is not rewritten: records of a dropped table stay in it until the checkpoint passes
//! them, and recovery tells them from records of a newer table of the same name by LSN (see
//! manifest.rs and `replay_record`).

use super::flush::build_manifest;
use super::recovery::segment_path;
use super::tiers::Tiers;
use super::{dedup_columns, DbError, Inner, TableState};
use crate::fsutil;
use crate::manifest::{self, DroppedTable};
use lookback_common::schema::events;
use lookback_common::Schema;
use std::sync::Arc;

/// Tables a data directory may hold (the manifest's own limit is higher).
pub const TABLES_MAX: usize = 1024;

pub(super) fn create_table(inner: &Inner, schema: Schema) -> Result<(), DbError> {
    check_writable(inner)?;
    let _commit = inner.commit_lock.lock();
    let mut state = inner.state.lock();
    if state.tables.contains_key(&schema.name) {
        return Err(DbError::TableExists(schema.name));
    }
    if state.tables.len() >= TABLES_MAX {
        return Err(DbError::Refused(format!("a data directory holds at most {TABLES_MAX} tables")));
    }
    let name = schema.name.clone();
    let schema = Arc::new(schema);
    // No LSN is assigned while the state lock is held: one reading serves for all below.
    let last_assigned = inner.wal.last_assigned_lsn();
    let table = TableState {
        dedup_columns: dedup_columns(&schema),
        created_lsn: last_assigned,
        schema,
        tiers: Tiers::new(Vec::new()),
        damaged: Vec::new(),
    };
    state.tables.insert(name.clone(), table);
    state.manifest_generation += 1;
    let manifest = build_manifest(&mut state, last_assigned);
    if let Err(e) = write_manifest_durably(inner, &manifest) {
        state.tables.remove(&name);
        return Err(e.into());
    }
    tracing::info!(table = %name, "created table");
    Ok(())
}

pub(super) fn drop_table(inner: &Inner, name: &str) -> Result<(), DbError> {
    if name == events::TABLE_NAME {
        return Err(DbError::Refused(format!("table {name} is built in and cannot be dropped")));
    }
    check_writable(inner)?;
    // No flush or merge may be working on the table while it goes.
    let _merge = inner.merge_lock.lock();
    let _flush = inner.flush_lock.lock();
    let _commit = inner.commit_lock.lock();
    let mut state = inner.state.lock();
    let table = state.tables.remove(name).ok_or_else(|| DbError::UnknownTable(name.to_string()))?;
    let drop_lsn = inner.wal.last_assigned_lsn(); // stable while the state lock is held
    state.dropped.push(DroppedTable { name: name.to_string(), drop_lsn });
    state.manifest_generation += 1;
    let manifest = build_manifest(&mut state, drop_lsn);
    if let Err(e) = write_manifest_durably(inner, &manifest) {
        state.dropped.retain(|d| !(d.name == name && d.drop_lsn == drop_lsn));
        state.tables.insert(name.to_string(), table);
        return Err(e.into());
    }
    drop(state);
    // Readers that still hold a segment keep its mapping; the file goes now. A file left by a
    // crash here is an orphan, removed at the next start.
    let ids = table.tiers.segments.iter().map(|s| s.entry.id).chain(table.damaged.iter().map(|d| d.entry.id));
    for id in ids {
        if let Err(e) = fsutil::remove_file(&segment_path(&inner.options, id), &inner.options.faults) {
            tracing::warn!(table = name, segment = id, error = %e, "could not delete a dropped table's segment");
        }
    }
    // Its rows in the WAL are now dead weight: checkpoint past them if nothing else holds it.
    if let Err(e) = inner.wal.checkpoint(manifest.checkpoint_lsn) {
        tracing::warn!(error = %e, "checkpoint after DROP TABLE failed");
    }
    tracing::info!(table = name, segments = table.tiers.segments.len(), "dropped table");
    Ok(())
}

/// Writes a manifest built under the state lock (still held: no LSN is assigned meanwhile)
/// once the WAL is durable up to the last assigned LSN, as `flush::commit` does and for the
/// same reason: its producer sequences must not run ahead of the durable WAL.
fn write_manifest_durably(inner: &Inner, manifest: &manifest::Manifest) -> Result<(), DbError> {
    inner.wal.wait_durable(inner.wal.last_assigned_lsn())?;
    manifest::write_manifest(&inner.options.data_dir, manifest, &inner.options.faults)?;
    Ok(())
}

fn check_writable(inner: &Inner) -> Result<(), DbError> {
    if inner.stopping.load(std::sync::atomic::Ordering::Acquire) {
        return Err(DbError::ShuttingDown);
    }
    match inner.wal.poisoned() {
        Some(reason) => Err(DbError::Wal(lookback_wal::WalError::Poisoned(reason))),
        None => Ok(()),
    }
}
