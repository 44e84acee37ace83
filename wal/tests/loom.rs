//! Loom models of group commit and LSN publication: the WAL's own `queue`, `durable` and
//! `group_commit` source files, compiled here against loom's primitives (see `src/sync.rs`),
//! driven by appenders, waiters and a writer whose store does no I/O. Loom runs every
//! interleaving of them (up to `PREEMPTIONS_MAX` preemptions per execution) and fails on a
//! deadlock, a lost wake-up (a thread blocked forever) or a broken assertion.
//!
//! What must hold in every interleaving:
//! - an appended record's callback runs exactly once; `Ok(lsn)` only after `durable_lsn >= lsn`,
//!   and callbacks run in LSN order;
//! - LSNs are contiguous in append order, whatever the thread interleaving;
//! - a full queue blocks an appender until a group is durable, and never forever;
//! - after a failed commit, every admitted record fails exactly once, nothing is acknowledged,
//!   every waiter wakes with the error, and no later append is admitted;
//! - shutdown drains: every admitted record is made durable before the writer stops.

#![allow(clippy::unwrap_used)] // a model fails by panicking

#[path = "support/loom_sync.rs"]
mod sync;

mod error {
    pub use lookback_wal::WalError;
}

#[allow(dead_code)] // the writer's gauges are not modelled
#[path = "../src/queue.rs"]
mod queue;

#[path = "../src/durable.rs"]
mod durable;

#[path = "../src/group_commit.rs"]
mod group_commit;

use durable::DurableLsn;
use group_commit::GroupStore;
use lookback_common::Lsn;
use lookback_wal::WalError;
use loom::sync::{Arc, Mutex};
use loom::thread;
use queue::{AppendQueue, DurableCallback, Pending};

/// Preemptions per execution loom explores. Bugs in lock protocols need few (the loom docs
/// find 2-3 catch nearly all); 3 keeps each model to seconds in a debug build.
const PREEMPTIONS_MAX: usize = 3;

fn check(model: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    // LOOM_MAX_PREEMPTIONS (read by loom) overrides the bound for a longer run.
    if std::env::var_os("LOOM_MAX_PREEMPTIONS").is_none() {
        builder.preemption_bound = Some(PREEMPTIONS_MAX);
    }
    builder.check(model);
}

/// A store that does no I/O: commits succeed, except the `fail_at`-th group (1-based).
struct Store {
    fail_at: Option<usize>,
    groups: usize,
    last_lsn: Lsn,
}

impl Store {
    fn new(fail_at: Option<usize>) -> Store {
        Store { fail_at, groups: 0, last_lsn: 0 }
    }
}

impl GroupStore for Store {
    fn commit(&mut self, group: &[Pending]) -> Result<(), String> {
        assert!(!group.is_empty(), "a group holds at least one record");
        for record in group {
            assert_eq!(record.lsn, self.last_lsn + 1, "groups arrive with contiguous lsns");
            self.last_lsn = record.lsn;
        }
        self.groups += 1;
        match self.fail_at {
            Some(n) if n == self.groups => Err("failed fdatasync of wal-00000000000000000001.log: EIO".into()),
            _ => Ok(()),
        }
    }

    fn durable(&mut self, _records: u64) {}

    fn recycle(&mut self, _payload: Vec<u8>) {}
}

/// One callback's outcome, with the durable LSN it saw when it ran.
type Outcome = (Result<Lsn, WalError>, Lsn);

struct Harness {
    queue: Arc<AppendQueue>,
    durable: Arc<DurableLsn>,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
}

