//! CPU priority of the engine's background threads.
//!
//! Why: on a two-core machine, a flush, a compaction or the preparation of a dedup table
//! competes for the same cores as admissions, and an admission descheduled for one time slice
//! waits several milliseconds, which is the ack latency tail. Background threads run at a lower
//! priority (or only on idle CPU), so the scheduler lets admissions run first.

/// Sets the calling thread's scheduling: SCHED_IDLE (runs only on otherwise idle CPUs) when
/// `idle`, else SCHED_OTHER at `nice`. Failure leaves the thread as it was: priority is an
/// optimization.
pub(crate) fn set_thread_priority(idle: bool, nice: i32) {
    let policy = if idle { libc::SCHED_IDLE } else { libc::SCHED_OTHER };
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain syscalls on this thread's own id with a valid sched_param.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::pid_t;
        libc::sched_setscheduler(tid, policy, &param);
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice);
    }
}
