//! The bounded append queue between callers of `append` and the writer thread.
//!
//! LSNs are assigned under the queue lock, so LSN order is exactly queue order and call order.
//! `queue_bytes_max` bounds the payload bytes queued *or in flight* (bytes are released only
//! after their group is durable): appenders block while a new record would exceed it, except
//! into an empty queue, so a single record larger than the limit still makes progress.
//!
//! The queue also holds the run state. Poisoning and shutdown are decided under the same lock
//! that admits appends, so no record can slip in after the queue was drained with errors.

use std::collections::VecDeque;

use lookback_common::Lsn;

use crate::sync::{AtomicU64, Condvar, Mutex, Ordering};

use crate::error::WalError;

pub type DurableCallback = Box<dyn FnOnce(Result<Lsn, WalError>) + Send>;

pub struct Pending {
    pub lsn: Lsn,
    pub payload: Vec<u8>,
    pub on_durable: DurableCallback,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum RunState {
    Running,
    ShuttingDown,
    Poisoned(String),
}

struct State {
    pending: VecDeque<Pending>,
    queued_bytes: usize,
    next_lsn: Lsn,
    run: RunState,
}

pub struct AppendQueue {
    state: Mutex<State>,
    /// The writer waits here for records.
    work: Condvar,
    /// Appenders wait here for room.
    space: Condvar,
    last_assigned: AtomicU64,
    queued_bytes_gauge: AtomicU64,
    queue_bytes_max: usize,
    group_bytes_max: usize,
}

impl AppendQueue {
    pub fn new(next_lsn: Lsn, queue_bytes_max: usize, group_bytes_max: usize) -> AppendQueue {
        assert!(next_lsn >= 1, "the first lsn is 1");
        let state = State { pending: VecDeque::new(), queued_bytes: 0, next_lsn, run: RunState::Running };
        AppendQueue {
            state: Mutex::new(state),
            work: Condvar::new(),
            space: Condvar::new(),
            last_assigned: AtomicU64::new(next_lsn - 1),
            queued_bytes_gauge: AtomicU64::new(0),
            queue_bytes_max,
            group_bytes_max,
        }
    }

    /// Assigns the next LSN and queues the record, blocking while the queue is full.
    pub fn push(&self, payload: Vec<u8>, on_durable: DurableCallback) -> Result<Lsn, WalError> {
        let bytes = payload.len();
        let mut state = self.state.lock();
        loop {
            match &state.run {
                RunState::Poisoned(reason) => return Err(WalError::Poisoned(reason.clone())),
                RunState::ShuttingDown => return Err(WalError::ShutDown),
                RunState::Running => {}
            }
            if state.queued_bytes == 0 || state.queued_bytes + bytes <= self.queue_bytes_max {
                break;
            }
            self.space.wait(&mut state);
        }
        let lsn = state.next_lsn;
        assert!(lsn > self.last_assigned.load(Ordering::Relaxed), "lsn must increase");
        state.next_lsn += 1;
        state.queued_bytes += bytes;
        state.pending.push_back(Pending { lsn, payload, on_durable });
        self.last_assigned.store(lsn, Ordering::Release);
        self.queued_bytes_gauge.store(state.queued_bytes as u64, Ordering::Relaxed);
        self.work.notify_one();
        Ok(lsn)
    }

    /// Takes the next group (at most `group_bytes_max` payload bytes, at least one record),
    /// waiting for records. `None` once shut down and drained, or poisoned.
    pub fn next_group(&self) -> Option<Vec<Pending>> {
        let mut state = self.state.lock();
        while state.pending.is_empty() {
            if state.run != RunState::Running {
                return None;
            }
            self.work.wait(&mut state);
        }
        if matches!(state.run, RunState::Poisoned(_)) {
            return None;
        }
        let mut group = Vec::new();
        let mut group_bytes = 0usize;
        while let Some(front) = state.pending.front() {
            if !group.is_empty() && group_bytes + front.payload.len() > self.group_bytes_max {
                break;
            }
            group_bytes += front.payload.len();
            group.extend(state.pending.pop_front());
        }
        Some(group)
    }

    /// Releases a durable group's bytes, waking blocked appenders.
    pub fn release(&self, bytes: usize) {
        let mut state = self.state.lock();
        assert!(state.queued_bytes >= bytes, "released more bytes than queued");
        state.queued_bytes -= bytes;
        self.queued_bytes_gauge.store(state.queued_bytes as u64, Ordering::Relaxed);
        self.space.notify_all();
    }

    /// Refuses further appends and returns every queued record, for the caller to fail.
    pub fn poison(&self, reason: &str) -> Vec<Pending> {
        let mut state = self.state.lock();
        state.run = RunState::Poisoned(reason.to_owned());
        state.queued_bytes = 0;
        self.queued_bytes_gauge.store(0, Ordering::Relaxed);
        self.space.notify_all();
        self.work.notify_all();
        state.pending.drain(..).collect()
    }

    /// Refuses further appends; the writer drains what is queued, then stops.
    pub fn shut_down(&self) {
        let mut state = self.state.lock();
        if state.run == RunState::Running {
            state.run = RunState::ShuttingDown;
        }
        self.space.notify_all();
        self.work.notify_all();
    }

    pub fn poisoned(&self) -> Option<String> {
        match &self.state.lock().run {
            RunState::Poisoned(reason) => Some(reason.clone()),
            _ => None,
        }
    }

    pub fn last_assigned(&self) -> Lsn {
        self.last_assigned.load(Ordering::Acquire)
    }

    pub fn queued_bytes(&self) -> u64 {
        self.queued_bytes_gauge.load(Ordering::Relaxed)
    }
}
