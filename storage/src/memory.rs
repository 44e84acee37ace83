//! Large zeroed tables (the dedup window's, the segment writer's interner), allocated so
//! that no admission waits on memory the kernel must first fault in.
//!
//! A first touch of a page is slow: a fault and a clear, and on the VMs measured here about
//! 2 ms per MiB, because the hypervisor takes back memory the guest has freed (free page
//! reporting) and must supply it again. Touching memory the process already used is ~20×
//! cheaper. So tables come from the allocator, whose freed memory the server keeps and
//! pre-faults at start-up (`lookback serve`, `memory_prefault_bytes`), rather than from fresh
//! mappings as they once did: growing the dedup window through 1 GB of fresh mappings cost
//! ~3 s of CPU in a 13 M-event run, and its tail latency.
//!
//! Two ways to get one:
//! - [`ZeroedTable::new`]: now. The allocator clears reused memory (a memset); memory it got
//!   fresh from the kernel is already zero and is populated (`MADV_POPULATE_WRITE`, mapped
//!   writable without a fault per page) on the [`worker`] thread.
//! - [`ZeroedTable::prepare`]: later. The [`worker`] thread allocates, clears and populates
//!   it, so an admission that grows the dedup window takes a finished table.
//!
//! Populating races nobody: it never changes memory contents and skips present pages.

/// The worker's nice level. Clearing a table is hundreds of milliseconds of CPU, and at
/// normal priority it took turns with admissions on a two-core machine: the batches admitted
/// while the dedup window's next table was being cleared took 15-30 ms instead of 2. Tables
/// are asked for seconds before they are needed, so the worker can wait for spare CPU.
const WORKER_THREAD_NICE: i32 = 19;
/// The x86-64 (and common aarch64) transparent huge page size.
const HUGE_PAGE_BYTES: usize = 2 << 20;
/// Tables at least this large ask for huge pages ([`advise_huge_pages`]).
const HUGE_PAGE_TABLE_BYTES_MIN: usize = 4 << 20;
/// Tables smaller than this are left alone (a few faults are cheaper than the call).
const POPULATE_BYTES_MIN: usize = 1 << 20;
/// Bytes populated per call. The call holds the process's mmap lock (shared) throughout, and an
/// unmap anywhere in the process waits for it, and every page fault waits behind the unmap:
/// populating a 256 MiB table in one call stalled an admission's dedup inserts for up to
/// 500 ms. One huge page per call bounds that wait to one page's clearing.
const POPULATE_CHUNK_BYTES: usize = 2 << 20;
/// Tables at least this large are prepared on the [`worker`] thread; smaller ones at once.
const PREPARED_BYTES_MIN: usize = 1 << 20;

/// Work for the [`worker`] thread.
enum Job {
    /// Populate `[start, end)` writable, a chunk at a time.
    Populate { start: usize, end: usize },
    /// Allocate and clear a table ahead of its use ([`ZeroedTable::prepare`]).
    Prepare(Box<dyn FnOnce() + Send>),
}

/// The one thread that populates and prepares tables, in the order asked. Why one long-lived
/// thread: spawning a thread maps its stack, which takes the process's mmap lock exclusively,
/// and while a populate was in progress that took 28 ms, inside the admission that asked.
/// `None` if the thread could not be started.
fn worker() -> Option<&'static std::sync::mpsc::Sender<Job>> {
    static WORKER: std::sync::OnceLock<Option<std::sync::mpsc::Sender<Job>>> = std::sync::OnceLock::new();
    WORKER
        .get_or_init(|| {
            let (sender, jobs) = std::sync::mpsc::channel::<Job>();
            let spawned = std::thread::Builder::new().name("lookback-memory".into()).spawn(move || {
                crate::sched::set_thread_priority(false, WORKER_THREAD_NICE);
                for job in jobs {
                    match job {
                        Job::Populate { start, end } => populate_now(start, end),
                        Job::Prepare(prepare) => prepare(),
                    }
                }
            });
            spawned.ok().map(|_| sender)
        })
        .as_ref()
}

