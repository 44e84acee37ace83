//! The event-id dedup window: an `(app_id, event_id)` seen again within the window is dropped.
//!
//! Keys are 128 bits: a 64-bit hash of app_id folded into the event UUID, so two different
//! events collide only if their random UUIDs differ by exactly that hash — negligible for
//! random ids, unlike a 64-bit hash whose birthday bound is reached at a few billion keys.
//!
//! The window is kept as [`GENERATIONS`] hash sets, each covering `window / (GENERATIONS - 1)`
//! of ingest time: a key is retained for at least the whole window and at most 4/3 of it, and
//! expiry is dropping a whole set (no per-key timers). The number of keys is bounded by
//! `entries_max`; past it the oldest generation is dropped early and counted, so memory stays
//! bounded and the shrinking window is visible in metrics rather than silent.
//!
//! Every admitted event probes the window, and a busy window is gigabytes: each probe is a
//! cache miss. So a batch is probed through [`DedupWindow::insert_batch`], which prefetches
//! the slots of keys [`PREFETCH_KEYS`] ahead in every generation, overlapping the misses; the
//! generations are [`KeyTable`]s (open addressing over the keys themselves, which are already
//! uniformly distributed hashes) whose slot is computable before the probe.

use ahash::AHasher;
use lookback_common::{Column, ColumnValues};
use std::collections::VecDeque;
use std::hash::Hasher;
use crate::memory::{PreparedTable, ZeroedTable};

pub const GENERATIONS: usize = 4;
/// Keys a new generation is sized for at least (32 MiB of table).
const GENERATION_CAPACITY_MIN: usize = 1 << 20;
/// How far through its time the newest generation is when the next one's table is asked for.
const SPARE_AT_PERCENT: u64 = 90;
/// Keys between a slot prefetch and its probe in [`DedupWindow::insert_batch`].
const PREFETCH_KEYS: usize = 8;

pub fn dedup_key(app_id: &[u8], event_id: &[u8; 16]) -> u128 {
    fold_key(app_hash(app_id), event_id)
}

fn app_hash(app_id: &[u8]) -> u128 {
    // A fixed-key hasher: keys need not be stable across builds (the window is rebuilt from
    // data at start-up), only within one process.
    let mut h = AHasher::default();
    h.write(app_id);
    h.finish() as u128
}

fn fold_key(app: u128, event_id: &[u8; 16]) -> u128 {
    u128::from_le_bytes(*event_id) ^ (app << 64) ^ app
}

/// The dedup keys of rows `(apps[i], ids[i])`: an app_id text column and an event_id uuid
/// column of one batch or block (an app_id dictionary is hashed once per entry). Panics on
/// other column types (the table's dedup columns are chosen by type).
pub fn column_keys<'a>(apps: &'a Column, ids: &'a Column) -> impl Iterator<Item = u128> + 'a {
    let (ColumnValues::Text(apps), ColumnValues::Uuid(ids)) = (&apps.values, &ids.values) else {
        panic!("dedup columns must be text and uuid");
    };
    let entry_hashes: Vec<u128> = match &apps.codes {
        Some(_) => (0..apps.entries()).map(|e| app_hash(apps.entry_bytes(e))).collect(),
        None => Vec::new(),
    };
    ids.iter().enumerate().map(move |(row, id)| {
        let app = match &apps.codes {
            Some(codes) => entry_hashes[codes[row] as usize],
            None => app_hash(apps.get_bytes(row)),
        };
        fold_key(app, id)
    })
}

#[derive(Debug)]
pub struct DedupWindow {
    generation_ms: u64,
    entries_max: usize,
    /// Front = newest. Each entry: (generation start, keys).
    generations: VecDeque<(u64, KeyTable)>,
    /// Slots for the next generation, made ahead on the memory thread so that the admission
    /// that starts a generation does not clear a table itself: the first one is asked for
    /// when the window is created, later ones near the end of the newest generation.
    spare: Option<PreparedTable<u128>>,
    entries: usize,
    pub evicted_early: u64,
}

