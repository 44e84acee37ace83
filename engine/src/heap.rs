//! The server's heap: kept, and pre-faulted at start-up.
//!
//! Why: the first touch of a page costs a page fault and a clear, and on the VMs measured here
//! about 2 ms per MiB (the hypervisor takes back memory the guest frees and must supply it
//! again), ~20× the cost of reusing memory the process already touched. A fresh server took
//! those faults inside admissions: decoding a batch into new memory, growing the dedup window,
//! a flush's first buffers; ack latency p99 over the first seconds of ingest was 30-110 ms
//! against ~10 ms later. So, like a database that sizes its buffer pool up front:
//! - [`keep_freed_memory`]: the allocator never returns freed memory to the kernel, so a flushed
//!   memtable's memory serves the next one warm;
//! - [`prefault`]: the allocator's arenas (its default one and one reserved here, together at
//!   least `memory_prefault_bytes`) are mapped writable before the server accepts work, in
//!   transparent huge pages where the kernel has them (see `lookback_storage::advise_huge_pages`).
//!
//! The cost is start-up time (~2.5 s per GiB on those VMs, ~0.2 s on bare metal) and resident
//! memory held from the start; `memory_prefault_bytes = 0` turns both off.

use std::time::{Duration, Instant};

/// mimalloc's `purge_delay` option (milliseconds before freed memory is returned to the OS;
/// -1: never).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// Without pre-faulting, freed memory is kept this long: under sustained ingest the same
/// amount is allocated again within a flush interval.
const PURGE_DELAY_MS: std::ffi::c_long = 30_000;
/// Anonymous mappings at least this large, present right after the reservation, are the
/// allocator's arenas (mimalloc reserves them 1 GiB at a time; nothing else maps that much
/// before the server starts its threads).
const ARENA_BYTES_MIN: usize = 64 << 20;
/// At most this share of physical memory is pre-faulted, whatever the configuration asks, so a
/// default meant for a server never pushes a small machine into the OOM killer.
const PREFAULT_PHYSICAL_PERCENT_MAX: usize = 25;
/// Bytes pre-faulted per call (each call holds the mmap lock; other threads are few yet).
const PREFAULT_CHUNK_BYTES: usize = 64 << 20;

extern "C" {
    /// mimalloc: reserve `size` bytes of OS memory as a new arena, used before asking the OS
    /// again (not in libmimalloc-sys's bindings; the symbol is in the library it links).
    fn mi_reserve_os_memory(size: usize, commit: bool, allow_large: bool) -> std::ffi::c_int;
}

/// Sets how long freed memory is kept: for ever when the heap is pre-faulted (else the
/// pre-faulted memory would be returned again), else [`PURGE_DELAY_MS`]. Call first thing in
/// main, before other threads exist.
pub fn keep_freed_memory(forever: bool) {
    let delay = if forever { -1 } else { PURGE_DELAY_MS };
    // SAFETY: sets a process-wide allocator option; no other thread exists yet.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, delay) };
}

/// What [`prefault`] did.
#[derive(Debug)]
pub struct Prefaulted {
    pub bytes: usize,
    pub arenas: usize,
    pub elapsed: Duration,
}

/// Reserves an arena so the allocator holds at least `bytes`, then maps its arenas writable, up
/// to `bytes` (and at most [`PREFAULT_PHYSICAL_PERCENT_MAX`] % of physical memory).
/// Errors only describe why nothing (or not all) was pre-faulted; the server runs either way.
pub fn prefault(bytes: usize) -> Result<Prefaulted, String> {
    let started = Instant::now();
    let bytes = bytes.min(physical_bytes() / 100 * PREFAULT_PHYSICAL_PERCENT_MAX);
    let arenas_before: usize = arenas()?.iter().map(|(start, end)| end - start).sum();
    let missing = bytes.saturating_sub(arenas_before);
    if missing > 0 {
        // SAFETY: an allocator call with plain arguments.
        let failed = unsafe { mi_reserve_os_memory(missing, true, true) } != 0;
        if failed {
            return Err(format!("the allocator could not reserve {} MiB", missing >> 20));
        }
    }
    let arenas = arenas()?;
    let mut populated = 0;
    for &(start, end) in &arenas {
        // Never more than asked (an arena may be larger than a small request).
        let end = end.min(start + (bytes - populated));
        populated += populate(start, end)?;
        if populated >= bytes {
            break;
        }
    }
    Ok(Prefaulted { bytes: populated, arenas: arenas.len(), elapsed: started.elapsed() })
}

