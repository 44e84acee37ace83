//! Faulting in large zeroed tables before use.
//!
//! Hash tables are allocated zeroed (fresh pages from the kernel, not yet mapped) and then
//! probed before they are written. A probe's read maps the shared zero page; the first write
//! to that page then faults again, copies, and flushes the TLB of every other CPU running the
//! process (an inter-processor interrupt each). Under ingest this cost ~8% of the admission
//! CPU. `MADV_POPULATE_WRITE` (Linux 5.14+) maps the pages writable up front in one call, about
//! half the cost of touching them one fault at a time; where unsupported, nothing changes.
//! It runs on a background thread ([`worker`]): populating a 256 MiB dedup table takes
//! ~100 ms, which inline stalled the admission that grew it (the ack latency p99). Racing the
//! owner is harmless: populating never changes memory contents and pages already present are
//! skipped; the same thread unmaps dropped tables, after any populate of theirs.
//!
//! Mapped tables are advised `MADV_HUGEPAGE`: their probes land at random, and with 4 KiB
//! pages nearly each one also missed the TLB (on a VM, a two-level page walk). 10 M dedup
//! inserts: ~150 -> ~120 ns a key.

/// Tables smaller than this are left alone (a few faults are cheaper than the call).
const POPULATE_BYTES_MIN: usize = 1 << 20;
/// Bytes populated per call. The call holds the process's mmap lock (shared) throughout, and an
/// unmap anywhere in the process waits for it, and every page fault waits behind the unmap:
/// populating a 256 MiB table in one call stalled an admission's dedup inserts for up to
/// 500 ms. One huge page per call bounds that wait to one page's clearing.
const POPULATE_CHUNK_BYTES: usize = 2 << 20;

/// Work for the [`worker`] thread, on address ranges of mappings this module created.
enum Job {
    /// Populate `[start, end)` writable, a chunk at a time.
    Populate { start: usize, end: usize },
    /// Unmap `bytes` at `addr`.
    Unmap { addr: usize, bytes: usize },
}

/// The one thread that populates and unmaps tables, in the order asked. Why one long-lived
/// thread: spawning a thread maps its stack, which takes the process's mmap lock exclusively,
/// and while a populate was in progress that took 28 ms, inside the admission that dropped a
/// dedup table. `None` if the thread could not be started.
fn worker() -> Option<&'static std::sync::mpsc::Sender<Job>> {
    static WORKER: std::sync::OnceLock<Option<std::sync::mpsc::Sender<Job>>> = std::sync::OnceLock::new();
    WORKER
        .get_or_init(|| {
            let (sender, jobs) = std::sync::mpsc::channel::<Job>();
            let spawned = std::thread::Builder::new().name("lookback-memory".into()).spawn(move || {
                for job in jobs {
                    run(job);
                }
            });
            spawned.ok().map(|_| sender)
        })
        .as_ref()
}

fn run(job: Job) {
    match job {
        Job::Populate { start, end } => {
            const MADV_POPULATE_WRITE: libc::c_int = 23;
            for chunk in (start..end).step_by(POPULATE_CHUNK_BYTES) {
                let len = POPULATE_CHUNK_BYTES.min(end - chunk);
                // SAFETY: madvise only takes addresses; populating anonymous memory never
                // changes its contents. The table is unmapped only by a later job.
                let failed = unsafe { libc::madvise(chunk as *mut libc::c_void, len, MADV_POPULATE_WRITE) } != 0;
                if failed {
                    return;
                }
            }
        }
        // SAFETY: unmaps exactly a mapping created in `ZeroedTable::new`, whose owner was
        // dropped (nothing borrows it) and handed it over.
        Job::Unmap { addr, bytes } => unsafe {
            libc::munmap(addr as *mut libc::c_void, bytes);
        },
    }
}

/// Maps the pages under `table` writable soon, on the [`worker`] thread. Best effort: without
/// the thread, pages fault in on first use as they would anyway.
fn populate<T>(table: &mut [T]) {
    let bytes = std::mem::size_of_val(table);
    if bytes < POPULATE_BYTES_MIN {
        return;
    }
    // SAFETY: sysconf has no memory effects.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096).max(1);
    let start = (table.as_mut_ptr() as usize).next_multiple_of(page);
    let end = (table.as_mut_ptr() as usize + bytes) / page * page;
    if end > start {
        if let Some(worker) = worker() {
            // A send fails only if the worker is gone; then nothing is populated.
            let _ = worker.send(Job::Populate { start, end });
        }
    }
}