impl DedupWindow {
    pub fn new(window_ms: u64, entries_max: usize) -> DedupWindow {
        let generation_ms = (window_ms / (GENERATIONS as u64 - 1)).max(1);
        let spare = Some(ZeroedTable::prepare(KeyTable::slots_for(GENERATION_CAPACITY_MIN.min(entries_max))));
        DedupWindow { generation_ms, entries_max, generations: VecDeque::new(), spare, entries: 0, evicted_early: 0 }
    }

    pub fn len(&self) -> usize {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    pub fn contains(&self, key: u128) -> bool {
        self.generations.iter().any(|(_, table)| table.contains(key))
    }

    /// Inserts a key at ingest time `now_ms`; returns false if it was already present.
    pub fn insert(&mut self, key: u128, now_ms: u64) -> bool {
        // Rotating first is safe: a generation dropped here is one `contains` would have
        // ignored a moment later anyway.
        self.rotate(now_ms);
        self.insert_rotated(key)
    }

    /// [`Self::insert`] of every key in order (a repeat within `keys` is a duplicate too),
    /// at one ingest time; `fresh(i)` is called with the index of every key that was new.
    pub fn insert_batch(&mut self, keys: &[u128], now_ms: u64, mut fresh: impl FnMut(usize)) {
        self.rotate(now_ms);
        for (i, &key) in keys.iter().enumerate() {
            if let Some(&ahead) = keys.get(i + PREFETCH_KEYS) {
                self.generations.iter().for_each(|(_, table)| table.prefetch(ahead));
            }
            if self.insert_rotated(key) {
                fresh(i);
            }
        }
    }

    fn insert_rotated(&mut self, key: u128) -> bool {
        // The newest generation is probed once, by insert.
        if self.generations.iter().skip(1).any(|(_, table)| table.contains(key)) {
            return false;
        }
        let (_, newest) = self.generations.front_mut().expect("rotate leaves a generation");
        if !newest.insert(key) {
            return false;
        }
        self.entries += 1;
        if self.entries > self.entries_max && self.generations.len() > 1 {
            self.drop_oldest();
            self.evicted_early += 1;
        }
        true
    }

    /// Removes keys inserted by the last admission, whose WAL append then failed: those events
    /// were never stored, so a retry must not be dropped as a duplicate. Keys of one admission
    /// all went into the newest generation (one `now_ms` per admission).
    pub fn forget(&mut self, keys: impl Iterator<Item = u128>) {
        if let Some((_, newest)) = self.generations.front_mut() {
            for key in keys {
                if newest.remove(key) {
                    self.entries -= 1;
                }
            }
        }
    }

    fn rotate(&mut self, now_ms: u64) {
        let needs_new = match self.generations.front() {
            None => true,
            Some((start, _)) => now_ms >= start.saturating_add(self.generation_ms),
        };
        if needs_new {
            // Size the new set like the last one so a busy window does not rehash its way up.
            let previous = self.generations.front().map_or(0, |(_, set)| set.len());
            let capacity = previous.max(GENERATION_CAPACITY_MIN).min(self.entries_max);
            let slots = KeyTable::slots_for(capacity);
            let table = match self.spare.take() {
                Some(spare) if spare.len() >= slots => KeyTable::with_slots(Slots::from_table(spare.take())),
                _ => KeyTable::with_capacity(capacity),
            };
            self.generations.push_front((now_ms, table));
        }
        self.prepare_spare(now_ms);
        // A generation takes keys for `generation_ms` from its start, so once it is
        // `GENERATIONS * generation_ms` old each of its keys was held for the whole window.
        let horizon_ms = self.generation_ms.saturating_mul(GENERATIONS as u64);
        let expired = |start: u64| now_ms >= start.saturating_add(horizon_ms);
        while self.generations.len() > GENERATIONS || self.generations.back().is_some_and(|(start, _)| expired(*start)) {
            self.drop_oldest();
        }
    }

    /// Asks for the next generation's table once the newest generation is
    /// [`SPARE_AT_PERCENT`] through its time, sized for the keys it holds by then.
    fn prepare_spare(&mut self, now_ms: u64) {
        let Some((start, newest)) = self.generations.front() else { return };
        let due = start.saturating_add(self.generation_ms / 100 * SPARE_AT_PERCENT);
        if self.spare.is_some() || now_ms < due {
            return;
        }
        let capacity = newest.len().max(GENERATION_CAPACITY_MIN).min(self.entries_max);
        self.spare = Some(ZeroedTable::prepare(KeyTable::slots_for(capacity)));
    }

    fn drop_oldest(&mut self) {
        if let Some((_, set)) = self.generations.pop_back() {
            self.entries -= set.len();
        }
    }
}

/// A set of 128-bit keys that grows without pausing: open addressing with linear probing,
/// load at most 7/10; on growth the old slots are moved to the doubled table a few per insert
/// ([`MIGRATE_SLOTS_PER_INSERT`]) while lookups consult both, so no admission waits for a
/// rehash of millions of keys (which took up to a second and was the ack latency p99).
///
/// Keys are hashes already (random UUIDs folded with an app hash), but a client may send
/// sequential ids, so the home slot comes from a multiplicative hash of both halves. Key 0
/// marks an empty slot; the key 0 itself is kept in `has_zero`.
#[derive(Debug)]
struct KeyTable {
    current: Slots,
    /// The table being migrated into `current`, and the next slot to move.
    previous: Option<(Slots, usize)>,
    /// The doubled table, asked of the memory thread once `current` is half full, so that
    /// growing at 7/10 finds it ready: an admission that had to fault in a fresh table itself
    /// waited up to 100 ms on page faults.
    next: Option<PreparedTable<u128>>,
    /// Distinct non-zero keys (in either table).
    len: usize,
    has_zero: bool,
}

/// Old slots moved per insert while migrating: the doubled table reaches its own growth point
/// after 0.7 × old-capacity inserts, by which time 2 × that many slots were moved.
const MIGRATE_SLOTS_PER_INSERT: usize = 2;
/// Old slots between a migrated key's prefetch and its insert.
const MIGRATE_PREFETCH_SLOTS: usize = PREFETCH_KEYS * 10 / 7;

impl KeyTable {
    /// Slots for `keys` keys under the load limit.
    fn slots_for(keys: usize) -> usize {
        (keys.max(16) * 10 / 7).next_power_of_two()
    }

