//! Producer sequence state: the last batch sequence applied for each producer id, so a batch
//! resent after a lost ack is recognised and acknowledged without being applied twice.
//!
//! Bounded by `producers_max`: past it the producer that was idle longest is forgotten (a
//! forgotten producer's next retry would be applied again; the event-id dedup window still
//! drops its events). Persisted in the manifest at every checkpoint and rebuilt from WAL
//! records after it, so the state survives restarts.

use crate::manifest::ProducerEntry;
use lookback_common::Lsn;
use std::collections::HashMap;

#[derive(Debug, Default)]
pub struct Producers {
    states: HashMap<u64, ProducerEntry>,
    producers_max: usize,
}

impl Producers {
    pub fn new(producers_max: usize, entries: &[ProducerEntry]) -> Producers {
        let mut p = Producers { states: HashMap::new(), producers_max: producers_max.max(1) };
        for e in entries {
            p.record(e.producer_id, e.last_seq, e.last_lsn);
        }
        p
    }

    pub fn get(&self, producer_id: u64) -> Option<ProducerEntry> {
        self.states.get(&producer_id).copied()
    }

    /// Records that `seq` of `producer_id` was applied at `lsn`. Idempotent and monotonic: an
    /// older sequence never lowers the state (replay may revisit records).
    pub fn record(&mut self, producer_id: u64, seq: u64, lsn: Lsn) {
        if producer_id == 0 {
            return;
        }
        let e = self.states.entry(producer_id).or_insert(ProducerEntry { producer_id, last_seq: 0, last_lsn: 0 });
        if seq >= e.last_seq {
            e.last_seq = seq;
            e.last_lsn = e.last_lsn.max(lsn);
        }
        if self.states.len() > self.producers_max {
            self.evict_idlest();
        }
    }

    fn evict_idlest(&mut self) {
        let idlest = self.states.values().min_by_key(|e| e.last_lsn).map(|e| e.producer_id);
        if let Some(id) = idlest {
            self.states.remove(&id);
        }
    }

    pub fn entries(&self) -> Vec<ProducerEntry> {
        let mut v: Vec<_> = self.states.values().copied().collect();
        v.sort_by_key(|e| e.producer_id);
        v
    }

    pub fn len(&self) -> usize {
        self.states.len()
    }

    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_and_bounded() {
        let mut p = Producers::new(2, &[]);
        p.record(1, 5, 10);
        p.record(1, 3, 12);
        assert_eq!(p.get(1).unwrap().last_seq, 5);
        p.record(2, 1, 20);
        p.record(3, 1, 30);
        assert_eq!(p.len(), 2);
        assert!(p.get(1).is_none(), "idlest producer evicted");
        p.record(0, 9, 40);
        assert!(p.get(0).is_none(), "producer 0 is anonymous");
    }
}
