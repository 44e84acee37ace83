//! Queries through `LookbackTable` over a real `Db`: memtable and segment rows each seen once,
//! projections, limits, and zone-map pruning that skips blocks without changing answers.

use datafusion::arrow::array::{Array, Int64Array};
use datafusion::prelude::SessionContext;
mod common;

use common::{admit_events, event_id, BASE_US};
use lookback_common::{Schema, Value};
use lookback_query::scan::LookbackTable;
use lookback_storage::segment::BlockColumn;
use lookback_storage::Db;
use std::sync::atomic::Ordering;
use std::sync::Arc;

const BLOCK_ROWS: usize = 64;

fn open(dir: &std::path::Path) -> Arc<Db> {
    common::open(dir, BLOCK_ROWS)
}

/// Rows `from..to`: app `app`, one device, ts = BASE_US + i, revenue i, all installs.
fn admit(db: &Db, seq: u64, app: &str, from: i64, to: i64) {
    admit_kinds(db, seq, app, from, to, |_| "install")
}

/// [`admit`] with event_type `kind(i)`.
fn admit_kinds(db: &Db, seq: u64, app: &str, from: i64, to: i64, kind: fn(i64) -> &'static str) {
    admit_events(db, seq, from..to, |i, column| match column {
        "event_id" => event_id(i, seq),
        "app_id" => Value::Text(app.into()),
        "ts" => Value::Timestamp(BASE_US + i),
        "event_type" => Value::Text(kind(i).into()),
        "device_id" => Value::Text("device-1".into()),
        "revenue" => Value::Float64(i as f64),
        _ => Value::Null,
    })
}

async fn count(ctx: &SessionContext, sql: &str) -> i64 {
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    let column = batches[0].column(0).as_any().downcast_ref::<Int64Array>().unwrap().clone();
    assert_eq!(column.len(), 1, "{sql}");
    column.value(0)
}

/// Rare purchases (rows 7, 107, ...), installs in the first half and opens in the second.
fn kind(i: i64) -> &'static str {
    match i {
        i if i % 100 == 7 => "purchase",
        i if i < 320 => "install",
        _ => "open",
    }
}

#[tokio::test]
async fn event_type_filters_use_the_bitmaps_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    admit_kinds(&db, 1, "app-a", 0, 640, kind);
    db.flush_all().unwrap();
    admit_kinds(&db, 2, "app-a", 640, 720, kind); // stays in the memtable
    let table = Arc::new(LookbackTable::new(db.clone(), "events", db.schema("events").unwrap()));
    let stats = table.stats().clone();
    let ctx = SessionContext::new();
    ctx.register_table("events", table).unwrap();
    let expected = |f: &dyn Fn(&str) -> bool| (0..720).filter(|&i| f(kind(i))).count() as i64;

    let before = stats.blocks_pruned.load(Ordering::Relaxed);
    let purchases = count(&ctx, "SELECT count(*) FROM events WHERE event_type = 'purchase'").await;
    assert_eq!(purchases, expected(&|k| k == "purchase"));
    // Purchases are in 7 of the 10 blocks (rows 7, 107, ..., 607; one per 100 rows).
    assert_eq!(stats.blocks_pruned.load(Ordering::Relaxed) - before, 3, "blocks without a purchase are skipped");

    let sql = "SELECT count(*) FROM events WHERE event_type IN ('install', 'purchase') AND revenue >= 100";
    assert_eq!(count(&ctx, sql).await, (100..720).filter(|&i| kind(i) != "open").count() as i64);
    assert_eq!(count(&ctx, "SELECT count(*) FROM events WHERE 'open' = event_type").await, expected(&|k| k == "open"));
    assert_eq!(count(&ctx, "SELECT count(*) FROM events WHERE event_type = 'nothing'").await, 0);
    // The filter column itself still reads back when selected.
    let batches = ctx.sql("SELECT DISTINCT event_type FROM events WHERE event_type = 'purchase'").await.unwrap().collect().await.unwrap();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
    // Exact pushdown: the plan has no filter left above the scan.
    let plan = ctx.sql("EXPLAIN SELECT count(*) FROM events WHERE event_type = 'purchase'").await.unwrap().collect().await.unwrap();
    let text = datafusion::arrow::util::pretty::pretty_format_batches(&plan).unwrap().to_string();
    assert!(!text.contains("FilterExec"), "{text}");
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

async fn inserted(ctx: &SessionContext, sql: &str) -> u64 {
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    let column = batches[0].column(0).as_any().downcast_ref::<datafusion::arrow::array::UInt64Array>().unwrap().clone();
    column.value(0)
}

