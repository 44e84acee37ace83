//! The memtable's sorted runs for the touchpoint join, kept across queries.
//!
//! Why: the join merges device-sorted runs, and memtable batches arrive in ingest order. Sorting
//! the whole memtable for every query made attribution under ingest cost a sort of up to a
//! memtable's rows per query (p99 of 38 s at half the ingest rate on 2 cores). Here a query
//! reuses the runs an earlier query sorted (identified by the exact batches they hold) and sorts
//! only the batches that arrived since. Runs are combined like a binary counter: a new run
//! absorbs the runs before it that are not larger, so a memtable of n rows is at most about
//! log2(n / batch rows) runs and every row is sorted O(log n) times over the memtable's life.
//!
//! The cache holds runs for the latest memtable snapshot of each list of conversion types a
//! query used, at most [`CACHED_SPECS_MAX`] of them; runs of batches that were flushed
//! are dropped at the next query of their spec. Batches are identified by `Weak` pointers, which
//! do not keep their data alive. A memtable above [`CACHED_ROWS_MAX`] rows is sorted per query
//! and not kept (bounded memory).

use crate::touchpoint_join::{memtable_run, Chunk, Conversions, JoinSpec};
use datafusion::error::{DataFusionError, Result};
use lookback_common::Batch;
use lookback_storage::TableSnapshot;
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// Conversion type lists whose runs are kept at most.
pub const CACHED_SPECS_MAX: usize = 8;
/// Memtable rows above which runs are not kept (their columns are a copy of the memtable's).
pub const CACHED_ROWS_MAX: usize = 16 << 20;

/// What a run's chunk depends on. Runs hold every column a join can read, whatever the query
/// needs, so queries that differ only in their projection share them.
#[derive(Clone, PartialEq, Eq, Debug)]
struct SpecKey {
    table: String,
    conversions: Vec<String>,
}

/// A sorted run of consecutive memtable batches (`chunk`: the sorted rows).
#[derive(Clone)]
struct CachedRun<T> {
    batches: Vec<Weak<Batch>>,
    rows: usize,
    chunk: T,
}

impl<T> CachedRun<T> {
    /// Whether this run holds exactly the first batches of `rest`.
    fn prefix_of(&self, rest: &[Arc<Batch>]) -> bool {
        self.batches.len() <= rest.len() && self.batches.iter().zip(rest).all(|(w, b)| std::ptr::eq(w.as_ptr(), Arc::as_ptr(b)))
    }
}

type Cache = Mutex<Vec<(SpecKey, Vec<CachedRun<Arc<Chunk<'static>>>>)>>;

fn cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// The memtable of `snapshot` as sorted chunks (none when it is empty).
pub fn sorted_runs(snapshot: &TableSnapshot, spec: &JoinSpec) -> Result<Vec<Arc<Chunk<'static>>>> {
    let batches = &snapshot.memtable;
    if batches.is_empty() {
        return Ok(Vec::new());
    }
    let key = SpecKey { table: snapshot.schema.name.clone(), conversions: spec.conversions.0.clone() };
    let every_column = JoinSpec {
        conversions: Conversions(spec.conversions.0.clone()),
        fingerprints: true,
        channel: true,
        campaign: true,
        revenue: true,
        app: None,
        ..*spec
    };
    let poisoned = || DataFusionError::Internal("attribution: memtable run cache lock poisoned".into());
    let cached: Vec<CachedRun<Arc<Chunk<'static>>>> = {
        let cache = cache().lock().map_err(|_| poisoned())?;
        cache.iter().find(|(k, _)| *k == key).map(|(_, runs)| runs.clone()).unwrap_or_default()
    };
    let runs = extend(&cached, batches, |start| Ok(Arc::new(memtable_run(&snapshot.schema, &batches[start..], &every_column)?)))?;
    let total: usize = runs.iter().map(|r| r.rows).sum();
    let mut cache = cache().lock().map_err(|_| poisoned())?;
    cache.retain(|(k, _)| *k != key);
    if total <= CACHED_ROWS_MAX {
        if cache.len() >= CACHED_SPECS_MAX {
            cache.remove(0);
        }
        cache.push((key, runs.clone()));
    }
    Ok(runs.into_iter().map(|r| r.chunk).collect())
}

