//! Background preparation of the next segment file.
//!
//! Zeroing a 64 MiB file and fsyncing it takes far longer than a group commit, so a dedicated
//! thread keeps the next segment (`active index + 1`) ready: taken from the recycle pool and
//! re-zeroed, or created fresh. The writer thread takes it at a segment switch and immediately
//! asks for the one after. If the writer outruns the preparer it waits; a preparation failure
//! is handed to the writer, which poisons the WAL.
//!
//! Except a full disk (ENOSPC): nothing was written to the log, so nothing is poisoned. The
//! preparer reports the WAL as full ([`Preparer::disk_full`]: new appends are refused with that
//! error), retries every `PREPARE_RETRY_INTERVAL_MS`, and once space is freed the writer, which
//! waited with its group, goes on: ingest resumes without a restart.
//!
//! At most one file is prepared ahead, so the directory holds at most one unwritten segment.

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::error::WalError;
use crate::recycle::RecyclePool;
use crate::segment_files::SegmentDir;

/// A zeroed, full-size segment file installed under its final name, not yet written.
#[derive(Debug)]
pub struct PreparedSegment {
    pub index: u64,
    pub path: PathBuf,
    pub file: File,
    pub bytes: u64,
}

/// How often a preparation that failed for lack of space is retried.
const PREPARE_RETRY_INTERVAL_MS: u64 = 100;

#[derive(Default)]
struct State {
    wanted: Option<u64>,
    ready: Option<PreparedSegment>,
    failed: Option<WalError>,
    /// The last preparation failed with ENOSPC; it is retried.
    disk_full: Option<WalError>,
    /// Shutting down: a writer waiting for space gives up.
    abandon: bool,
    stop: bool,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    dir: SegmentDir,
    pool: Arc<RecyclePool>,
    segment_bytes: u64,
    /// Mirrors `state.disk_full.is_some()` for the append path's check.
    full: AtomicBool,
}

pub struct Preparer {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Preparer {
    /// Starts the thread. `adopted` is an already-prepared file found by recovery; otherwise
    /// preparation of `first_index` begins at once.
    pub fn start(
        dir: SegmentDir,
        pool: Arc<RecyclePool>,
        segment_bytes: u64,
        adopted: Option<PreparedSegment>,
        first_index: u64,
    ) -> Result<Preparer, WalError> {
        let wanted = if adopted.is_some() { None } else { Some(first_index) };
        let state = State { wanted, ready: adopted, ..State::default() };
        let shared = Arc::new(Shared { state: Mutex::new(state), changed: Condvar::new(), dir, pool, segment_bytes, full: AtomicBool::new(false) });
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("lookback-wal-prepare".into())
            .spawn(move || run(&worker))
            .map_err(|e| WalError::io("spawn wal segment preparation thread", &e))?;
        Ok(Preparer { shared, thread: Mutex::new(Some(thread)) })
    }

    /// Returns segment `index`, waiting for it if needed, and starts preparing `index + 1`.
    pub fn take(&self, index: u64) -> Result<PreparedSegment, WalError> {
        let mut state = self.shared.state.lock();
        loop {
            if let Some(error) = &state.failed {
                return Err(error.clone());
            }
            if let Some(ready) = state.ready.take() {
                assert_eq!(ready.index, index, "the preparer ran ahead of the writer");
                state.wanted = Some(index + 1);
                self.shared.changed.notify_all();
                return Ok(ready);
            }
            if let (true, Some(error)) = (state.abandon, &state.disk_full) {
                return Err(error.clone());
            }
            if state.wanted.is_none() {
                state.wanted = Some(index);
                self.shared.changed.notify_all();
            }
            self.shared.changed.wait(&mut state);
        }
    }

    /// The ENOSPC error while the disk is full (preparation is being retried), else `None`.
    pub fn disk_full(&self) -> Option<WalError> {
        if !self.shared.full.load(Ordering::Acquire) {
            return None;
        }
        self.shared.state.lock().disk_full.clone()
    }

    /// At shutdown: a writer waiting for disk space fails its group instead of waiting.
    pub fn abandon(&self) {
        self.shared.state.lock().abandon = true;
        self.shared.changed.notify_all();
    }

    /// Stops and joins the thread; a file already prepared stays on disk for the next open.
    pub fn stop(&self) {
        self.shared.state.lock().stop = true;
        self.shared.changed.notify_all();
        if let Some(thread) = self.thread.lock().take() {
            if thread.join().is_err() {
                tracing::error!("wal segment preparation thread panicked");
            }
        }
    }
}

fn run(shared: &Shared) {
    let mut state = shared.state.lock();
    loop {
        if state.stop {
            return;
        }
        let index = match state.wanted {
            Some(index) if state.ready.is_none() && state.failed.is_none() => index,
            _ => {
                shared.changed.wait(&mut state);
                continue;
            }
        };
        drop(state);
        let result = prepare(shared, index);
        state = shared.state.lock();
        match result {
            Ok(prepared) => {
                state.wanted = None;
                state.ready = Some(prepared);
                if state.disk_full.take().is_some() {
                    tracing::info!(index, "disk space is back: the wal takes writes again");
                }
            }
            Err(error) if is_disk_full(&error) => {
                if state.disk_full.is_none() {
                    tracing::error!(%error, "the disk is full: the wal refuses writes until space is freed");
                }
                state.disk_full = Some(error);
                shared.full.store(true, Ordering::Release);
                shared.changed.notify_all();
                let retry = Duration::from_millis(PREPARE_RETRY_INTERVAL_MS);
                let _ = shared.changed.wait_for(&mut state, retry);
                continue;
            }
            Err(error) => {
                state.wanted = None;
                tracing::error!(%error, "preparing the next wal segment failed");
                state.failed = Some(error);
            }
        }
        shared.full.store(state.disk_full.is_some(), Ordering::Release);
        shared.changed.notify_all();
    }
}

fn is_disk_full(error: &WalError) -> bool {
    matches!(error, WalError::Io { errno: Some(libc::ENOSPC), .. })
}

/// Reuses a recycled file of the right size, or creates a new one.
fn prepare(shared: &Shared, index: u64) -> Result<PreparedSegment, WalError> {
    while let Some(recycled) = shared.pool.take() {
        let len = std::fs::metadata(&recycled).map(|m| m.len()).ok();
        if len != Some(shared.segment_bytes) {
            shared.dir.remove(&recycled)?; // written under another segment_bytes setting
            continue;
        }
        let (path, file) = match shared.dir.reuse_recycled(&recycled, index, shared.segment_bytes) {
            Ok(reused) => reused,
            Err(error) => {
                // Half re-zeroed: not worth keeping, and removing it frees space.
                let _ = shared.dir.remove(&recycled);
                return Err(error);
            }
        };
        tracing::debug!(index, "reused a recycled wal segment");
        return Ok(PreparedSegment { index, path, file, bytes: shared.segment_bytes });
    }
    let (path, file) = shared.dir.create_segment(index, shared.segment_bytes)?;
    Ok(PreparedSegment { index, path, file, bytes: shared.segment_bytes })
}
