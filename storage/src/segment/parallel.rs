//! Per-column work of one segment write spread over a few threads.
//!
//! Why: a flush is several seconds of CPU on one thread while producers wait for its memory to
//! be freed; columns are independent, so the two cores of a small machine can share it. Helper
//! threads are scoped (they borrow the input batches) and inherit the caller's CPU priority
//! (the flush's nice level, compaction's SCHED_IDLE).

use std::sync::atomic::{AtomicUsize, Ordering};

/// Threads a segment write uses at most.
pub(crate) const THREADS_MAX: usize = 2;

/// Threads to use on this machine.
pub(crate) fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, THREADS_MAX)
}

/// `f(0), ..., f(n - 1)`, computed by up to `threads` threads (at least one: the caller)
/// claiming indexes in order.
pub(crate) fn map<T: Send>(n: usize, threads: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    map_with(n, threads, || (), |(), i| f(i))
}

/// [`map`] where each thread first makes its own `state` (a compression context, say) and
/// passes it to every `f` it runs.
pub(crate) fn map_with<S, T: Send>(
    n: usize,
    threads: usize,
    state: impl Fn() -> S + Sync,
    f: impl Fn(&mut S, usize) -> T + Sync,
) -> Vec<T> {
    let next = AtomicUsize::new(0);
    let work = || {
        let mut own = state();
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= n {
                return done;
            }
            done.push((i, f(&mut own, i)));
        }
    };
    let mut slots: Vec<Option<T>> = (0..n).map(|_| None).collect();
    std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads.min(n).max(1)).map(|_| scope.spawn(work)).collect();
        let mut results = vec![work()];
        for helper in helpers {
            results.push(helper.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
        }
        for (i, value) in results.into_iter().flatten() {
            slots[i] = Some(value);
        }
    });
    slots.into_iter().map(|s| s.expect("every index is claimed by one thread")).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn map_returns_results_in_index_order() {
        for n in [0usize, 1, 2, 17] {
            for threads in [0, 1, 2, 5] {
                assert_eq!(super::map(n, threads, |i| i * i), (0..n).map(|i| i * i).collect::<Vec<_>>());
            }
        }
    }
}
