//! Faulting in large zeroed tables before use.
//!
//! Hash tables are allocated zeroed (fresh pages from the kernel, not yet mapped) and then
//! probed before they are written. A probe's read maps the shared zero page; the first write
//! to that page then faults again, copies, and flushes the TLB of every other CPU running the
//! process (an inter-processor interrupt each). Under ingest this cost ~8% of the admission
//! CPU. `MADV_POPULATE_WRITE` (Linux 5.14+) maps the pages writable up front in one call, about
//! half the cost of touching them one fault at a time; where unsupported, nothing changes.

/// Tables smaller than this are left alone (a few faults are cheaper than the call).
const POPULATE_BYTES_MIN: usize = 1 << 20;

/// Maps the pages under `table` writable now. Best effort: errors are ignored.
pub(crate) fn populate<T>(table: &mut [T]) {
    let bytes = std::mem::size_of_val(table);
    if bytes < POPULATE_BYTES_MIN {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        const MADV_POPULATE_WRITE: libc::c_int = 23;
        // SAFETY: sysconf has no memory effects.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096).max(1);
        let start = (table.as_mut_ptr() as usize).next_multiple_of(page);
        let end = (table.as_mut_ptr() as usize + bytes) / page * page;
        if end > start {
            // SAFETY: the range lies inside `table`, which we borrow mutably; populating
            // writable anonymous memory does not change its contents (zeroed pages stay zero,
            // present pages are untouched).
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, MADV_POPULATE_WRITE) };
        }
    }
}
