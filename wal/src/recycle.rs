//! The pool of recycled segment files.
//!
//! A segment whose records are all covered by a checkpoint is renamed into the pool (at most
//! `recycled_segments_max` files, the rest are deleted) instead of being deleted, so the next
//! segment can reuse its already-allocated blocks. Pool files are zeroed again before reuse,
//! so their old contents never reach a live segment. Callers sync the directory after retiring.

use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use crate::error::WalError;
use crate::segment_files::SegmentDir;

#[derive(Debug)]
struct Pool {
    paths: Vec<PathBuf>,
    next_seq: u64,
}

#[derive(Debug)]
pub struct RecyclePool {
    pool: Mutex<Pool>,
    recycled_segments_max: usize,
}

impl RecyclePool {
    /// Adopts the recycled files found at open, deleting any beyond the limit.
    pub fn open(dir: &SegmentDir, found: Vec<(u64, PathBuf)>, recycled_segments_max: usize) -> Result<RecyclePool, WalError> {
        let next_seq = found.iter().map(|(seq, _)| seq + 1).max().unwrap_or(1);
        let mut paths = Vec::new();
        for (_, path) in found {
            if paths.len() < recycled_segments_max {
                paths.push(path);
            } else {
                dir.remove(&path)?;
            }
        }
        Ok(RecyclePool { pool: Mutex::new(Pool { paths, next_seq }), recycled_segments_max })
    }

    /// Moves a segment file out of the live set: into the pool, or deleted when the pool is full.
    pub fn retire(&self, dir: &SegmentDir, path: &Path) -> Result<(), WalError> {
        let mut pool = self.pool.lock();
        if pool.paths.len() >= self.recycled_segments_max {
            return dir.remove(path);
        }
        let target = dir.recycled_path(pool.next_seq);
        dir.rename(path, &target)?;
        pool.next_seq += 1;
        pool.paths.push(target);
        Ok(())
    }

    pub fn take(&self) -> Option<PathBuf> {
        self.pool.lock().paths.pop()
    }
}
