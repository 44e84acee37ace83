//! Model-based test of the write path: random sequences of append (with resent batches and
//! repeated event ids), flush, compaction and restart, checked after every step against a
//! simple in-memory model of what must be visible.

use lookback_common::{Batch, BatchBuilder, Lsn, Schema, Value};
use lookback_storage::{Db, DbError, DbOptions};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::sync::mpsc;

type Row = Vec<Value>;

struct Model {
    rows: Vec<Row>,
    seen: std::collections::HashSet<(String, [u8; 16])>,
    producer_seq: HashMap<u64, u64>,
}

fn small_options(dir: &std::path::Path) -> DbOptions {
    let mut o = DbOptions::new(dir);
    o.memtable_bytes_max = 64 << 10;
    o.flush_interval_ms = 3_600_000;
    o.wal_segment_bytes = 256 << 10;
    o.compaction_fan_in = 3;
    o.flush_segment.block_rows = 64;
    o
}

fn random_row(rng: &mut SmallRng, used_ids: &[[u8; 16]]) -> Row {
    let id: [u8; 16] = if !used_ids.is_empty() && rng.gen_bool(0.1) {
        used_ids[rng.gen_range(0..used_ids.len())]
    } else {
        rng.gen()
    };
    let text = |s: String| Value::Text(s);
    let maybe = |rng: &mut SmallRng, v: Value| if rng.gen_bool(0.3) { Value::Null } else { v };
    let app = format!("app{}", rng.gen_range(0..3));
    let device = rng.gen_range(0..20);
    let (user, channel, revenue) = (rng.gen_range(0..5), rng.gen_range(0..4), rng.gen_range(-1e6..1e6));
    vec![
        Value::Uuid(id),
        text(app),
        Value::Timestamp(rng.gen_range(0..1_000_000_000)),
        text(["impression", "click", "install", "purchase"][rng.gen_range(0..4)].into()),
        maybe(rng, text(format!("dev{device}"))),
        maybe(rng, text(format!("user{user}"))),
        maybe(rng, text(format!("10.0.0.{device}"))),
        maybe(rng, text("Mozilla/5.0 ünïcode".into())),
        maybe(rng, text("ios".into())),
        maybe(rng, text(format!("ch{channel}"))),
        maybe(rng, text(String::new())),
        maybe(rng, Value::Float64(revenue)),
        maybe(rng, text("USD".into())),
        maybe(rng, text("{\"k\":1}".into())),
    ]
}

fn build(schema: &Schema, rows: &[Row]) -> Batch {
    let mut b = BatchBuilder::new(schema, rows.len());
    rows.iter().for_each(|r| b.push_row(r).unwrap());
    b.finish().unwrap()
}

fn admit_and_wait(db: &Db, producer: u64, seq: u64, batch: Batch) -> Result<(Lsn, bool), DbError> {
    let (tx, rx) = mpsc::channel();
    let on_durable = Box::new(move |r| drop(tx.send(r)));
    // Odd sequences arrive encoded as producers send them (logged as received unless
    // deduplication drops rows); even ones as decoded batches (encoded by the engine).
    let outcome = if seq % 2 == 1 {
        let mut encoded = Vec::new();
        lookback_common::encode_batch_compact(&batch, &mut encoded);
        db.admit_encoded("events", producer, seq, batch, &encoded, on_durable)?
    } else {
        db.admit("events", producer, seq, batch, on_durable)?
    };
    rx.recv().expect("durability callback runs")?;
    Ok((outcome.lsn, outcome.duplicate_batch))
}

fn visible_rows(db: &Db) -> Vec<Row> {
    let snap = db.snapshot("events").unwrap();
    let mut rows = Vec::new();
    for s in &snap.segments {
        let b = s.read_all().unwrap();
        rows.extend((0..b.rows()).map(|i| b.row(i)));
    }
    for b in &snap.memtable {
        rows.extend((0..b.rows()).map(|i| b.row(i)));
    }
    rows
}

fn sorted(mut rows: Vec<Row>) -> Vec<String> {
    let mut out: Vec<String> = rows.drain(..).map(|r| format!("{r:?}")).collect();
    out.sort();
    out
}

fn run_model(seed: u64, steps: usize) {
    let dir = tempfile::tempdir().unwrap();
    let schema = Schema::events();
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut db = Some(Db::open(small_options(dir.path())).unwrap());
    let mut model = Model { rows: Vec::new(), seen: Default::default(), producer_seq: HashMap::new() };
    let mut used_ids: Vec<[u8; 16]> = Vec::new();
    let mut sent: HashMap<(u64, u64), Vec<Row>> = HashMap::new();
    for step in 0..steps {
        let d = db.as_ref().unwrap();
        match rng.gen_range(0..100) {
            0..=64 => {
                let producer = rng.gen_range(1..4u64);
                let resend = rng.gen_bool(0.15) && model.producer_seq.contains_key(&producer);
                let (seq, rows) = if resend {
                    let seq = rng.gen_range(1..=model.producer_seq[&producer]);
                    (seq, sent[&(producer, seq)].clone())
                } else {
                    let seq = model.producer_seq.get(&producer).copied().unwrap_or(0) + 1;
                    let n = rng.gen_range(0..40);
                    let rows: Vec<Row> = (0..n).map(|_| random_row(&mut rng, &used_ids)).collect();
                    (seq, rows)
                };
                let (_, duplicate) = admit_and_wait(d, producer, seq, build(&schema, &rows)).unwrap();
                assert_eq!(duplicate, resend, "seed {seed} step {step}: resend detection");
                if !resend {
                    model.producer_seq.insert(producer, seq);
                    sent.insert((producer, seq), rows.clone());
                    for r in rows {
                        let (Value::Text(app), Value::Uuid(id)) = (&r[1], &r[0]) else { unreachable!() };
                        used_ids.push(*id);
                        if model.seen.insert((app.clone(), *id)) {
                            model.rows.push(r);
                        }
                    }
                }
            }
            65..=79 => d.flush_all().unwrap(),
            80..=87 => d.compact_all().unwrap(),
            _ => {
                drop(db.take());
                db = Some(Db::open(small_options(dir.path())).unwrap());
            }
        }
        let d = db.as_ref().unwrap();
        assert_eq!(sorted(visible_rows(d)), sorted(model.rows.clone()), "seed {seed} step {step}");
        for (p, s) in &model.producer_seq {
            assert_eq!(d.producer_last_seq(*p), *s, "seed {seed} step {step}: producer {p}");
        }
    }
}

