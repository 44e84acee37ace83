//! What the clients did, and the checker that compares it with what the server stored.
//!
//! Every event is recorded as *sent* before its batch goes out and as *acknowledged* when its
//! batch's ack arrives. The checker then demands, of the rows the server holds at the end:
//! every acknowledged event exactly once with identical content (lost, duplicated and changed
//! are failures), and no event that was never sent (phantom). Sent but unacknowledged events
//! may or may not be there. Reads over pgwire are checked as they happen: a count taken after
//! N acks must see at least N events and never fewer than an earlier count (visibility only of
//! durable data makes counts monotonic even across crashes).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use crate::events::JsonRow;

#[derive(Default)]
struct Inner {
    /// Event id → hash of the JSON `lookback dump` must print for it. Compact on purpose: a
    /// long run sends tens of millions of events.
    sent: HashMap<u128, u64>,
    acked: HashSet<u128>,
    reads: u64,
    read_errors: u64,
    stale_reads: Vec<String>,
    last_count: u64,
}

/// An event id (a UUID as dumped) as a number; anything else hashes (it will be a phantom).
fn id_key(id: &str) -> u128 {
    let hex: String = id.chars().filter(|c| *c != '-').collect();
    match (hex.len(), u128::from_str_radix(&hex, 16)) {
        (32, Ok(key)) => key,
        _ => u128::from(content_hash_str(id)) | (1u128 << 127),
    }
}

fn content_hash_str(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

/// Hash of a row's canonical JSON (object keys sorted: serde_json's map is ordered).
fn content_hash(row: &JsonRow) -> u64 {
    content_hash_str(&serde_json::Value::Object(row.clone()).to_string())
}

/// Shared by every client task of a run.
#[derive(Default)]
pub struct History {
    inner: Mutex<Inner>,
}

impl History {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn sent(&self, rows: impl IntoIterator<Item = (String, JsonRow)>) {
        let rows: Vec<(u128, u64)> = rows.into_iter().map(|(id, row)| (id_key(&id), content_hash(&row))).collect();
        self.lock().sent.extend(rows);
    }

    pub fn acked(&self, ids: impl IntoIterator<Item = String>) {
        let ids: Vec<u128> = ids.into_iter().map(|id| id_key(&id)).collect();
        self.lock().acked.extend(ids);
    }

    pub fn acked_count(&self) -> u64 {
        self.lock().acked.len() as u64
    }

    pub fn sent_count(&self) -> u64 {
        self.lock().sent.len() as u64
    }

    /// A count read over pgwire: `acked_before` acks had arrived when the query was sent,
    /// `sent_after` events had been sent when the answer came.
    pub fn read(&self, acked_before: u64, count: u64, sent_after: u64) {
        let mut inner = self.lock();
        inner.reads += 1;
        if count < acked_before {
            let problem = format!("count {count} after {acked_before} acknowledged events (stale read)");
            inner.stale_reads.push(problem);
        }
        if count < inner.last_count {
            let problem = format!("count {count} after an earlier count of {} (went backwards)", inner.last_count);
            inner.stale_reads.push(problem);
        }
        if count > sent_after {
            inner.stale_reads.push(format!("count {count} with only {sent_after} events sent (phantom rows)"));
        }
        inner.last_count = inner.last_count.max(count);
    }

    pub fn read_error(&self) {
        self.lock().read_errors += 1;
    }

    /// Checks the stored rows against the history.
    pub fn check(&self, stored: &[JsonRow]) -> Verdict {
        let mut checker = self.checker();
        stored.iter().for_each(|row| checker.row(row));
        checker.finish()
    }

    /// A checker fed stored rows one at a time (a dump of millions of rows is not held).
    pub fn checker(&self) -> Checker<'_> {
        Checker { history: self, seen: HashMap::new(), verdict: Verdict::default() }
    }
}

pub struct Checker<'a> {
    history: &'a History,
    seen: HashMap<u128, u32>,
    verdict: Verdict,
}

