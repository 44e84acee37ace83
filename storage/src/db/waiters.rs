//! Acknowledging a resent batch once its original is durable.
//!
//! A producer that resends a batch the server already admitted (after a lost ack) is answered
//! with the original's LSN, but only once that LSN is durable: an acknowledgement promises the
//! events survive a crash. If it is not durable yet, the ack waits here, keyed by LSN, and the
//! WAL's durability callbacks release it. The race to get right: the WAL publishes the durable
//! LSN, then runs callbacks; a waiter registered between the two must not be missed, and one
//! registered after the last callback must not wait forever. So registration re-checks the
//! durable LSN and the poison under the waiters' lock, and every release takes that lock after
//! the publication. `storage/tests/loom.rs` model-checks this file.
//!
//! Its own lock, never the state lock: WAL callbacks take it, and admission may block on a
//! full WAL queue while holding the state lock.

use crate::sync::Mutex;
use lookback_common::Lsn;
use std::collections::BTreeMap;

/// Called once with the LSN that became durable, or the reason it never will.
pub type Callback<E> = Box<dyn FnOnce(Result<Lsn, E>) + Send>;

/// What the waiters read of the WAL.
pub trait Durability<E> {
    fn durable_lsn(&self) -> Lsn;
    /// The error every waiter gets once no LSN will become durable any more.
    fn poisoned(&self) -> Option<E>;
}

pub struct Waiters<E> {
    waiting: Mutex<BTreeMap<Lsn, Vec<Callback<E>>>>,
}

impl<E: Clone> Waiters<E> {
    pub fn new() -> Waiters<E> {
        Waiters { waiting: Mutex::new(BTreeMap::new()) }
    }

    /// Calls `callback` once `lsn` is durable: now if it already is, else from [`Self::release`].
    pub fn when_durable(&self, lsn: Lsn, wal: &impl Durability<E>, callback: Callback<E>) {
        if wal.durable_lsn() >= lsn {
            return callback(Ok(lsn));
        }
        let mut waiting = self.waiting.lock();
        // Re-checked under the lock: a release takes it after the publication, so either it
        // sees this registration or this sees its publication.
        if wal.durable_lsn() >= lsn {
            drop(waiting);
            callback(Ok(lsn));
        } else if let Some(error) = wal.poisoned() {
            drop(waiting);
            callback(Err(error));
        } else {
            waiting.entry(lsn).or_default().push(callback);
        }
    }

    /// From a WAL durability callback: on `Ok`, calls every waiter whose LSN is now durable;
    /// on `Err` (the WAL can make nothing durable any more), fails all of them.
    pub fn release(&self, wal: &impl Durability<E>, outcome: Result<Lsn, E>) {
        let ready: Vec<(Lsn, Callback<E>)> = {
            let mut waiting = self.waiting.lock();
            if waiting.is_empty() {
                return;
            }
            let keep = match &outcome {
                Ok(_) => waiting.split_off(&(wal.durable_lsn() + 1)),
                Err(_) => BTreeMap::new(),
            };
            let ready = std::mem::replace(&mut *waiting, keep);
            ready.into_iter().flat_map(|(lsn, callbacks)| callbacks.into_iter().map(move |cb| (lsn, cb))).collect()
        };
        for (lsn, callback) in ready {
            callback(outcome.clone().map(|_| lsn));
        }
    }
}
