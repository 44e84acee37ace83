//! Row order of a batch by its schema's sort key: the order rows take inside a segment.
//!
//! Order: lexicographic over `schema.sort_key`, nulls first in every key column, ties kept in
//! input order (stable). Per type: bool `false < true`; int64/timestamp numeric; float64 by
//! `f64::total_cmp` (-NaN < -inf < .. < -0 < +0 < .. < +inf < +NaN); text byte-wise (UTF-8 byte
//! order equals code point order); uuid byte-wise.
//!
//! Why this shape: string comparison in the hot loop of a 1M-row sort dominates flush time. So
//! every key column is first mapped to an order-preserving `u64` (text: rank among the column's
//! distinct values; numbers: offset from the column minimum; 0 = null), and when the key widths
//! fit, the keys and the row index are packed into one `u128` that `sort_unstable` orders; the
//! index in the low bits makes the unstable sort stable. Key columns that do not fit (uuid, or
//! very wide ranges) fall back to a stable comparator sort, which is also the reference the
//! fast path is tested against.

use ahash::RandomState;
use lookback_common::{Batch, Column, ColumnValues, Schema, TextValues};
use std::cmp::Ordering;
use std::collections::HashMap;

/// Bits of a packed sort word left for key columns: the low 32 hold the row index.
const PACKED_KEY_BITS_MAX: u32 = 96;

/// Returns the row order (indices into `batch`) that sorts it by `schema.sort_key`.
pub fn sort_order(schema: &Schema, batch: &Batch) -> Vec<u32> {
    let rows = batch.rows();
    assert!(u32::try_from(rows).is_ok(), "sort: batch of {rows} rows exceeds u32 row ids");
    if schema.sort_key.is_empty() {
        return (0..rows as u32).collect();
    }
    let keys: Option<Vec<ColumnKey>> =
        schema.sort_key.iter().map(|&c| column_key(batch.column(c))).collect();
    match keys {
        Some(keys) if packable(&keys) => packed_sort(&keys, rows),
        _ => comparator_sort(schema, batch),
    }
}

/// The schema of just `schema`'s sort-key columns (in key order), all of them the key.
pub(crate) fn key_schema(schema: &Schema) -> Schema {
    Schema::new(
        &schema.name,
        schema.sort_key.iter().map(|&c| schema.columns[c].clone()).collect(),
        (0..schema.sort_key.len()).collect(),
        Vec::new(),
    )
    .expect("the sort-key columns of a valid schema form a valid schema")
}

/// `batch` reordered by [`sort_order`].
pub fn sort_batch(schema: &Schema, batch: &Batch) -> Batch {
    batch.take(&sort_order(schema, batch))
}

/// Whether every adjacent pair of rows is in sort-key order.
pub fn is_sorted(schema: &Schema, batch: &Batch) -> bool {
    (1..batch.rows()).all(|i| compare_rows(schema, batch, i - 1, i) != Ordering::Greater)
}

