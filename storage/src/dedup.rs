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

use ahash::AHasher;
use lookback_common::{Column, ColumnValues};
use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

pub const GENERATIONS: usize = 4;
/// Keys a new generation is sized for at least (about 32 MiB of table).
const GENERATION_CAPACITY_MIN: usize = 1 << 20;

type KeySet = HashSet<u128, BuildHasherDefault<AHasher>>;

pub fn dedup_key(app_id: &[u8], event_id: &[u8; 16]) -> u128 {
    // A fixed-key hasher: keys need not be stable across builds (the window is rebuilt from
    // data at start-up), only within one process.
    let mut h = AHasher::default();
    h.write(app_id);
    let app = h.finish() as u128;
    u128::from_le_bytes(*event_id) ^ (app << 64) ^ app
}

/// The dedup keys of rows `(apps[i], ids[i])`: an app_id text column and an event_id uuid
/// column of one batch or block. Panics on other column types (the table's dedup columns are
/// chosen by type).
pub fn column_keys<'a>(apps: &'a Column, ids: &'a Column) -> impl Iterator<Item = u128> + 'a {
    let (ColumnValues::Text(apps), ColumnValues::Uuid(ids)) = (&apps.values, &ids.values) else {
        panic!("dedup columns must be text and uuid");
    };
    ids.iter().enumerate().map(move |(row, id)| dedup_key(apps.get_bytes(row), id))
}

#[derive(Debug)]
pub struct DedupWindow {
    generation_ms: u64,
    entries_max: usize,
    /// Front = newest. Each entry: (generation start, keys).
    generations: VecDeque<(u64, KeySet)>,
    entries: usize,
    pub evicted_early: u64,
}

impl DedupWindow {
    pub fn new(window_ms: u64, entries_max: usize) -> DedupWindow {
        let generation_ms = (window_ms / (GENERATIONS as u64 - 1)).max(1);
        DedupWindow { generation_ms, entries_max, generations: VecDeque::new(), entries: 0, evicted_early: 0 }
    }

    pub fn len(&self) -> usize {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    pub fn contains(&self, key: u128) -> bool {
        self.generations.iter().any(|(_, set)| set.contains(&key))
    }

    /// Inserts a key at ingest time `now_ms`; returns false if it was already present.
    pub fn insert(&mut self, key: u128, now_ms: u64) -> bool {
        // Rotating first is safe: a generation dropped here is one `contains` would have
        // ignored a moment later anyway. Then the newest generation is probed once, by insert.
        self.rotate(now_ms);
        if self.generations.iter().skip(1).any(|(_, set)| set.contains(&key)) {
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
                if newest.remove(&key) {
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
            self.generations.push_front((now_ms, KeySet::with_capacity_and_hasher(capacity, Default::default())));
        }
        // A generation takes keys for `generation_ms` from its start, so once it is
        // `GENERATIONS * generation_ms` old each of its keys was held for the whole window.
        let horizon_ms = self.generation_ms.saturating_mul(GENERATIONS as u64);
        let expired = |start: u64| now_ms >= start.saturating_add(horizon_ms);
        while self.generations.len() > GENERATIONS || self.generations.back().is_some_and(|(start, _)| expired(*start)) {
            self.drop_oldest();
        }
    }

    fn drop_oldest(&mut self) {
        if let Some((_, set)) = self.generations.pop_back() {
            self.entries -= set.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
