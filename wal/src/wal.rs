//! [`Wal`]: the public handle. Opening recovers and replays, then starts two threads: the
//! writer (group commit, see `writer`) and the segment preparer (see `prepare`).
//!
//! `append` only assigns an LSN and queues; durability is reported through the callback and
//! `durable_lsn`/`wait_durable`. `shutdown` (also run on drop) drains the queue, so every
//! callback is called exactly once.

use std::sync::Arc;
use std::thread::JoinHandle;

use lookback_common::Lsn;
use parking_lot::Mutex;

use crate::buffers::PayloadBuffers;
use crate::checkpoint::LiveSegments;
use crate::durable::DurableLsn;
use crate::error::WalError;
use crate::io::open_backend;
use crate::options::{IoBackendKind, WalOptions};
use crate::prepare::Preparer;
use crate::queue::AppendQueue;
use crate::recovery::{recover, Recovered, RecoveryReport, Replay};
use crate::recycle::RecyclePool;
use crate::segment_files::SegmentDir;
use crate::stats::{StatsCounters, WalStats};
use crate::writer::{ActiveSegment, Writer};

pub struct Wal {
    options: WalOptions,
    dir: SegmentDir,
    queue: Arc<AppendQueue>,
    durable: Arc<DurableLsn>,
    stats: Arc<StatsCounters>,
    segments: Arc<LiveSegments>,
    pool: Arc<RecyclePool>,
    preparer: Arc<Preparer>,
    buffers: Arc<PayloadBuffers>,
    backend: IoBackendKind,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Serializes checkpoints, so retirements happen strictly oldest first.
    checkpointing: Mutex<()>,
}

const _: fn() = || {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Wal>();
};

impl Wal {
    /// Creates the directory if missing, recovers, replays every record with
    /// `lsn > checkpoint_lsn` in LSN order through `replay`, then starts the writer thread.
    ///
    /// Panics if `options` fail [`WalOptions::validate`] (a configuration bug).
    pub fn open(
        options: WalOptions,
        checkpoint_lsn: Lsn,
        replay: Replay<'_>,
    ) -> Result<(Wal, RecoveryReport), WalError> {
        if let Err(problem) = options.validate() {
            panic!("invalid wal options: {problem}");
        }
        let dir = SegmentDir::new(options.dir.clone(), options.faults.clone());
        dir.create_dir()?;
        let io = open_backend(options.io, &options.faults)?;
        let backend = io.kind();
        let listing = dir.list()?;
        for tmp in &listing.tmp {
            dir.remove(tmp)?;
        }
        let pool = Arc::new(RecyclePool::open(&dir, listing.recycled, options.recycled_segments_max)?);
        let recovered = recover(&dir, &pool, &listing.segments, options.segment_bytes, checkpoint_lsn, replay)?;
        let report = recovered.report.clone();
        let wal = Self::start(options, dir, pool, io, backend, recovered)?;
        tracing::info!(records_replayed = report.records_replayed, last_lsn = report.last_lsn, backend = ?backend, "wal opened");
        Ok((wal, report))
    }