/// Maps `[start, end)` (page-aligned) writable, `chunk_bytes` per call (each call holds the
/// process's mmap lock); stops at the first failure: unsupported before Linux 5.14, or the
/// range is not (or no longer) mapped. Never changes memory contents.
pub fn populate_writable(start: usize, end: usize, chunk_bytes: usize) -> std::io::Result<()> {
    const MADV_POPULATE_WRITE: libc::c_int = 23;
    for chunk in (start..end).step_by(chunk_bytes.max(1)) {
        let len = chunk_bytes.min(end - chunk);
        // SAFETY: madvise only takes addresses; populating anonymous memory never changes its
        // contents, and an address range no longer mapped fails the call (ENOMEM).
        if unsafe { libc::madvise(chunk as *mut libc::c_void, len, MADV_POPULATE_WRITE) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Asks for transparent huge pages on the 2 MiB pages inside `[start, end)` (best effort: a
/// kernel without THP, or with it off, ignores or refuses the advice and nothing changes).
///
/// Why: a dedup probe is a random access into a table of hundreds of MiB. With 4 KiB pages
/// nearly every probe also misses the TLB, and under a hypervisor (nested paging) that walk is
/// the larger part of the probe: `dedup_profile` at an admission's pace measured 272 ns/key
/// with 4 KiB pages against 168-214 with huge pages. Kernels configured `madvise` (as on
/// the machines measured here) give huge pages only to ranges that ask.
pub fn advise_huge_pages(start: usize, end: usize) {
    let start = start.next_multiple_of(HUGE_PAGE_BYTES);
    let end = end / HUGE_PAGE_BYTES * HUGE_PAGE_BYTES;
    if end > start {
        // SAFETY: advice only; it never changes memory contents, and an unmapped range fails
        // the call (ignored).
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
    }
}

/// [`populate_writable`] in [`POPULATE_CHUNK_BYTES`] calls, best effort (nothing is lost if it
/// fails: pages then fault in on first use).
fn populate_now(start: usize, end: usize) {
    let _ = populate_writable(start, end, POPULATE_CHUNK_BYTES);
}

/// The whole pages inside `table`, as an address range (empty if none).
fn page_range<T>(table: &[T]) -> (usize, usize) {
    // SAFETY: sysconf has no memory effects.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096).max(1);
    let start = (table.as_ptr() as usize).next_multiple_of(page);
    let end = (table.as_ptr() as usize + std::mem::size_of_val(table)) / page * page;
    (start, end.max(start))
}

/// Types whose all-zero bit pattern is a valid value.
///
/// # Safety
/// Implement only for plain data where every field is valid as zero bytes.
pub(crate) unsafe trait Zeroable: Copy {}

// SAFETY: integers are valid as zero.
unsafe impl Zeroable for u128 {}

/// `len` zeroed values through the allocator's zeroing allocation (a memset only where the
/// memory was used before).
fn zeroed_vec<T: Zeroable>(len: usize) -> Vec<T> {
    let layout = std::alloc::Layout::array::<T>(len).expect("table size overflows isize");
    if layout.size() == 0 {
        return Vec::new();
    }
    // SAFETY: the layout has a non-zero size.
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<T>();
    if ptr.is_null() {
        std::alloc::handle_alloc_error(layout);
    }
    if layout.size() >= HUGE_PAGE_TABLE_BYTES_MIN {
        advise_huge_pages(ptr as usize, ptr as usize + layout.size());
    }
    // SAFETY: allocated by the global allocator with `Layout::array::<T>(len)`, as Vec does
    // for capacity `len`; all `len` values are zero bytes, valid for T (Zeroable).
    unsafe { Vec::from_raw_parts(ptr, len, len) }
}

/// A zero-initialized array whose pages are mapped writable before (or soon after) it is
/// first used; see the module docs.
pub(crate) struct ZeroedTable<T: Zeroable> {
    values: Vec<T>,
}

impl<T: Zeroable> ZeroedTable<T> {
    pub(crate) fn new(len: usize) -> ZeroedTable<T> {
        let values = zeroed_vec(len);
        if std::mem::size_of_val(values.as_slice()) >= POPULATE_BYTES_MIN {
            let (start, end) = page_range(&values);
            if let (true, Some(worker)) = (end > start, worker()) {
                // A send fails only if the worker is gone; then pages fault in on first use.
                let _ = worker.send(Job::Populate { start, end });
            }
        }
        ZeroedTable { values }
    }

    pub(crate) fn len(&self) -> usize {
        self.values.len()
    }
}

impl<T: Zeroable + Send + 'static> ZeroedTable<T> {
    /// Starts making a table of `len` zeroes on the [`worker`] thread (allocated, cleared and
    /// populated there); [`PreparedTable::take`] hands it over.
    pub(crate) fn prepare(len: usize) -> PreparedTable<T> {
        let bytes = len.saturating_mul(std::mem::size_of::<T>());
        if let (true, Some(worker)) = (bytes >= PREPARED_BYTES_MIN, worker()) {
            let (done, ready) = std::sync::mpsc::sync_channel(1);
            let job = Job::Prepare(Box::new(move || {
                let values = zeroed_vec::<T>(len);
                let (start, end) = page_range(&values);
                populate_now(start, end);
                // Fails only if the PreparedTable was dropped; then so is the table.
                let _ = done.send(values);
            }));
            if worker.send(job).is_ok() {
                return PreparedTable { len, state: Prepared::Pending(ready) };
            }
        }
        PreparedTable { len, state: Prepared::Ready(ZeroedTable::new(len)) }
    }
}

/// A table being made by [`ZeroedTable::prepare`].
pub(crate) struct PreparedTable<T: Zeroable> {
    len: usize,
    state: Prepared<T>,
}

enum Prepared<T: Zeroable> {
    Ready(ZeroedTable<T>),
    Pending(std::sync::mpsc::Receiver<Vec<T>>),
}

impl<T: Zeroable> PreparedTable<T> {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The table, waiting for the worker if it has not finished (it normally has: tables are
    /// prepared well before they are needed).
    pub(crate) fn take(self) -> ZeroedTable<T> {
        match self.state {
            Prepared::Ready(table) => table,
            Prepared::Pending(ready) => match ready.recv() {
                Ok(values) => ZeroedTable { values },
                Err(_) => ZeroedTable::new(self.len),
            },
        }
    }
}

impl<T: Zeroable> std::fmt::Debug for PreparedTable<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PreparedTable({} entries)", self.len)
    }
}

impl<T: Zeroable> std::ops::Deref for ZeroedTable<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.values
    }
}