    fn with_capacity(keys: usize) -> KeyTable {
        KeyTable::with_slots(Slots::new(KeyTable::slots_for(keys)))
    }

    fn with_slots(current: Slots) -> KeyTable {
        KeyTable { current, previous: None, next: None, len: 0, has_zero: false }
    }

    fn len(&self) -> usize {
        self.len + usize::from(self.has_zero)
    }

    fn prefetch(&self, key: u128) {
        self.current.prefetch(key);
        if let Some((previous, _)) = &self.previous {
            previous.prefetch(key);
        }
    }

    fn contains(&self, key: u128) -> bool {
        if key == 0 {
            return self.has_zero;
        }
        self.current.find(key).1 || self.previous.as_ref().is_some_and(|(p, _)| p.find(key).1)
    }

    /// Returns false when `key` was present.
    fn insert(&mut self, key: u128) -> bool {
        if key == 0 {
            return !std::mem::replace(&mut self.has_zero, true);
        }
        self.migrate(MIGRATE_SLOTS_PER_INSERT);
        if self.previous.as_ref().is_some_and(|(p, _)| p.find(key).1) {
            return false;
        }
        let (i, found) = self.current.find(key);
        if found {
            return false;
        }
        self.current.slots[i] = key;
        self.current.used += 1;
        self.len += 1;
        if self.current.used * 2 > self.current.slots.len() && self.next.is_none() {
            self.next = Some(ZeroedTable::prepare(self.current.slots.len() * 2));
        }
        if self.current.used * 10 > self.current.slots.len() * 7 {
            self.grow();
        }
        true
    }