#[test]
fn random_operations_match_the_model() {
    for seed in 0..6 {
        run_model(seed, 120);
    }
}

#[test]
fn second_open_of_a_locked_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _db = Db::open(small_options(dir.path())).unwrap();
    match Db::open(small_options(dir.path())) {
        Err(DbError::Locked { .. }) => {}
        other => panic!("expected Locked, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn missing_manifest_with_data_present_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Db::open(small_options(dir.path())).unwrap();
        let rows: Vec<Row> = (0..5).map(|_| random_row(&mut SmallRng::seed_from_u64(1), &[])).collect();
        admit_and_wait(&db, 1, 1, build(&Schema::events(), &rows)).unwrap();
    }
    std::fs::remove_file(dir.path().join("MANIFEST")).unwrap();
    let err = Db::open(small_options(dir.path())).err().expect("must refuse");
    assert!(err.to_string().contains("no MANIFEST"), "{err}");
    std::fs::write(dir.path().join("MANIFEST"), b"").unwrap();
    let err = Db::open(small_options(dir.path())).err().expect("empty manifest must refuse");
    assert!(err.to_string().contains("corrupt"), "{err}");
}

/// Regression: a batch the WAL refused (too large) was never stored, so its events must not be
/// remembered by the dedup window; resending them in smaller batches stores them.
#[test]
fn events_of_a_refused_batch_are_not_treated_as_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = small_options(dir.path());
    options.wal_segment_bytes = 64 << 10;
    let db = Db::open(options).unwrap();
    let mut rng = SmallRng::seed_from_u64(9);
    let rows: Vec<Row> = (0..2000).map(|_| random_row(&mut rng, &[])).collect();
    let distinct: std::collections::HashSet<String> = rows.iter().map(|r| format!("{:?}{:?}", r[0], r[1])).collect();
    match admit_and_wait(&db, 1, 1, build(&Schema::events(), &rows)) {
        Err(DbError::TooLarge(message)) => assert!(message.contains("smaller batches"), "{message}"),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    for (i, chunk) in rows.chunks(50).enumerate() {
        admit_and_wait(&db, 1, 2 + i as u64, build(&Schema::events(), chunk)).unwrap();
    }
    assert_eq!(visible_rows(&db).len(), distinct.len());
}

/// A memtable that fills up is frozen by the admission that filled it and flushed on its own:
/// the batch admitted after it stays in the (new) active memtable, in no segment, until the
/// flush interval or an explicit flush — the flusher does not sweep it into a tiny segment.
#[test]
fn a_full_memtable_is_flushed_alone_and_the_next_batch_stays_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(small_options(dir.path())).unwrap();
    let mut rng = SmallRng::seed_from_u64(21);
    let fresh_rows = |rng: &mut SmallRng, n: usize| -> Vec<Row> {
        (0..n).map(|_| random_row(rng, &[])).collect()
    };
    // Batches until the memtable holds over memtable_bytes_max (64 KiB): the admission that
    // crosses it freezes the memtable (which the flusher may already have written).
    let mut big = Vec::new();
    let mut seq = 0;
    loop {
        let rows = fresh_rows(&mut rng, 100);
        seq += 1;
        admit_and_wait(&db, 1, seq, build(&Schema::events(), &rows)).unwrap();
        big.extend(rows);
        let g = db.gauges();
        if g.segments > 0 || g.memtable_bytes >= 64 << 10 {
            break;
        }
        assert!(seq < 100, "64 KiB of rows never filled the memtable");
    }
    let small = fresh_rows(&mut rng, 3);
    admit_and_wait(&db, 1, seq + 1, build(&Schema::events(), &small)).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let snap = loop {
        let snap = db.snapshot("events").unwrap();
        if !snap.segments.is_empty() || std::time::Instant::now() > deadline {
            break snap;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(snap.segments.len(), 1, "the frozen memtable became one segment");
    assert_eq!(snap.segments[0].rows(), big.len() as u64);
    let in_memory: usize = snap.memtable.iter().map(|b| b.rows()).sum();
    assert_eq!(in_memory, small.len(), "the next batch is still in the active memtable");
    db.flush_all().unwrap();
    assert_eq!(db.snapshot("events").unwrap().segments.len(), 2);
    assert_eq!(sorted(visible_rows(&db)), sorted([big, small].concat()));
}