/// The runs covering `batches`: the longest chain of `cached` runs holding its first batches,
/// then one new run (`sort(start)` sorts `batches[start..]`) of the rest, absorbing the runs
/// before it that are not larger than it.
fn extend<T: Clone>(cached: &[CachedRun<T>], batches: &[Arc<Batch>], sort: impl FnOnce(usize) -> Result<T>) -> Result<Vec<CachedRun<T>>> {
    let mut runs: Vec<CachedRun<T>> = Vec::new();
    let mut at = 0;
    while let Some(run) = cached.iter().find(|r| !r.batches.is_empty() && r.prefix_of(&batches[at..])) {
        at += run.batches.len();
        runs.push(run.clone());
    }
    if at == batches.len() {
        return Ok(runs);
    }
    let mut start = at;
    let mut rows: usize = batches[at..].iter().map(|b| b.rows()).sum();
    while let Some(last) = runs.last().filter(|last| last.rows <= rows) {
        rows += last.rows;
        start -= last.batches.len();
        runs.pop();
    }
    let chunk = sort(start)?;
    runs.push(CachedRun { batches: batches[start..].iter().map(Arc::downgrade).collect(), rows, chunk });
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lookback_common::Schema;

    fn batch(rows: usize) -> Arc<Batch> {
        let schema = Schema::events();
        let mut b = lookback_common::BatchBuilder::new(&schema, rows);
        for i in 0..rows {
            for (c, def) in schema.columns.iter().enumerate() {
                let value = match def.ty {
                    lookback_common::ColumnType::Uuid => lookback_common::Value::Uuid([i as u8; 16]),
                    lookback_common::ColumnType::Timestamp => lookback_common::Value::Timestamp(i as i64),
                    lookback_common::ColumnType::Float64 => lookback_common::Value::Float64(1.0),
                    _ => lookback_common::Value::Text(format!("v{c}")),
                };
                b.push(c, &value).expect("value fits");
            }
        }
        Arc::new(b.finish().expect("batch"))
    }

    /// Runs as (first batch, batch count, rows), with the sort calls made (their start).
    fn step(cached: &[CachedRun<usize>], batches: &[Arc<Batch>], sorted: &mut Vec<usize>) -> Vec<CachedRun<usize>> {
        extend(cached, batches, |start| {
            sorted.push(start);
            Ok(start)
        })
        .expect("extend")
    }

    fn shape(runs: &[CachedRun<usize>]) -> Vec<(usize, usize, usize)> {
        runs.iter().map(|r| (r.chunk, r.batches.len(), r.rows)).collect()
    }

    #[test]
    fn runs_are_reused_and_combined_like_a_binary_counter() {
        let all: Vec<Arc<Batch>> = (0..8).map(|_| batch(10)).collect();
        let mut sorted = Vec::new();
        let mut runs = step(&[], &all[..1], &mut sorted);
        assert_eq!(shape(&runs), [(0, 1, 10)]);
        // The same memtable again: nothing sorted.
        runs = step(&runs, &all[..1], &mut sorted);
        assert_eq!(sorted, [0]);
        // One more batch: it absorbs the run of equal size.
        runs = step(&runs, &all[..2], &mut sorted);
        assert_eq!(shape(&runs), [(0, 2, 20)]);
        runs = step(&runs, &all[..3], &mut sorted);
        assert_eq!(shape(&runs), [(0, 2, 20), (2, 1, 10)]);
        runs = step(&runs, &all[..4], &mut sorted);
        assert_eq!(shape(&runs), [(0, 4, 40)]);
        // Three batches at once: 30 rows absorb nothing larger.
        runs = step(&runs, &all[..7], &mut sorted);
        assert_eq!(shape(&runs), [(0, 4, 40), (4, 3, 30)]);
        assert_eq!(sorted, [0, 0, 2, 0, 4]);
        // A flush: the memtable starts over with batches the runs do not hold.
        let fresh: Vec<Arc<Batch>> = (0..2).map(|_| batch(5)).collect();
        runs = step(&runs, &fresh, &mut sorted);
        assert_eq!(shape(&runs), [(0, 2, 10)]);
        // A memtable that lost its first batch (frozen and flushed) reuses nothing of it.
        runs = step(&runs, &fresh[1..], &mut sorted);
        assert_eq!(shape(&runs), [(0, 1, 5)]);
    }
}