    fn grow(&mut self) {
        self.migrate(usize::MAX);
        let doubled = match self.next.take() {
            Some(next) => Slots::from_table(next.take()),
            None => Slots::new(self.current.slots.len() * 2),
        };
        assert_eq!(doubled.slots.len(), self.current.slots.len() * 2);
        self.previous = Some((std::mem::replace(&mut self.current, doubled), 0));
    }

    /// Moves up to `slots` old slots into `current`; drops the old table when done. A moved
    /// key stays in the old table too (lookups see it in either; removal clears both).
    fn migrate(&mut self, slots: usize) {
        let Some((previous, cursor)) = &mut self.previous else { return };
        let end = cursor.saturating_add(slots).min(previous.slots.len());
        for i in *cursor..end {
            // Old slots are read in order; their new homes are random, so they are
            // prefetched as in `insert_batch` (slots are 7/10 full, so this is ~PREFETCH_KEYS keys).
            if let Some(&ahead) = previous.slots.get(i + MIGRATE_PREFETCH_SLOTS).filter(|&&k| k != 0) {
                self.current.prefetch(ahead);
            }
            let key = previous.slots[i];
            if key != 0 {
                let (at, found) = self.current.find(key);
                if !found {
                    self.current.slots[at] = key;
                    self.current.used += 1;
                }
            }
        }
        *cursor = end;
        if end == previous.slots.len() {
            self.previous = None;
        }
    }

    fn remove(&mut self, key: u128) -> bool {
        if key == 0 {
            return std::mem::replace(&mut self.has_zero, false);
        }
        let in_current = self.current.remove(key);
        let in_previous = self.previous.as_mut().is_some_and(|(p, _)| p.remove(key));
        let removed = in_current || in_previous;
        if removed {
            self.len -= 1;
        }
        removed
    }
}

/// One open-addressing table of non-zero keys (0 = empty slot); removal shifts the following
/// cluster back (no tombstones).
#[derive(Debug)]
struct Slots {
    slots: ZeroedTable<u128>,
    /// log2 of `slots.len()`.
    bits: u32,
    /// Occupied slots.
    used: usize,
}

impl Slots {
    fn new(slots: usize) -> Slots {
        Slots::from_table(ZeroedTable::new(slots))
    }

    fn from_table(slots: ZeroedTable<u128>) -> Slots {
        assert!(slots.len().is_power_of_two());
        let bits = slots.len().trailing_zeros();
        Slots { slots, bits, used: 0 }
    }

    fn home(&self, key: u128) -> usize {
        let folded = (key as u64) ^ ((key >> 64) as u64).rotate_left(32);
        (folded.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - self.bits)) as usize
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    fn prefetch(&self, key: u128) {
        crate::segment::prefetch(self.slots.as_ptr().wrapping_add(self.home(key)) as *const u8);
    }

    /// The slot holding `key`, or the empty slot that ends its probe sequence.
    fn find(&self, key: u128) -> (usize, bool) {
        let mut i = self.home(key);
        loop {
            match self.slots[i] {
                0 => return (i, false),
                k if k == key => return (i, true),
                _ => i = (i + 1) & self.mask(),
            }
        }
    }

    fn remove(&mut self, key: u128) -> bool {
        let (mut hole, found) = self.find(key);
        if !found {
            return false;
        }
        // Backward-shift deletion: move later keys of the cluster into the hole when their
        // home slot does not lie (cyclically) between the hole and their position.
        let mut i = hole;
        loop {
            i = (i + 1) & self.mask();
            let k = self.slots[i];
            if k == 0 {
                break;
            }
            let distance_home = i.wrapping_sub(self.home(k)) & self.mask();
            let distance_hole = i.wrapping_sub(hole) & self.mask();
            if distance_home >= distance_hole {
                self.slots[hole] = k;
                hole = i;
            }
        }
        self.slots[hole] = 0;
        self.used -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_table_matches_a_model_through_growth_and_removal() {
        let mut table = KeyTable::with_capacity(16);
        let mut model = std::collections::HashSet::new();
        let mut rng = 0x1234_5678_9abc_def0u64;
        for step in 0..200_000u64 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            // Small key space (with 0) so inserts, repeats and removals all happen often.
            let key = u128::from(rng % 5000) << (step % 3 * 40);
            if rng.is_multiple_of(5) {
                assert_eq!(table.remove(key), model.remove(&key), "remove {key}");
            } else {
                assert_eq!(table.insert(key), model.insert(key), "insert {key}");
            }
            assert_eq!(table.len(), model.len());
            assert_eq!(table.contains(key), model.contains(&key));
            assert_eq!(table.contains(key ^ 1), model.contains(&(key ^ 1)));
        }
        for key in &model {
            assert!(table.contains(*key));
        }
    }

