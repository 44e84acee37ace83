//! Small durable-file helpers shared by the manifest and segment commit code: every operation
//! passes through the engine's fault hook ([`Faults::check`]) so tests can fail or crash it.

use crate::error::StorageError;
use lookback_common::{FaultOp, Faults};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

/// Creates `path` (which must not exist), writes `bytes`, and fsyncs the file.
pub fn write_new_file_synced(path: &Path, bytes: &[u8], faults: &Faults) -> Result<(), StorageError> {
    let ctx = |verb: &str| format!("{verb} {}", path.display());
    faults.check(FaultOp::Create, path).map_err(|e| StorageError::io(ctx("create"), e))?;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| StorageError::io(ctx("create"), e))?;
    faults.check(FaultOp::Write, path).map_err(|e| StorageError::io(ctx("write"), e))?;
    file.write_all(bytes).map_err(|e| StorageError::io(ctx("write"), e))?;
    faults.check(FaultOp::Sync, path).map_err(|e| StorageError::io(ctx("fsync"), e))?;
    file.sync_all().map_err(|e| StorageError::io(ctx("fsync"), e))?;
    faults.synced_file(path, None);
    Ok(())
}

pub fn rename(from: &Path, to: &Path, faults: &Faults) -> Result<(), StorageError> {
    let ctx = || format!("rename {} to {}", from.display(), to.display());
    faults.check(FaultOp::Rename, to).map_err(|e| StorageError::io(ctx(), e))?;
    std::fs::rename(from, to).map_err(|e| StorageError::io(ctx(), e))
}

/// Fsyncs a directory so a rename or create inside it is durable.
pub fn sync_dir(dir: &Path, faults: &Faults) -> Result<(), StorageError> {
    let ctx = || format!("fsync directory {}", dir.display());
    faults.check(FaultOp::SyncDir, dir).map_err(|e| StorageError::io(ctx(), e))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| StorageError::io(ctx(), e))?;
    faults.synced_dir(dir);
    Ok(())
}

pub fn remove_file(path: &Path, faults: &Faults) -> Result<(), StorageError> {
    let ctx = || format!("remove {}", path.display());
    faults.check(FaultOp::Remove, path).map_err(|e| StorageError::io(ctx(), e))?;
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StorageError::io(ctx(), e)),
        _ => Ok(()),
    }
}
