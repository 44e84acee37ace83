//! Sort order of batches: the fast packed-key sort equals a naive stable comparator sort over
//! values (nulls first, floats by total order, text byte-wise), and is fast.

mod segment_util;

use lookback_common::{Batch, ColumnDef, ColumnType, Schema, Value};
use lookback_storage::sort::{is_sorted, sort_batch, sort_order};
use proptest::prelude::*;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use segment_util::{events_batch, mixed_schema, random_batch};
use std::cmp::Ordering;
use std::time::Instant;

fn naive_cmp(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Less,
        (_, Value::Null) => Ordering::Greater,
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Int64(x), Value::Int64(y)) | (Value::Timestamp(x), Value::Timestamp(y)) => x.cmp(y),
        (Value::Float64(x), Value::Float64(y)) => x.total_cmp(y),
        (Value::Text(x), Value::Text(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Value::Uuid(x), Value::Uuid(y)) => x.cmp(y),
        _ => panic!("mixed types"),
    }
}

fn naive_order(schema: &Schema, batch: &Batch) -> Vec<u32> {
    let rows: Vec<Vec<Value>> = (0..batch.rows()).map(|i| batch.row(i)).collect();
    let mut order: Vec<u32> = (0..batch.rows() as u32).collect();
    order.sort_by(|&a, &b| {
        schema
            .sort_key
            .iter()
            .map(|&k| naive_cmp(&rows[a as usize][k], &rows[b as usize][k]))
            .find(|o| *o != Ordering::Equal)
            .unwrap_or(Ordering::Equal)
    });
    order
}

/// The mixed schema with another sort key (columns: tag n x ts b id s).
fn with_sort_key(sort_key: Vec<usize>) -> Schema {
    let s = mixed_schema();
    Schema::new("mixed", s.columns, sort_key, s.bitmap_columns).expect("valid schema")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn sort_order_matches_naive_stable_sort(seed in any::<u64>(), rows in 0usize..400,
                                            null_ratio in prop_oneof![Just(0.0), Just(0.3), Just(0.9)],
                                            key in prop_oneof![
                                                Just(vec![0, 1, 3]),   // text, int (full range), ts
                                                Just(vec![4, 0]),      // bool, text
                                                Just(vec![2]),         // float
                                                Just(vec![5, 1]),      // uuid: comparator fallback
                                                Just(vec![6, 4]),      // high-cardinality text
                                                Just(vec![]),          // no key: input order
                                            ]) {
        let mut rng = SmallRng::seed_from_u64(seed);
        let schema = with_sort_key(key);
        let batch = random_batch(&mut rng, rows, null_ratio);
        let order = sort_order(&schema, &batch);
        prop_assert_eq!(&order, &naive_order(&schema, &batch));
        let sorted = sort_batch(&schema, &batch);
        prop_assert!(is_sorted(&schema, &sorted));
    }
}

#[test]
fn sort_ties_keep_input_order() {
    let schema = Schema::new("t", vec![ColumnDef::new("k", ColumnType::Int64, true), ColumnDef::new("v", ColumnType::Int64, false)], vec![0], vec![]).expect("schema");
    let mut b = lookback_common::BatchBuilder::new(&schema, 6);
    for (k, v) in [(Some(2), 0), (None, 1), (Some(1), 2), (Some(2), 3), (None, 4), (Some(1), 5)] {
        b.push_row(&[k.map_or(Value::Null, Value::Int64), Value::Int64(v)]).expect("row");
    }
    let batch = b.finish().expect("batch");
    assert_eq!(sort_order(&schema, &batch), vec![1, 4, 2, 5, 0, 3]);
    assert!(!is_sorted(&schema, &batch));
}

#[test]
fn sort_events_sort_is_fast() {
    let mut rng = SmallRng::seed_from_u64(5);
    let rows = if cfg!(debug_assertions) { 200_000 } else { 1_000_000 };
    let schema = Schema::events();
    let batch = events_batch(&mut rng, rows);
    let start = Instant::now();
    let order = sort_order(&schema, &batch);
    let elapsed = start.elapsed();
    println!("sort_order: {rows} events rows in {:.3} s", elapsed.as_secs_f64());
    assert_eq!(order.len(), rows);
    assert!(is_sorted(&schema, &batch.take(&order)));
    if !cfg!(debug_assertions) {
        assert!(elapsed.as_secs_f64() < 1.0, "sort of {rows} rows took {elapsed:?}");
    }
}
