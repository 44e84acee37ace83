//! Interning of byte strings with memory-level parallelism: the distinct values of a text
//! column, and each value's id (order of first appearance).
//!
//! Why not a `HashMap<&[u8], u32>`: a flush interns ~1.6 M values per column into tables of
//! ~200 k distinct device ids or IPs, far larger than the caches. Each lookup then waited for
//! three dependent cache misses (table slot, the key it points at, the value), ~270 ns a row,
//! the most expensive step of the flush. Here the caller feeds values through a short pipeline
//! ([`LOOKAHEAD`] rows deep): a value's slot is prefetched two stages before it is probed and
//! the packed copy of the candidate match one stage before, so the misses of many rows overlap.
//!
//! The table is open addressing with linear probing over [`Slot`]s holding the full 64-bit
//! hash, the id and where the value's copy lies in `arena` (distinct values packed together,
//! so comparing a match touches one or two cache lines). The load factor stays at most 1/2.

use crate::memory::{Zeroable, ZeroedTable};
use ahash::RandomState;

/// Rows between a value's slot prefetch and its probe (the arena prefetch is halfway).
pub(crate) const LOOKAHEAD: usize = 16;
/// Ring of in-flight values; a power of two above `LOOKAHEAD`.
const RING: usize = 2 * LOOKAHEAD;
const CAPACITY_MIN: usize = 1 << 10;

#[derive(Clone, Copy, Default)]
struct Slot {
    /// 0 = empty (stored hashes are never 0).
    hash: u64,
    /// Where the value's copy starts in `arena`.
    offset: u64,
    len: u32,
    id: u32,
}

// SAFETY: a Slot of zero bytes is the empty slot (hash 0).
unsafe impl Zeroable for Slot {}

pub(crate) struct Interner<'a> {
    slots: ZeroedTable<Slot>,
    mask: usize,
    /// The first occurrence of each distinct value, by id.
    values: Vec<&'a [u8]>,
    arena: Vec<u8>,
    hasher: RandomState,
}

