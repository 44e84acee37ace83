//! The durable LSN: published by the writer thread after each group's fdatasync, read lock-free
//! by `durable_lsn`, and waited on by `wait_durable`.
//!
//! Waiters are also woken when the writer stops for good (poisoned or shut down), so no one
//! waits forever for an LSN that will never become durable.

use lookback_common::Lsn;

use crate::sync::{AtomicU64, Condvar, Mutex, Ordering};

use crate::error::WalError;

pub struct DurableLsn {
    lsn: AtomicU64,
    /// Why no further LSN will become durable, once that is so.
    stopped: Mutex<Option<WalError>>,
    changed: Condvar,
}

impl DurableLsn {
    pub fn new(lsn: Lsn) -> DurableLsn {
        DurableLsn { lsn: AtomicU64::new(lsn), stopped: Mutex::new(None), changed: Condvar::new() }
    }

    pub fn get(&self) -> Lsn {
        self.lsn.load(Ordering::Acquire)
    }

    pub fn publish(&self, lsn: Lsn) {
        let previous = self.lsn.swap(lsn, Ordering::AcqRel);
        assert!(lsn > previous, "durable lsn went from {previous} to {lsn}");
        let _guard = self.stopped.lock();
        self.changed.notify_all();
    }

    /// Marks the end of durability progress; the first reason given sticks.
    pub fn stop(&self, reason: WalError) {
        let mut stopped = self.stopped.lock();
        stopped.get_or_insert(reason);
        self.changed.notify_all();
    }

    pub fn wait(&self, lsn: Lsn) -> Result<(), WalError> {
        let mut stopped = self.stopped.lock();
        loop {
            if self.get() >= lsn {
                return Ok(());
            }
            if let Some(reason) = stopped.as_ref() {
                return Err(reason.clone());
            }
            self.changed.wait(&mut stopped);
        }
    }
}
