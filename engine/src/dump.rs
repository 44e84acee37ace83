//! `lookback dump`: prints a table's rows as JSON lines, read through the same snapshot path
//! queries use (segments, then memtables replayed from the WAL). Needs the server stopped: the
//! data directory is locked by a running server.

use anyhow::{Context, Result};
use lookback_common::{batch::format_uuid, Batch, Schema, Value};
use lookback_storage::{Db, DbOptions};
use std::io::Write;

pub fn dump(mut options: DbOptions, table: &str, out: &mut dyn Write) -> Result<u64> {
    options.flush_on_shutdown = false;
    options.flush_interval_ms = u64::MAX / 4;
    let db = Db::open(options).context("open data directory")?;
    let snapshot = db.snapshot(table)?;
    let mut rows = 0u64;
    for segment in &snapshot.segments {
        let batch = segment.read_all().with_context(|| format!("read segment {}", segment.path().display()))?;
        rows += write_batch(&snapshot.schema, &batch, out)?;
    }
    for batch in &snapshot.memtable {
        rows += write_batch(&snapshot.schema, batch, out)?;
    }
    out.flush()?;
    Ok(rows)
}

fn write_batch(schema: &Schema, batch: &Batch, out: &mut dyn Write) -> Result<u64> {
    for row in 0..batch.rows() {
        let mut obj = serde_json::Map::with_capacity(schema.columns.len());
        for (def, col) in schema.columns.iter().zip(batch.columns()) {
            obj.insert(def.name.clone(), json_value(col.value(row)));
        }
        serde_json::to_writer(&mut *out, &obj)?;
        out.write_all(b"\n")?;
    }
    Ok(batch.rows() as u64)
}

/// Timestamps are integer microseconds since the epoch (UTC); uuids canonical text.
fn json_value(v: Value) -> serde_json::Value {
    match v {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => b.into(),
        Value::Int64(i) | Value::Timestamp(i) => i.into(),
        Value::Float64(f) => serde_json::Number::from_f64(f).map_or(serde_json::Value::Null, Into::into),
        Value::Text(s) => s.into(),
        Value::Uuid(u) => format_uuid(&u).into(),
    }
}
