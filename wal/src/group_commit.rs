//! The group-commit protocol, apart from the bytes: take a group from the queue, have the store
//! write and sync it, then release its queue bytes, publish the durable LSN and run the
//! callbacks in LSN order; on a failure, poison the queue and fail the group and everything
//! queued behind it.
//!
//! Why it is its own module: the order of those steps is what acknowledgements rest on (a
//! callback must never run before its LSN is published, a waiter must never miss the
//! publication, a poisoned WAL must fail every callback exactly once and wake every waiter),
//! and `wal/tests/loom.rs` model-checks exactly this code, with a store that does no I/O. The
//! writer thread (`writer`) is the store that serializes, writes and fdatasyncs.

use std::panic::AssertUnwindSafe;

use crate::durable::DurableLsn;
use crate::error::WalError;
use crate::queue::{AppendQueue, Pending};

/// What group commit needs from the thing that makes a group durable.
pub trait GroupStore {
    /// Writes and syncs one group (at least one record, contiguous LSNs). `Err` carries the
    /// reason the WAL is poisoned with.
    fn commit(&mut self, group: &[Pending]) -> Result<(), String>;
    /// The group of `records` is durable; called before anyone can observe that.
    fn durable(&mut self, records: u64);
    /// Takes back a written record's payload buffer.
    fn recycle(&mut self, payload: Vec<u8>);
}

/// The writer thread's loop: commits groups until the queue is shut down and drained (then
/// durability progress stops with `ShutDown`) or a commit fails (then the WAL is poisoned).
pub fn run(queue: &AppendQueue, durable: &DurableLsn, store: &mut impl GroupStore) {
    while let Some(group) = queue.next_group() {
        match store.commit(&group) {
            Ok(()) => complete(queue, durable, store, group),
            Err(reason) => {
                poison(queue, durable, &reason, group);
                return;
            }
        }
    }
    durable.stop(WalError::ShutDown);
}

/// Publishes a durable group and runs its callbacks in LSN order.
fn complete(queue: &AppendQueue, durable: &DurableLsn, store: &mut impl GroupStore, group: Vec<Pending>) {
    let group_bytes: usize = group.iter().map(|p| p.payload.len()).sum();
    let last = group.last().map_or(0, |p| p.lsn);
    // Counters first, so a thread woken by the publication sees them updated.
    store.durable(group.len() as u64);
    queue.release(group_bytes);
    durable.publish(last);
    for mut pending in group {
        store.recycle(std::mem::take(&mut pending.payload));
        run_callback(pending, Ok(()));
    }
}

/// Poisons the WAL: no further append is admitted, durability progress stops with the reason
/// (waking every waiter), and `group` and every queued record fail, in LSN order.
pub fn poison(queue: &AppendQueue, durable: &DurableLsn, reason: &str, group: Vec<Pending>) {
    tracing::error!(reason, "wal is poisoned; refusing further writes until restart");
    let queued = queue.poison(reason);
    let error = WalError::Poisoned(reason.to_owned());
    durable.stop(error.clone());
    for pending in group.into_iter().chain(queued) {
        run_callback(pending, Err(error.clone()));
    }
}

/// Runs one callback; a panicking callback is logged and must not kill the writer thread.
fn run_callback(pending: Pending, outcome: Result<(), WalError>) {
    let lsn = pending.lsn;
    let callback = pending.on_durable;
    let result = outcome.map(|()| lsn);
    if std::panic::catch_unwind(AssertUnwindSafe(move || callback(result))).is_err() {
        tracing::error!(lsn, "a wal durability callback panicked");
    }
}