/// Physical memory of the machine (0 if unknown, which pre-faults nothing).
fn physical_bytes() -> usize {
    // SAFETY: sysconf has no memory effects.
    let (pages, page) = unsafe { (libc::sysconf(libc::_SC_PHYS_PAGES), libc::sysconf(libc::_SC_PAGESIZE)) };
    usize::try_from(pages).unwrap_or(0).saturating_mul(usize::try_from(page).unwrap_or(0))
}

/// Address ranges of the anonymous read-write mappings of at least [`ARENA_BYTES_MIN`].
fn arenas() -> Result<Vec<(usize, usize)>, String> {
    let maps = std::fs::read_to_string("/proc/self/maps").map_err(|e| format!("read /proc/self/maps: {e}"))?;
    Ok(maps.lines().filter_map(anonymous_range).filter(|(start, end)| end - start >= ARENA_BYTES_MIN).collect())
}

/// `start-end rw-p offset dev inode` with no path: an anonymous private writable mapping.
fn anonymous_range(line: &str) -> Option<(usize, usize)> {
    let mut fields = line.split_whitespace();
    let (range, perms) = (fields.next()?, fields.next()?);
    if !perms.starts_with("rw") || fields.nth(3).is_some() {
        return None;
    }
    let (start, end) = range.split_once('-')?;
    Some((usize::from_str_radix(start, 16).ok()?, usize::from_str_radix(end, 16).ok()?))
}

/// Maps `[start, end)` writable; returns the bytes done. The range is one of this process's
/// live mappings (the allocator never unmaps its arenas).
fn populate(start: usize, end: usize) -> Result<usize, String> {
    // Before the pages exist, so they are made huge: the dedup window's tables and memtables
    // live here, and random probes into 4 KiB pages pay a TLB walk each.
    lookback_storage::advise_huge_pages(start, end);
    lookback_storage::populate_writable(start, end, PREFAULT_CHUNK_BYTES)
        .map_err(|error| format!("MADV_POPULATE_WRITE (Linux 5.14+) failed: {error}"))?;
    Ok(end - start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_name_anonymous_writable_ranges_only() {
        let anon = "7f0000000000-7f0040000000 rw-p 00000000 00:00 0 ";
        assert_eq!(anonymous_range(anon), Some((0x7f00_0000_0000, 0x7f00_4000_0000)));
        assert_eq!(anonymous_range("7f0000000000-7f0040000000 rw-p 00000000 00:00 0"), Some((0x7f00_0000_0000, 0x7f00_4000_0000)));
        assert_eq!(anonymous_range("55d0a000-55d0b000 r--p 00000000 08:01 1234 /usr/bin/lookback"), None);
        assert_eq!(anonymous_range("55d0a000-55d0b000 rw-p 00000000 08:01 1234 /data/segment.lbs"), None);
        assert_eq!(anonymous_range("7ffd0000-7ffd1000 rw-p 00000000 00:00 0 [stack]"), None);
        assert_eq!(anonymous_range("7ffd0000-7ffd1000 ---p 00000000 00:00 0"), None);
        assert_eq!(anonymous_range("garbage"), None);
    }

    #[test]
    fn prefault_reserves_and_maps_at_least_what_was_asked() {
        let asked = 256 << 20;
        let done = prefault(asked).expect("prefault");
        assert_eq!(done.bytes, asked, "{done:?}");
        assert!(done.arenas >= 1);
        // Everything pre-faulted is resident.
        let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
        let rss = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).expect("a VmRSS line");
        let rss_kb: usize = rss.trim().trim_end_matches("kB").trim().parse().expect("VmRSS in kB");
        assert!(rss_kb << 10 >= asked, "rss {rss_kb} kB");
    }
}
