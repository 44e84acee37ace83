//! Queries through `LookbackTable` over a real `Db`: memtable and segment rows each seen once,
//! projections, limits, and zone-map pruning that skips blocks without changing answers.

use datafusion::arrow::array::{Array, Int64Array};
use datafusion::prelude::SessionContext;
use lookback_common::{BatchBuilder, Schema, Value};
use lookback_query::scan::LookbackTable;
use lookback_storage::{Db, DbOptions};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};

const BASE_US: i64 = 1_700_000_000_000_000; // 2023-11-14T22:13:20Z
const BLOCK_ROWS: usize = 64;

fn open(dir: &std::path::Path) -> Arc<Db> {
    let mut o = DbOptions::new(dir);
    o.flush_interval_ms = 3_600_000;
    o.flush_segment.block_rows = BLOCK_ROWS;
    Arc::new(Db::open(o).unwrap())
}

/// Rows `from..to`: app `app`, one device, ts = BASE_US + i, revenue i.
fn admit(db: &Db, seq: u64, app: &str, from: i64, to: i64) {
    let schema = Schema::events();
    let mut b = BatchBuilder::new(&schema, (to - from) as usize);
    for i in from..to {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&i.to_le_bytes());
        id[8..].copy_from_slice(&seq.to_le_bytes());
        let row: Vec<Value> = schema
            .columns
            .iter()
            .map(|c| match c.name.as_str() {
                "event_id" => Value::Uuid(id),
                "app_id" => Value::Text(app.into()),
                "ts" => Value::Timestamp(BASE_US + i),
                "event_type" => Value::Text("install".into()),
                "device_id" => Value::Text("device-1".into()),
                "revenue" => Value::Float64(i as f64),
                _ => Value::Null,
            })
            .collect();
        b.push_row(&row).unwrap();
    }
    let (tx, rx) = mpsc::channel();
    db.admit("events", 1, seq, b.finish().unwrap(), Box::new(move |r| drop(tx.send(r)))).unwrap();
    rx.recv().unwrap().unwrap();
}

async fn count(ctx: &SessionContext, sql: &str) -> i64 {
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    let column = batches[0].column(0).as_any().downcast_ref::<Int64Array>().unwrap().clone();
    assert_eq!(column.len(), 1, "{sql}");
    column.value(0)
}

#[tokio::test]
async fn filters_prune_blocks_and_answers_stay_exact() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    admit(&db, 1, "app-a", 0, 640);
    db.flush_all().unwrap();
    admit(&db, 2, "app-a", 640, 650); // stays in the memtable
    let table = Arc::new(LookbackTable::new(db.clone(), "events", db.schema("events").unwrap()));
    let stats = table.stats().clone();
    let ctx = SessionContext::new();
    ctx.register_table("events", table).unwrap();

    assert_eq!(count(&ctx, "SELECT count(*) FROM events").await, 650);
    let (planned, pruned) = (stats.blocks_planned.load(Ordering::Relaxed), stats.blocks_pruned.load(Ordering::Relaxed));
    assert_eq!((planned, pruned), (10, 0), "640 rows in {BLOCK_ROWS}-row blocks, nothing to prune");

    // ts >= row 600: blocks 0..=8 end before it, block 9 and the memtable hold 40 + 10 rows.
    let from = "2023-11-14T22:13:20.000600Z";
    assert_eq!(count(&ctx, &format!("SELECT count(*) FROM events WHERE ts >= '{from}'")).await, 50);
    let pruned_now = stats.blocks_pruned.load(Ordering::Relaxed) - pruned;
    assert_eq!(pruned_now, 9, "blocks wholly before the bound are skipped");

    // An equality on text outside every block prunes all; inside, none.
    assert_eq!(count(&ctx, "SELECT count(*) FROM events WHERE app_id = 'app-b'").await, 0);
    assert_eq!(count(&ctx, "SELECT count(*) FROM events WHERE app_id = 'app-a' AND revenue BETWEEN 100 AND 199").await, 100);
    assert_eq!(count(&ctx, "SELECT count(*) FROM events WHERE revenue > 600 OR revenue < 5").await, 49 + 5);

    // Projection and limit.
    let batches = ctx.sql("SELECT revenue FROM events ORDER BY ts DESC LIMIT 3").await.unwrap().collect().await.unwrap();
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!((rows, batches[0].num_columns()), (3, 1));
    let limited = ctx.sql("SELECT event_id FROM events LIMIT 5").await.unwrap().collect().await.unwrap();
    assert_eq!(limited.iter().map(|b| b.num_rows()).sum::<usize>(), 5);
}