    #[test]
    fn insert_batch_equals_inserting_one_by_one() {
        let keys: Vec<u128> = (0..10_000u128).map(|i| (i % 7919) * 0x1_0000_0001).collect();
        let mut batch = DedupWindow::new(1000, 1_000_000);
        let mut fresh = Vec::new();
        batch.insert_batch(&keys, 5, |i| fresh.push(i));
        let mut single = DedupWindow::new(1000, 1_000_000);
        let expected: Vec<usize> = keys.iter().enumerate().filter(|(_, k)| single.insert(**k, 5)).map(|(i, _)| i).collect();
        assert_eq!(fresh, expected);
        assert_eq!(fresh.len(), 7919);
    }

    #[test]
    fn duplicates_within_window_are_detected_and_expire_after() {
        let hour = 3_600_000;
        let mut w = DedupWindow::new(24 * hour, 1_000_000);
        let k = dedup_key(b"app", &[7; 16]);
        assert!(w.insert(k, 0));
        assert!(!w.insert(k, 23 * hour), "seen again within the window");
        for t in 1..=40u64 {
            w.insert(dedup_key(b"app", &[t as u8; 16]), t * hour);
        }
        assert!(!w.contains(k), "dropped after at most 4/3 of the window");
    }

    #[test]
    fn the_next_generations_table_is_prepared_near_the_end_of_the_newest() {
        let mut w = DedupWindow::new(3000, 1_000_000); // generations of 1000 ms
        assert!(w.spare.is_some(), "the first generation's table is asked for up front");
        assert!(w.insert(1, 0));
        assert!(w.spare.is_none(), "the first generation took it");
        assert!(w.insert(2, 500));
        assert!(w.spare.is_none(), "not yet 90 % through the generation");
        assert!(w.insert(3, 950));
        let spare_slots = w.spare.as_ref().map(|s| s.len()).expect("prepared at 90 %");
        assert!(w.insert(4, 1000));
        assert_eq!(w.generations.len(), 2);
        assert_eq!(w.generations.front().map(|(_, t)| t.current.slots.len()), Some(spare_slots));
        assert!(w.spare.is_none());
        assert!(!w.insert(1, 1001) && !w.insert(4, 1002), "keys of both generations are still seen");
    }

    #[test]
    fn forgotten_keys_are_admitted_again() {
        let mut w = DedupWindow::new(1000, 100);
        let keys = [dedup_key(b"a", &[1; 16]), dedup_key(b"a", &[2; 16])];
        keys.iter().for_each(|k| assert!(w.insert(*k, 5)));
        w.forget(keys.into_iter());
        assert_eq!(w.len(), 0);
        assert!(w.insert(keys[0], 6));
    }

    #[test]
    fn same_event_id_in_other_app_is_distinct() {
        let mut w = DedupWindow::new(1000, 100);
        assert!(w.insert(dedup_key(b"a", &[1; 16]), 0));
        assert!(w.insert(dedup_key(b"b", &[1; 16]), 0));
    }

    #[test]
    fn entries_are_bounded() {
        let mut w = DedupWindow::new(3000, 10);
        for t in 0..100u64 {
            w.insert(dedup_key(b"a", &(t as u128).to_le_bytes()), t * 100);
        }
        assert!(w.len() <= 10 + 4, "len {}", w.len());
        assert!(w.evicted_early > 0);
    }
}
