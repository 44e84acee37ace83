//! Tables created and dropped at run time: durable across restarts, with their WAL records
//! replayed into the right table, and the records of a dropped table (or of an older table of
//! the same name) skipped, whether or not they were flushed first.

use lookback_common::{Batch, BatchBuilder, ColumnDef, ColumnType, Schema, Value};
use lookback_storage::{Db, DbError, DbOptions};
use std::sync::mpsc;
use std::time::Duration;

fn options(dir: &std::path::Path) -> DbOptions {
    let mut o = DbOptions::new(dir);
    o.flush_interval_ms = 3_600_000;
    o.wal_segment_bytes = 256 << 10;
    // Closing without a final flush leaves unflushed rows only in the WAL, as a crash would.
    o.flush_on_shutdown = false;
    o
}

fn costs_schema() -> Schema {
    let columns = vec![
        ColumnDef::new("campaign", ColumnType::Text, false),
        ColumnDef::new("day", ColumnType::Timestamp, true),
        ColumnDef::new("cost", ColumnType::Float64, true),
    ];
    Schema::new("campaign_costs", columns, Vec::new(), Vec::new()).unwrap()
}

fn flags_schema() -> Schema {
    let columns = vec![ColumnDef::new("flag", ColumnType::Bool, true), ColumnDef::new("n", ColumnType::Int64, true)];
    Schema::new("campaign_costs", columns, Vec::new(), Vec::new()).unwrap()
}

fn batch(schema: &Schema, rows: &[Vec<Value>]) -> Batch {
    let mut b = BatchBuilder::new(schema, rows.len());
    for row in rows {
        b.push_row(row).unwrap();
    }
    b.finish().unwrap()
}

/// Admits as the anonymous producer (as SQL does) and waits until durable.
fn write(db: &Db, table: &str, rows: Batch) {
    let (tx, rx) = mpsc::channel();
    db.admit(table, 0, 0, rows, Box::new(move |r| tx.send(r).unwrap())).unwrap();
    rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap();
}

fn rows(db: &Db, table: &str) -> Vec<Vec<Value>> {
    let snap = db.snapshot(table).unwrap();
    let mut out: Vec<Vec<Value>> = snap.memtable.iter().flat_map(|b| (0..b.rows()).map(|i| b.row(i)).collect::<Vec<_>>()).collect();
    for s in &snap.segments {
        let b = s.read_all().unwrap();
        out.extend((0..b.rows()).map(|i| b.row(i)));
    }
    out.sort_by_key(|r| format!("{r:?}"));
    out
}

fn cost_row(campaign: &str, cost: f64) -> Vec<Value> {
    vec![Value::Text(campaign.into()), Value::Timestamp(1_700_000_000_000_000), Value::Float64(cost)]
}

#[test]
fn created_tables_and_their_rows_survive_restarts() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Db::open(options(dir.path())).unwrap();
        db.create_table(costs_schema()).unwrap();
        assert!(matches!(db.create_table(costs_schema()), Err(DbError::TableExists(_))));
        assert_eq!(db.table_names(), vec!["campaign_costs".to_string(), "events".to_string()]);
        write(&db, "campaign_costs", batch(&costs_schema(), &[cost_row("a", 1.5)]));
        db.flush_all().unwrap();
        write(&db, "campaign_costs", batch(&costs_schema(), &[cost_row("b", 2.5)]));
        // The second row is only in the WAL.
    }
    let db = Db::open(options(dir.path())).unwrap();
    assert_eq!(db.schema("campaign_costs").unwrap().as_ref(), &costs_schema());
    assert_eq!(rows(&db, "campaign_costs"), vec![cost_row("a", 1.5), cost_row("b", 2.5)]);
}