impl Checker<'_> {
    pub fn row(&mut self, row: &JsonRow) {
        let verdict = &mut self.verdict;
        verdict.stored += 1;
        let Some(id) = row.get("event_id").and_then(|v| v.as_str()) else {
            verdict.phantom += 1;
            note(&mut verdict.problems, format!("stored row without an event_id: {row:?}"));
            return;
        };
        let key = id_key(id);
        let seen = self.seen.entry(key).or_default();
        *seen += 1;
        if *seen > 1 {
            verdict.duplicated += 1;
            note(&mut verdict.problems, format!("event {id} stored {seen} times"));
        }
        match self.history.lock().sent.get(&key) {
            None => {
                verdict.phantom += 1;
                note(&mut verdict.problems, format!("phantom event {id} (never sent)"));
            }
            Some(hash) if *hash != content_hash(row) => {
                verdict.changed += 1;
                note(&mut verdict.problems, format!("event {id} stored as {row:?}, which differs from what was sent"));
            }
            Some(_) => {}
        }
    }

    pub fn finish(mut self) -> Verdict {
        let inner = self.history.lock();
        let verdict = &mut self.verdict;
        verdict.acked = inner.acked.len() as u64;
        verdict.sent = inner.sent.len() as u64;
        for id in &inner.acked {
            if !self.seen.contains_key(id) {
                verdict.lost += 1;
                note(&mut verdict.problems, format!("acknowledged event {id:032x} lost"));
            }
        }
        verdict.unacked_stored = self.seen.keys().filter(|id| !inner.acked.contains(*id) && inner.sent.contains_key(*id)).count() as u64;
        verdict.reads = inner.reads;
        verdict.read_errors = inner.read_errors;
        verdict.stale_reads = inner.stale_reads.len() as u64;
        for problem in inner.stale_reads.iter().take(PROBLEMS_SHOWN_MAX) {
            verdict.problems.push(problem.clone());
        }
        drop(inner);
        self.verdict
    }
}

/// Problems of one kind listed in a verdict (the counts are complete).
const PROBLEMS_SHOWN_MAX: usize = 5;

fn note(problems: &mut Vec<String>, problem: String) {
    if problems.len() < 4 * PROBLEMS_SHOWN_MAX {
        problems.push(problem);
    }
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Verdict {
    pub sent: u64,
    pub acked: u64,
    pub stored: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub changed: u64,
    pub phantom: u64,
    /// Sent, never acknowledged, stored anyway (allowed: the ack was lost with the crash).
    pub unacked_stored: u64,
    pub reads: u64,
    pub read_errors: u64,
    pub stale_reads: u64,
    pub problems: Vec<String>,
}

impl Verdict {
    /// Nothing acknowledged lost, nothing duplicated, changed or invented, no stale read.
    pub fn ok(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.changed == 0
            && self.phantom == 0
            && self.stale_reads == 0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::events::{event_id, expected_json, random_event};
    use rand::SeedableRng;

    #[test]
    fn checker_sees_every_kind_of_failure() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
        let rows: Vec<_> = (0..5).map(|_| random_event(&mut rng, 1)).collect();
        let history = History::default();
        history.sent(rows.iter().map(|r| (event_id(r), expected_json(r))));
        history.acked(rows[..4].iter().map(|r| event_id(r)));
        let good: Vec<_> = rows[..4].iter().map(|r| expected_json(r)).collect();
        assert!(history.check(&good).ok());
        let mut bad = good.clone();
        bad.remove(0); // lost
        bad.push(expected_json(&rows[1])); // duplicated
        bad[2].insert("app_id".into(), "other".into()); // changed
        bad.push(expected_json(&random_event(&mut rng, 2))); // phantom
        bad.push(expected_json(&rows[4])); // unacknowledged but stored: allowed
        let verdict = history.check(&bad);
        assert_eq!(
            (
                verdict.lost,
                verdict.duplicated,
                verdict.changed,
                verdict.phantom,
                verdict.unacked_stored
            ),
            (1, 1, 1, 1, 1),
            "{verdict:?}"
        );
        assert!(!verdict.ok());
        history.read(4, 3, 5);
        history.read(4, 4, 5);
        history.read(4, 4, 3);
        history.read(0, 2, 5);
        assert_eq!(
            history.check(&good).stale_reads,
            3,
            "stale, phantom and backwards counts"
        );
    }
}
