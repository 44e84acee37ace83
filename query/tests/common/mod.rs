//! What the query tests share: a `Db` that flushes only when told, and admitting generated
//! `events` rows through the write path.

use lookback_common::{BatchBuilder, Schema, Value};
use lookback_storage::{Db, DbOptions};
use std::sync::{mpsc, Arc};

/// 2023-11-14T22:13:20Z, in microseconds.
pub const BASE_US: i64 = 1_700_000_000_000_000;

/// A `Db` in `dir` with `block_rows`-row segment blocks that flushes only when told to.
pub fn open(dir: &std::path::Path, block_rows: usize) -> Arc<Db> {
    let mut o = DbOptions::new(dir);
    o.flush_interval_ms = 3_600_000;
    o.flush_segment.block_rows = block_rows;
    o.compaction_block_rows = block_rows;
    Arc::new(Db::open(o).unwrap())
}

/// An event id unique per (`i`, `seq`).
pub fn event_id(i: i64, seq: u64) -> Value {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&i.to_le_bytes());
    id[8..].copy_from_slice(&seq.to_le_bytes());
    Value::Uuid(id)
}

/// Admits `events` rows `rows` as producer 1's batch `seq`, waiting until durable;
/// `value(i, column)` gives row `i`'s value of each column.
pub fn admit_events(db: &Db, seq: u64, rows: std::ops::Range<i64>, value: impl Fn(i64, &str) -> Value) {
    let schema = Schema::events();
    let mut b = BatchBuilder::new(&schema, rows.clone().count());
    for i in rows {
        let row: Vec<Value> = schema.columns.iter().map(|c| value(i, c.name.as_str())).collect();
        b.push_row(&row).unwrap();
    }
    let (tx, rx) = mpsc::channel();
    db.admit("events", 1, seq, b.finish().unwrap(), Box::new(move |r| drop(tx.send(r)))).unwrap();
    rx.recv().unwrap().unwrap();
}