/// Types whose all-zero bit pattern is a valid value.
///
/// # Safety
/// Implement only for plain data where every field is valid as zero bytes.
pub(crate) unsafe trait Zeroable: Copy {}

// SAFETY: integers are valid as zero.
unsafe impl Zeroable for u128 {}

/// Tables at least this large are mapped straight from the kernel.
const MAPPED_BYTES_MIN: usize = 1 << 20;

/// A zero-initialized array. Large ones are fresh anonymous mappings: the kernel hands them
/// out zeroed and unmapped, so creating one costs nothing up front. (Through the allocator, a
/// large zeroed allocation that reuses freed memory is cleared with memset first: 300 ms for
/// a 512 MiB dedup table, inside an admission.) Large ones are also populated
/// ([`populate`]).
pub(crate) struct ZeroedTable<T: Zeroable> {
    storage: Storage<T>,
}

enum Storage<T> {
    Heap(Vec<T>),
    Mapped { ptr: std::ptr::NonNull<T>, len: usize },
}

// SAFETY: the mapping is owned exclusively by this value, like a Vec's buffer.
unsafe impl<T: Zeroable + Send> Send for ZeroedTable<T> {}
// SAFETY: shared access only reads, like &[T].
unsafe impl<T: Zeroable + Sync> Sync for ZeroedTable<T> {}

impl<T: Zeroable> ZeroedTable<T> {
    pub(crate) fn new(len: usize) -> ZeroedTable<T> {
        let bytes = len.checked_mul(std::mem::size_of::<T>()).expect("table size overflows usize");
        if bytes >= MAPPED_BYTES_MIN {
            // SAFETY: an anonymous private mapping with no address hint; checked below.
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    bytes,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if ptr != libc::MAP_FAILED {
                let ptr = std::ptr::NonNull::new(ptr.cast::<T>()).expect("mmap never returns null on success");
                // SAFETY: advice on the mapping just created; failure (THP off) changes nothing.
                unsafe { libc::madvise(ptr.as_ptr().cast(), bytes, libc::MADV_HUGEPAGE) };
                let mut table = ZeroedTable { storage: Storage::Mapped { ptr, len } };
                populate(table.as_mut_slice());
                return table;
            }
        }
        // SAFETY: T is valid as all-zero bytes (Zeroable).
        let heap = (0..len).map(|_| unsafe { std::mem::zeroed::<T>() }).collect();
        ZeroedTable { storage: Storage::Heap(heap) }
    }

    pub(crate) fn len(&self) -> usize {
        self.as_slice().len()
    }

    pub(crate) fn as_slice(&self) -> &[T] {
        match &self.storage {
            Storage::Heap(v) => v,
            // SAFETY: the mapping holds `len` zero-initialized (hence valid) T's and lives as
            // long as self.
            Storage::Mapped { ptr, len } => unsafe { std::slice::from_raw_parts(ptr.as_ptr(), *len) },
        }
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [T] {
        match &mut self.storage {
            Storage::Heap(v) => v,
            // SAFETY: as in as_slice, and &mut self makes the access exclusive.
            Storage::Mapped { ptr, len } => unsafe { std::slice::from_raw_parts_mut(ptr.as_ptr(), *len) },
        }
    }
}

impl<T: Zeroable> Drop for ZeroedTable<T> {
    /// Unmaps a mapped table on the [`worker`] thread: an unmap takes the process's mmap lock
    /// exclusively and waits for every holder (a populate in progress, page faults), and the
    /// table is dropped by whoever finished with it, such as an admission.
    fn drop(&mut self) {
        if let Storage::Mapped { ptr, len } = &self.storage {
            let (addr, bytes) = (ptr.as_ptr() as usize, len * std::mem::size_of::<T>());
            let job = Job::Unmap { addr, bytes };
            let sent = worker().map(|w| w.send(job));
            if let None | Some(Err(_)) = sent {
                // SAFETY: unmaps exactly the mapping created in `new`, which nothing borrows
                // now (self is being dropped).
                unsafe { libc::munmap(addr as *mut libc::c_void, bytes) };
            }
        }
    }
}

impl<T: Zeroable> std::ops::Deref for ZeroedTable<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.as_slice()
    }
}

impl<T: Zeroable> std::ops::DerefMut for ZeroedTable<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        self.as_mut_slice()
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
    fn zeroed_tables_small_and_mapped_start_zero_and_hold_writes() {
        for len in [0usize, 10, (MAPPED_BYTES_MIN / 16) * 3] {
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
}