impl Harness {
    fn new(queue_bytes_max: usize, group_bytes_max: usize) -> Harness {
        Harness {
            queue: Arc::new(AppendQueue::new(1, queue_bytes_max, group_bytes_max)),
            durable: Arc::new(DurableLsn::new(0)),
            outcomes: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn callback(&self) -> DurableCallback {
        let (outcomes, durable) = (Arc::clone(&self.outcomes), Arc::clone(&self.durable));
        Box::new(move |result| {
            let seen = durable.get();
            outcomes.lock().unwrap().push((result, seen));
        })
    }

    /// A thread appending `records` payloads of `bytes` each; yields what `push` answered.
    fn appender(&self, records: usize, bytes: usize) -> thread::JoinHandle<Vec<Result<Lsn, WalError>>> {
        let callbacks: Vec<DurableCallback> = (0..records).map(|_| self.callback()).collect();
        let queue = Arc::clone(&self.queue);
        thread::spawn(move || callbacks.into_iter().map(|cb| queue.push(vec![0; bytes], cb)).collect())
    }

    fn writer(&self, store: Store) -> thread::JoinHandle<()> {
        let (queue, durable) = (Arc::clone(&self.queue), Arc::clone(&self.durable));
        thread::spawn(move || {
            let mut store = store;
            group_commit::run(&queue, &durable, &mut store);
        })
    }

    fn outcomes(&self) -> Vec<Outcome> {
        self.outcomes.lock().unwrap().clone()
    }
}

fn admitted(answers: &[Vec<Result<Lsn, WalError>>]) -> Vec<Lsn> {
    let mut lsns: Vec<Lsn> = answers.iter().flatten().filter_map(|a| a.as_ref().ok().copied()).collect();
    lsns.sort_unstable();
    lsns
}

#[test]
fn acknowledgements_follow_publication_in_lsn_order() {
    check(|| {
        let h = Harness::new(1 << 10, 8);
        let writer = h.writer(Store::new(None));
        let appenders = [h.appender(2, 4), h.appender(1, 4)];
        let answers: Vec<_> = appenders.into_iter().map(|a| a.join().unwrap()).collect();
        assert_eq!(admitted(&answers), vec![1, 2, 3], "lsns are contiguous from the first");
        for answer in &answers {
            let lsns: Vec<Lsn> = answer.iter().map(|a| *a.as_ref().unwrap()).collect();
            assert!(lsns.windows(2).all(|w| w[0] < w[1]), "one thread's appends get increasing lsns");
        }
        // Waits while the writer may still be committing: the publication must wake it.
        assert_eq!(h.durable.wait(3), Ok(()), "the waiter sees lsn 3 published");
        h.queue.shut_down();
        writer.join().unwrap();
        let outcomes = h.outcomes();
        let acked: Vec<Lsn> = outcomes.iter().map(|(r, _)| *r.as_ref().unwrap()).collect();
        assert_eq!(acked, vec![1, 2, 3], "every callback once, in lsn order");
        for (result, seen) in &outcomes {
            let lsn = *result.as_ref().unwrap();
            assert!(*seen >= lsn, "lsn {lsn} acknowledged while durable_lsn was {seen}");
        }
        assert_eq!(h.durable.wait(4), Err(WalError::ShutDown), "no one waits for an lsn never assigned");
    });
}

#[test]
fn a_full_queue_blocks_appenders_until_a_group_is_durable() {
    check(|| {
        // Room for one 4-byte record: the second appender waits for the first's release.
        let h = Harness::new(4, 4);
        let writer = h.writer(Store::new(None));
        let appenders = [h.appender(1, 4), h.appender(1, 4)];
        let answers: Vec<_> = appenders.into_iter().map(|a| a.join().unwrap()).collect();
        assert_eq!(admitted(&answers), vec![1, 2]);
        h.queue.shut_down();
        writer.join().unwrap();
        assert_eq!(h.outcomes().len(), 2);
        assert_eq!(h.durable.get(), 2);
    });
}

#[test]
fn a_failed_commit_fails_every_admitted_record_once_and_wakes_waiters() {
    check(|| {
        let h = Harness::new(1 << 10, 4);
        let writer = h.writer(Store::new(Some(1)));
        let appenders = [h.appender(1, 4), h.appender(1, 4)];
        let answers: Vec<_> = appenders.into_iter().map(|a| a.join().unwrap()).collect();
        for answer in answers.iter().flatten() {
            assert!(matches!(answer, Ok(_) | Err(WalError::Poisoned(_))), "{answer:?}");
        }
        // Waits while the writer may still be failing the group: the poison must wake it.
        assert!(matches!(h.durable.wait(1), Err(WalError::Poisoned(_))), "lsn 1 never becomes durable");
        writer.join().unwrap();
        let outcomes = h.outcomes();
        assert_eq!(outcomes.len(), admitted(&answers).len(), "every admitted record's callback runs once");
        assert!(outcomes.iter().all(|(r, _)| matches!(r, Err(WalError::Poisoned(_)))), "nothing is acknowledged");
        assert_eq!(h.durable.get(), 0);
        assert!(matches!(h.queue.push(vec![0; 4], h.callback()), Err(WalError::Poisoned(_))));
        assert!(h.queue.poisoned().is_some());
    });
}

#[test]
fn shutdown_drains_every_admitted_record() {
    check(|| {
        let h = Harness::new(1 << 10, 4);
        let writer = h.writer(Store::new(None));
        let appender = h.appender(2, 4);
        h.queue.shut_down();
        let answers = vec![appender.join().unwrap()];
        writer.join().unwrap();
        let lsns = admitted(&answers);
        assert!(answers.iter().flatten().all(|a| matches!(a, Ok(_) | Err(WalError::ShutDown))));
        let outcomes = h.outcomes();
        let acked: Vec<Lsn> = outcomes.iter().map(|(r, _)| *r.as_ref().unwrap()).collect();
        assert_eq!(acked, lsns, "every admitted record is made durable before the writer stops");
        assert_eq!(h.durable.get(), lsns.last().copied().unwrap_or(0));
    });
}

#[test]
fn groups_respect_group_bytes_max_but_take_one_oversized_record() {
    check(|| {
        let queue = AppendQueue::new(5, 1000, 10);
        let noop = || -> DurableCallback { Box::new(|_| {}) };
        assert_eq!(queue.push(vec![0; 4], noop()).unwrap(), 5);
        assert_eq!(queue.push(vec![0; 4], noop()).unwrap(), 6);
        assert_eq!(queue.push(vec![0; 30], noop()).unwrap(), 7);
        let lsns = |g: Vec<Pending>| g.iter().map(|p| p.lsn).collect::<Vec<_>>();
        assert_eq!(lsns(queue.next_group().unwrap()), vec![5, 6]);
        assert_eq!(lsns(queue.next_group().unwrap()), vec![7]);
        assert_eq!(queue.last_assigned(), 7);
        let drained = queue.poison("failed fdatasync of x: boom");
        assert!(drained.is_empty());
        assert!(queue.next_group().is_none());
        queue.shut_down();
        assert!(queue.poisoned().is_some(), "shutdown keeps the poison");
    });
}