/// Compares rows `a` and `b` of `batch` by the sort key (the reference order).
pub fn compare_rows(schema: &Schema, batch: &Batch, a: usize, b: usize) -> Ordering {
    for &c in &schema.sort_key {
        let ord = compare_cells(batch.column(c), a, b);
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}

fn compare_cells(column: &Column, a: usize, b: usize) -> Ordering {
    match (column.is_null(a), column.is_null(b)) {
        (true, true) => return Ordering::Equal,
        (true, false) => return Ordering::Less,
        (false, true) => return Ordering::Greater,
        (false, false) => {}
    }
    match &column.values {
        ColumnValues::Bool(v) => v[a].cmp(&v[b]),
        ColumnValues::Int64(v) | ColumnValues::Timestamp(v) => v[a].cmp(&v[b]),
        ColumnValues::Float64(v) => v[a].total_cmp(&v[b]),
        ColumnValues::Text(t) => t.get_bytes(a).cmp(t.get_bytes(b)),
        ColumnValues::Uuid(v) => v[a].cmp(&v[b]),
    }
}

fn comparator_sort(schema: &Schema, batch: &Batch) -> Vec<u32> {
    let mut order: Vec<u32> = (0..batch.rows() as u32).collect();
    order.sort_by(|&a, &b| compare_rows(schema, batch, a as usize, b as usize));
    order
}

/// One key column mapped to order-preserving integers: `keys[row]` is 0 for null, else >= 1.
pub(crate) struct ColumnKey {
    keys: Vec<u64>,
    /// Bits needed for the largest key.
    bits: u32,
}

impl ColumnKey {
    /// Keys of a ranked text column: `ranks[row]` among `distinct` values, `u32::MAX` for null.
    pub(crate) fn from_ranks(ranks: &[u32], distinct: usize) -> ColumnKey {
        let keys = ranks.iter().map(|&r| if r == u32::MAX { 0 } else { r as u64 + 1 }).collect();
        ColumnKey { keys, bits: 64 - (distinct as u64).leading_zeros() }
    }
}

/// Whether `keys` fit one packed sort word beside the row index.
pub(crate) fn packable(keys: &[ColumnKey]) -> bool {
    keys.iter().map(|k| k.bits).sum::<u32>() <= PACKED_KEY_BITS_MAX
}

/// `None` for key columns that cannot be mapped (uuid, ranges spanning all 64 bits).
pub(crate) fn column_key(column: &Column) -> Option<ColumnKey> {
    let keys = match &column.values {
        ColumnValues::Bool(v) => nullable_keys(column, v.iter().map(|&b| b as u64 + 1)),
        ColumnValues::Int64(v) | ColumnValues::Timestamp(v) => {
            offset_keys(column, v.iter().map(|&x| (x as u64) ^ (1 << 63)))?
        }
        ColumnValues::Float64(v) => offset_keys(column, v.iter().map(|&x| float_order_bits(x)))?,
        ColumnValues::Text(t) => text_keys(column, t),
        ColumnValues::Uuid(_) => return None,
    };
    let max = keys.iter().copied().max().unwrap_or(0);
    Some(ColumnKey { keys, bits: 64 - max.leading_zeros() })
}

/// Maps a float to bits whose unsigned order is `f64::total_cmp` order.
fn float_order_bits(x: f64) -> u64 {
    let b = x.to_bits();
    if b >> 63 == 1 {
        !b
    } else {
        b | (1 << 63)
    }
}

fn nullable_keys(column: &Column, keys: impl Iterator<Item = u64>) -> Vec<u64> {
    keys.enumerate().map(|(i, k)| if column.is_null(i) { 0 } else { k }).collect()
}

/// Keys `1 + (x - min)` over non-null values, so narrow ranges pack into few bits. `None` when
/// the range spans all 64 bits (no room for the null key).
fn offset_keys(column: &Column, ordered: impl Iterator<Item = u64> + Clone) -> Option<Vec<u64>> {
    let non_null = ordered.clone().enumerate().filter(|(i, _)| !column.is_null(*i));
    let min = non_null.map(|(_, x)| x).min().unwrap_or(0);
    let keys: Vec<u64> = nullable_keys(column, ordered.map(|x| x.wrapping_sub(min).wrapping_add(1)));
    // A wrapped key (x - min == u64::MAX) would collide with null.
    let wrapped = keys.iter().enumerate().any(|(i, &k)| k == 0 && !column.is_null(i));
    (!wrapped).then_some(keys)
}

fn text_keys(column: &Column, text: &TextValues) -> Vec<u64> {
    let rows = text.len();
    let non_null: Vec<&[u8]> =
        (0..rows).filter(|&i| !column.is_null(i)).map(|i| text.get_bytes(i)).collect();
    let (_, codes) = rank_text(&non_null);
    let mut codes = codes.into_iter();
    (0..rows)
        .map(|i| if column.is_null(i) { 0 } else { codes.next().map_or(0, |c| c as u64 + 1) })
        .collect()
}

/// The sorted distinct values of `values` and, per value, its rank among them. Consecutive
/// repeats (common in sorted data) skip the hash lookup.
pub(crate) fn rank_text<'a>(values: &[&'a [u8]]) -> (Vec<&'a [u8]>, Vec<u32>) {
    let mut ids: HashMap<&'a [u8], u32, RandomState> = HashMap::default();
    let mut distinct: Vec<&'a [u8]> = Vec::new();
    let mut first_seen = Vec::with_capacity(values.len());
    let mut previous: Option<(&[u8], u32)> = None;
    for &value in values {
        let id = match previous {
            Some((p, id)) if p == value => id,
            _ => *ids.entry(value).or_insert_with(|| {
                distinct.push(value);
                (distinct.len() - 1) as u32
            }),
        };
        previous = Some((value, id));
        first_seen.push(id);
    }
    let mut order: Vec<u32> = (0..distinct.len() as u32).collect();
    order.sort_unstable_by(|&a, &b| distinct[a as usize].cmp(distinct[b as usize]));
    let mut rank = vec![0u32; distinct.len()];
    for (r, &id) in order.iter().enumerate() {
        rank[id as usize] = r as u32;
    }
    let sorted = order.iter().map(|&id| distinct[id as usize]).collect();
    (sorted, first_seen.into_iter().map(|id| rank[id as usize]).collect())
}

pub(crate) fn packed_sort(keys: &[ColumnKey], rows: usize) -> Vec<u32> {
    let mut words: Vec<u128> = (0..rows)
        .map(|i| {
            let key = keys.iter().fold(0u128, |acc, k| (acc << k.bits) | k.keys[i] as u128);
            (key << 32) | i as u128
        })
        .collect();
    words.sort_unstable();
    words.into_iter().map(|w| w as u32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_order_bits_matches_total_cmp() {
        let xs = [f64::NEG_INFINITY, -1.5, -0.0, 0.0, 1e-300, 2.0, f64::INFINITY, f64::NAN, -f64::NAN];
        for a in xs {
            for b in xs {
                assert_eq!(float_order_bits(a).cmp(&float_order_bits(b)), a.total_cmp(&b), "{a} {b}");
            }
        }
    }

    #[test]
    fn rank_text_sorts_distinct_values() {
        let v: Vec<&[u8]> = vec![b"b", b"a", b"b", b"c", b"a"];
        let (sorted, ranks) = rank_text(&v);
        assert_eq!(sorted, vec![&b"a"[..], b"b", b"c"]);
        assert_eq!(ranks, vec![1, 0, 1, 2, 0]);
    }
}