#[tokio::test]
async fn insert_goes_through_the_write_path_with_dedup() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let ctx = lookback_query::session_context(&db, "lookback").unwrap();
    let sql = "INSERT INTO events (event_id, app_id, ts, event_type, revenue) VALUES \
               ('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'app-x', '2026-11-21T10:00:00Z', 'install', NULL), \
               ('A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A12', 'app-x', '2026-11-21T11:00:00+01:00', 'purchase', 9.5)";
    assert_eq!(inserted(&ctx, sql).await, 2);
    // The same events again: the dedup window drops them, as for ingested events.
    assert_eq!(inserted(&ctx, sql).await, 0);
    assert_eq!(count(&ctx, "SELECT count(*) FROM events").await, 2);
    let batches = ctx
        .sql("SELECT event_id, CAST(ts AS BIGINT) FROM events WHERE event_type = 'purchase'")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let id = batches[0].column(0).as_any().downcast_ref::<datafusion::arrow::array::StringArray>().unwrap();
    assert_eq!(id.value(0), "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12");
    let ts = batches[0].column(1).as_any().downcast_ref::<Int64Array>().unwrap();
    assert_eq!(ts.value(0), 1_795_255_200_000_000, "11:00+01:00 is 10:00 UTC");

    // The rows are in the WAL: they survive a restart.
    drop(ctx);
    let db = Arc::try_unwrap(db).ok().expect("no other handle");
    drop(db);
    let db = open(dir.path());
    let ctx = lookback_query::session_context(&db, "lookback").unwrap();
    assert_eq!(count(&ctx, "SELECT count(*) FROM events").await, 2);

    // Bad input is an error naming the column, and stores nothing.
    let bad = "INSERT INTO events (event_id, app_id, ts, event_type) VALUES ('not-a-uuid', 'a', '2026-11-21T10:00:00Z', 'x')";
    let error = ctx.sql(bad).await.unwrap().collect().await.expect_err("bad uuid");
    assert!(error.to_string().contains("column event_id: invalid input syntax for type uuid"), "{error}");
    let missing = "INSERT INTO events (event_id, ts, event_type) VALUES ('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a13', '2026-11-21T10:00:00Z', 'x')";
    assert!(ctx.sql(missing).await.unwrap().collect().await.is_err(), "app_id is NOT NULL");
    assert_eq!(count(&ctx, "SELECT count(*) FROM events").await, 2);
}

/// Text columns stored as segment-dictionary codes reach Arrow as views over the dictionary,
/// with the same values (short, long, null) as the decoded column.
#[test]
fn coded_text_reads_as_the_decoded_values() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    admit_events(&db, 1, 0..1_000, |i, column| match column {
        "event_id" => event_id(i, 0),
        "app_id" => Value::Text(format!("app-{}", i % 3)),
        "ts" => Value::Timestamp(BASE_US + i),
        "event_type" => Value::Text("install".into()),
        // Entries longer than a view holds inline, and nulls.
        "device_id" => Value::Text(format!("device-with-a-long-name-{}", i % 7)),
        "channel" if i % 5 == 0 => Value::Null,
        "channel" => Value::Text(["ads", "organic", "a-channel-name-over-12"][(i % 3) as usize].into()),
        _ => Value::Null,
    });
    db.flush_all().unwrap();
    let snapshot = db.snapshot("events").unwrap();
    assert!(!snapshot.segments.is_empty());
    let schema = Schema::events();
    let arrow = lookback_query::arrow::arrow_schema(&schema);
    let columns: Vec<usize> = (0..schema.len()).collect();
    let mut coded = 0;
    for segment in &snapshot.segments {
        for block in 0..segment.block_count() {
            let rows = segment.block_rows(block);
            let read = segment.read_block_coded(block, &columns).unwrap();
            let again = || segment.read_block_coded(block, &columns).unwrap();
            coded += read.iter().filter(|c| matches!(c, BlockColumn::Codes { .. })).count();
            let decoded = lookback_query::arrow::record_batch(&arrow, &segment.read_block(block, &columns).unwrap(), rows).unwrap();
            // Views made per row, and gathered from the dictionary's entry views.
            let per_row = lookback_query::arrow::block_record_batch(&arrow, &mut again(), rows, |_, _| None).unwrap();
            assert_eq!(per_row, decoded, "block {block}");
            let cache: Vec<Option<Vec<u128>>> = read
                .iter()
                .map(|c| match c {
                    BlockColumn::Codes { dictionary, .. } => Some(lookback_query::arrow::dictionary_views(dictionary)),
                    BlockColumn::Values(_) => None,
                })
                .collect();
            let gathered = lookback_query::arrow::block_record_batch(&arrow, &mut again(), rows, |i, _| cache[i].as_deref()).unwrap();
            assert_eq!(gathered, decoded, "block {block}");
        }
    }
    assert!(coded > 0, "some text column is stored as segment codes");
}