impl<'a> Interner<'a> {
    pub(crate) fn new() -> Self {
        Interner {
            slots: ZeroedTable::new(CAPACITY_MIN),
            mask: CAPACITY_MIN - 1,
            values: Vec::new(),
            arena: Vec::new(),
            hasher: RandomState::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.values.len()
    }

    fn hash(&self, value: &[u8]) -> u64 {
        self.hasher.hash_one(value).max(1)
    }

    fn prefetch_slot(&self, hash: u64) {
        prefetch(self.slots.as_ptr().wrapping_add(hash as usize & self.mask) as *const u8);
    }

    /// Prefetches the arena copy of the value in `hash`'s home slot, when that slot holds it.
    fn prefetch_candidate(&self, hash: u64) {
        let slot = &self.slots[hash as usize & self.mask];
        if slot.hash == hash {
            prefetch(self.arena.as_ptr().wrapping_add(slot.offset as usize));
        }
    }

    /// The id of `value` (hash `hash`), adding it when new.
    fn id(&mut self, value: &'a [u8], hash: u64) -> u32 {
        let mut i = hash as usize & self.mask;
        loop {
            let slot = self.slots[i];
            if slot.hash == 0 {
                return self.insert_at(i, value, hash);
            }
            if slot.hash == hash && slot.len as usize == value.len() {
                let start = slot.offset as usize;
                if &self.arena[start..start + value.len()] == value {
                    return slot.id;
                }
            }
            i = (i + 1) & self.mask;
        }
    }

    fn insert_at(&mut self, i: usize, value: &'a [u8], hash: u64) -> u32 {
        let id = u32::try_from(self.values.len()).expect("distinct values fit u32 ids (segment rows do)");
        let len = u32::try_from(value.len()).expect("text values are far below 4 GiB (decode limits)");
        self.slots[i] = Slot { hash, offset: self.arena.len() as u64, len, id };
        self.values.push(value);
        self.arena.extend_from_slice(value);
        if self.values.len() * 2 > self.slots.len() {
            self.grow();
        }
        id
    }

    fn grow(&mut self) {
        let capacity = self.slots.len() * 2;
        let old = std::mem::replace(&mut self.slots, ZeroedTable::new(capacity));
        self.mask = capacity - 1;
        for &slot in old.iter().filter(|s| s.hash != 0) {
            let mut i = slot.hash as usize & self.mask;
            while self.slots[i].hash != 0 {
                i = (i + 1) & self.mask;
            }
            self.slots[i] = slot;
        }
    }

    /// Interns `values` in order (None = null, given `null_id`), calling `emit` with each id
    /// in order. `stop` is asked after every non-null value whether to give up (returns false
    /// then). Consecutive repeats skip the table.
    pub(crate) fn intern_all<I>(&mut self, values: I, null_id: u32, mut emit: impl FnMut(u32), mut stop: impl FnMut(usize, &Self) -> bool) -> bool
    where
        I: Iterator<Item = Option<&'a [u8]>>,
    {
        let mut values = values.fuse();
        let mut ring: [(u64, Option<&'a [u8]>); RING] = [(0, None); RING];
        let (mut loaded, mut done) = (0usize, 0usize);
        let mut previous: Option<(&'a [u8], u32)> = None;
        let mut non_null = 0usize;
        loop {
            // Stage 1: hash and prefetch the slot of the value LOOKAHEAD * 2 ahead.
            while loaded < done + 2 * LOOKAHEAD {
                let Some(value) = values.next() else { break };
                let hash = value.map_or(0, |v| self.hash(v));
                if value.is_some() {
                    self.prefetch_slot(hash);
                }
                ring[loaded % RING] = (hash, value);
                loaded += 1;
            }
            if done == loaded {
                return true;
            }
            // Stage 2: the value LOOKAHEAD ahead has its slot in cache; fetch its candidate.
            if done + LOOKAHEAD < loaded {
                let (hash, value) = ring[(done + LOOKAHEAD) % RING];
                if value.is_some() {
                    self.prefetch_candidate(hash);
                }
            }
            // Stage 3: probe.
            let (hash, value) = ring[done % RING];
            done += 1;
            let Some(value) = value else {
                emit(null_id);
                continue;
            };
            let id = match previous {
                Some((p, id)) if p == value => id,
                _ => self.id(value, hash),
            };
            previous = Some((value, id));
            emit(id);
            non_null += 1;
            if stop(non_null, self) {
                return false;
            }
        }
    }

    /// The distinct values sorted byte-wise, and each id's rank among them.
    pub(crate) fn into_sorted(self) -> (Vec<&'a [u8]>, Vec<u32>) {
        drop(self.slots);
        let values = &self.values;
        let order = sorted_ids(values);
        let mut rank = vec![0u32; values.len()];
        for (r, &id) in order.iter().enumerate() {
            rank[id as usize] = r as u32;
        }
        (order.iter().map(|&id| values[id as usize]).collect(), rank)
    }
}

/// Ids (indexes into `values`) in byte-wise order of their values.
///
/// Sorting the values themselves compares through pointers into memory far larger than the
/// caches (a flush sorts ~1 M distinct device ids; memcmp was 13% of the flush). So each value
/// is first given an 8-byte big-endian key: its bytes after the prefix every value shares (user
/// agents all start `Mozilla/5.0 (`), zero-padded. Keys sort in a packed array; only values
/// with equal keys are compared in full, which also settles padding against real zero bytes.
fn sorted_ids(values: &[&[u8]]) -> Vec<u32> {
    let shared = shared_prefix_len(values);
    let mut keyed: Vec<(u64, u32)> = values
        .iter()
        .enumerate()
        .map(|(id, v)| {
            let rest = &v[shared..];
            let mut key = [0u8; 8];
            let n = rest.len().min(8);
            key[..n].copy_from_slice(&rest[..n]);
            (u64::from_be_bytes(key), id as u32)
        })
        .collect();
    keyed.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| values[a.1 as usize].cmp(values[b.1 as usize])));
    keyed.into_iter().map(|(_, id)| id).collect()
}

/// The length of the longest prefix all `values` share.
fn shared_prefix_len(values: &[&[u8]]) -> usize {
    let Some((first, rest)) = values.split_first() else { return 0 };
    rest.iter().fold(first.len(), |shared, v| {
        shared.min(v.len()).min(first.iter().zip(v.iter()).take(shared).take_while(|(a, b)| a == b).count())
    })
}

/// A hint that `ptr`'s cache line is needed soon; never faults, whatever `ptr` is.
#[inline(always)]
pub(crate) fn prefetch(ptr: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch is a hint; it does not dereference `ptr` architecturally.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(ptr as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = ptr;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_ids_order_values_bytewise_whatever_their_shared_prefix() {
        let cases: Vec<Vec<&[u8]>> = vec![
            vec![],
            vec![b"x"],
            vec![b"Mozilla/5.0 (b)", b"Mozilla/5.0 (a)", b"Mozilla/5.0 (a) long tail", b"Mozilla/5.0 "],
            vec![b"ab\0", b"ab", b"ab\0\0", b"ab\0\0\0\0\0\0\0\0\x01", b"ab\0\0\0\0\0\0\0\0", b""],
            vec![b"same-prefix-12345678-b", b"same-prefix-12345678-a", b"same-prefix-12345679"],
        ];
        for values in cases {
            let got: Vec<&[u8]> = sorted_ids(&values).iter().map(|&id| values[id as usize]).collect();
            let mut want = values.clone();
            want.sort();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn interns_in_first_appearance_order_across_growth() {
        let owned: Vec<Vec<u8>> = (0..5000u32).map(|i| format!("value-{}", i % 3001).into_bytes()).collect();
        let mut values: Vec<Option<&[u8]>> = owned.iter().map(|v| Some(v.as_slice())).collect();
        values[7] = None;
        let mut interner = Interner::new();
        let mut ids = Vec::new();
        assert!(interner.intern_all(values.iter().copied(), u32::MAX, |id| ids.push(id), |_, _| false));
        assert_eq!(interner.len(), 3001);
        assert_eq!(ids[7], u32::MAX);
        for (row, value) in values.iter().enumerate() {
            if let Some(v) = value {
                let first = values.iter().position(|x| x == value).unwrap();
                assert_eq!(ids[row], ids[first], "row {row} {:?}", std::str::from_utf8(v));
            }
        }
        let (sorted, rank) = interner.into_sorted();
        assert!(sorted.windows(2).all(|w| w[0] < w[1]));
        for (row, value) in values.iter().enumerate() {
            if let Some(v) = value {
                assert_eq!(sorted[rank[ids[row] as usize] as usize], *v);
            }
        }
    }

    #[test]
    fn stop_gives_up() {
        let owned: Vec<Vec<u8>> = (0..100u32).map(|i| i.to_string().into_bytes()).collect();
        let mut interner = Interner::new();
        let mut emitted = 0;
        let finished = interner.intern_all(owned.iter().map(|v| Some(v.as_slice())), 0, |_| emitted += 1, |n, _| n == 10);
        assert!(!finished);
        assert_eq!(emitted, 10);
    }
}