#[test]
fn dropped_tables_stay_dropped_and_their_wal_records_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Db::open(options(dir.path())).unwrap();
        db.create_table(costs_schema()).unwrap();
        write(&db, "campaign_costs", batch(&costs_schema(), &[cost_row("flushed", 1.0)]));
        db.flush_all().unwrap();
        write(&db, "campaign_costs", batch(&costs_schema(), &[cost_row("in the wal", 2.0)]));
        // Keep the checkpoint from passing the records above: an events row stays in memory.
        write(&db, "events", {
            let mut b = BatchBuilder::new(&Schema::events(), 1);
            let mut row = vec![Value::Null; Schema::events().columns.len()];
            row[0] = Value::Uuid([7; 16]);
            row[1] = Value::Text("app".into());
            row[2] = Value::Timestamp(1);
            row[3] = Value::Text("install".into());
            b.push_row(&row).unwrap();
            b.finish().unwrap()
        });
        db.drop_table("campaign_costs").unwrap();
        assert!(matches!(db.snapshot("campaign_costs"), Err(DbError::UnknownTable(_))));
        assert!(matches!(db.drop_table("campaign_costs"), Err(DbError::UnknownTable(_))));
        assert!(matches!(db.drop_table("events"), Err(DbError::Refused(_))));
        // The same name again, another schema: only its own rows belong to it.
        db.create_table(flags_schema()).unwrap();
        write(&db, "campaign_costs", batch(&flags_schema(), &[vec![Value::Bool(true), Value::Int64(3)]]));
    }
    let segment_files = || std::fs::read_dir(dir.path().join("segments")).unwrap().count();
    {
        let db = Db::open(options(dir.path())).unwrap();
        assert_eq!(db.schema("campaign_costs").unwrap().as_ref(), &flags_schema());
        assert_eq!(rows(&db, "campaign_costs"), vec![vec![Value::Bool(true), Value::Int64(3)]]);
        assert_eq!(rows(&db, "events").len(), 1);
        db.drop_table("campaign_costs").unwrap();
        db.flush_all().unwrap();
    }
    // Dropped for good, and its segment files are gone (only the events segment is left).
    let db = Db::open(options(dir.path())).unwrap();
    assert_eq!(db.table_names(), vec!["events".to_string()]);
    assert_eq!(segment_files(), 1);
}

fn segment_paths(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut paths: Vec<_> = std::fs::read_dir(dir.join("segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    paths.sort();
    paths
}

fn flip_byte(path: &std::path::Path, offset: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset] ^= 0x10;
    std::fs::write(path, bytes).unwrap();
}

/// A segment whose footer (its table of contents) fails its checksum used to stop start-up, and
/// with it every table. Now only its table is unreadable (XX001, naming the file), the rest of
/// the server works, its table still takes writes, flushes and compacts around it, and with the
/// file restored every row is back.
#[test]
fn a_damaged_segment_quarantines_its_table_not_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let schema = costs_schema();
    {
        let db = Db::open(options(dir.path())).unwrap();
        db.create_table(schema.clone()).unwrap();
        write(&db, "campaign_costs", batch(&schema, &[cost_row("a", 1.0), cost_row("b", 2.0)]));
        db.flush_all().unwrap();
    }
    let [damaged] = segment_paths(dir.path()).try_into().unwrap();
    let footer_byte = std::fs::metadata(&damaged).unwrap().len() as usize - 12;
    flip_byte(&damaged, footer_byte);
    {
        let db = Db::open(options(dir.path())).unwrap();
        match db.snapshot("campaign_costs") {
            Err(DbError::Corrupt(message)) => {
                let name = damaged.file_name().unwrap().to_string_lossy().into_owned();
                assert!(message.contains(&name), "the error names the file: {message}");
            }
            Err(other) => panic!("expected a corruption error, got {other}"),
            Ok(_) => panic!("a table with a damaged segment must not answer without its rows"),
        }
        assert_eq!(db.gauges().damaged_segments, 1);
        assert_eq!(db.snapshot("events").unwrap().rows(), 0, "other tables are served");
        write(&db, "campaign_costs", batch(&schema, &[cost_row("c", 3.0)]));
        db.compact_all().unwrap();
        assert!(db.snapshot("campaign_costs").is_err(), "still unreadable after flushing around it");
    }
    flip_byte(&damaged, footer_byte);
    let db = Db::open(options(dir.path())).unwrap();
    assert_eq!(db.gauges().damaged_segments, 0);
    assert_eq!(
        rows(&db, "campaign_costs"),
        vec![cost_row("a", 1.0), cost_row("b", 2.0), cost_row("c", 3.0)],
        "with the file restored, its rows and the ones written meanwhile are all there"
    );
}