impl<T: Zeroable> std::ops::DerefMut for ZeroedTable<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.values
    }
}

impl<T: Zeroable + std::fmt::Debug> std::fmt::Debug for ZeroedTable<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ZeroedTable({} entries)", self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_tables_small_and_large_start_zero_and_hold_writes() {
        for len in [0usize, 10, (POPULATE_BYTES_MIN / 16) * 3] {
            let mut table: ZeroedTable<u128> = ZeroedTable::new(len);
            assert_eq!(table.len(), len);
            assert!(table.iter().all(|&x| x == 0));
            if len > 0 {
                table[len - 1] = 7;
                table[0] = 9;
                assert_eq!((table[0], table[len - 1]), (9, 7));
            }
        }
    }

    #[test]
    fn prepared_tables_are_zero_even_in_reused_memory() {
        let len = (PREPARED_BYTES_MIN / 16) * 4;
        for _ in 0..4 {
            // Dirty memory of the same size, freed just before: the allocator may hand it out.
            drop(vec![u128::MAX; len]);
            let prepared: PreparedTable<u128> = ZeroedTable::prepare(len);
            assert_eq!(prepared.len(), len);
            let mut table = prepared.take();
            assert_eq!(table.len(), len);
            assert!(table.iter().all(|&x| x == 0));
            table[len / 2] = 3;
            assert_eq!(table[len / 2], 3);
        }
        let small: ZeroedTable<u128> = ZeroedTable::prepare(4).take();
        assert_eq!(&small[..], &[0; 4]);
    }
}