    fn start(
        options: WalOptions,
        dir: SegmentDir,
        pool: Arc<RecyclePool>,
        io: Box<dyn crate::io::SegmentIo>,
        backend: IoBackendKind,
        recovered: Recovered,
    ) -> Result<Wal, WalError> {
        let Recovered { segments, resume, next_lsn, next_index, adopted, .. } = recovered;
        let active = match resume {
            Some(point) => Some(ActiveSegment {
                index: point.index,
                file: Arc::new(dir.open_segment(&point.path)?),
                path: point.path,
                bytes: point.bytes,
                offset: point.offset,
            }),
            None => None,
        };
        let preparer = Arc::new(Preparer::start(dir.clone(), Arc::clone(&pool), options.segment_bytes, adopted, next_index)?);
        let queue = Arc::new(AppendQueue::new(next_lsn, options.queue_bytes_max, options.group_bytes_max));
        let durable = Arc::new(DurableLsn::new(next_lsn - 1));
        let stats = Arc::new(StatsCounters::default());
        let segments = Arc::new(LiveSegments::new(segments));
        let buffers = Arc::new(PayloadBuffers::default());
        let writer = Writer {
            queue: Arc::clone(&queue),
            durable: Arc::clone(&durable),
            stats: Arc::clone(&stats),
            segments: Arc::clone(&segments),
            preparer: Arc::clone(&preparer),
            io,
            active,
            next_index,
            last_lsn: next_lsn - 1,
            buf: Vec::new(),
            direct: Default::default(),
            buffers: Arc::clone(&buffers),
        };
        let handle = std::thread::Builder::new().name("lookback-wal-writer".into()).spawn(move || writer.run_guarded());
        let handle = match handle {
            Ok(handle) => handle,
            Err(e) => {
                preparer.stop();
                return Err(WalError::io("spawn wal writer thread", &e));
            }
        };
        Ok(Wal {
            options,
            dir,
            queue,
            durable,
            stats,
            segments,
            pool,
            preparer,
            buffers,
            backend,
            writer: Mutex::new(Some(handle)),
            checkpointing: Mutex::new(()),
        })
    }

    /// Assigns the next LSN and queues the payload; see the crate docs for the callback contract.
    pub fn append(&self, payload: Vec<u8>, on_durable: Box<dyn FnOnce(Result<Lsn, WalError>) + Send>) -> Result<Lsn, WalError> {
        if payload.len() > self.options.record_bytes_max {
            return Err(WalError::RecordTooLarge { bytes: payload.len(), max: self.options.record_bytes_max });
        }
        if let Some(full) = self.preparer.disk_full() {
            return Err(full);
        }
        self.queue.push(payload, on_durable)
    }

    /// An empty buffer to encode the next [`Self::append`]'s payload into: one the writer
    /// finished with if any is free (see the `buffers` module for why), else a new one.
    pub fn payload_buffer(&self) -> Vec<u8> {
        self.buffers.take()
    }

    pub fn durable_lsn(&self) -> Lsn {
        self.durable.get()
    }

    pub fn last_assigned_lsn(&self) -> Lsn {
        self.queue.last_assigned()
    }

    /// Blocks until `durable_lsn() >= lsn`; Err if the WAL is poisoned or shut down first.
    pub fn wait_durable(&self, lsn: Lsn) -> Result<(), WalError> {
        self.durable.wait(lsn)
    }

    /// Everything `<= lsn` is stored elsewhere: segments holding only such records (and only
    /// durable ones) are recycled or deleted; never the segment being appended to.
    pub fn checkpoint(&self, lsn: Lsn) -> Result<(), WalError> {
        let _one_at_a_time = self.checkpointing.lock();
        let covered = lsn.min(self.durable.get());
        self.segments.retire_covered(covered, &self.dir, &self.pool)
    }

    pub fn poisoned(&self) -> Option<String> {
        self.queue.poisoned()
    }

    /// The ENOSPC error while the disk is too full for the next segment (appends are refused
    /// with it until space is freed; nothing is poisoned).
    pub fn disk_full(&self) -> Option<WalError> {
        self.preparer.disk_full()
    }

    pub fn backend(&self) -> IoBackendKind {
        self.backend
    }

    pub fn stats(&self) -> WalStats {
        self.stats.snapshot(self.segments.len() as u64, self.queue.queued_bytes())
    }

    /// Drains queued appends (their callbacks complete), stops and joins the threads.
    /// Idempotent; later appends fail with `ShutDown`.
    pub fn shutdown(&self) {
        self.queue.shut_down();
        self.preparer.abandon();
        if let Some(handle) = self.writer.lock().take() {
            if handle.join().is_err() {
                tracing::error!("wal writer thread panicked");
            }
        }
        self.preparer.stop();
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.shutdown();
    }
}
