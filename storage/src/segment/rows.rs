//! The rows a segment is written from, in segment order, without materializing them.
//!
//! Why: a flush used to concatenate the memtable's batches into one sorted batch (copying every
//! text byte once more), then rank every text column again to build the segment dictionaries.
//! Here every text column is ranked once, over the unsorted input; the ranks serve both as sort
//! keys and as segment dictionary codes. The writer then gathers, block by block, 4-byte codes
//! for dictionary columns and borrowed values for the rest, straight from the input batches.
//!
//! A non-key text column whose first [`PROBE_VALUES`] values are nearly all distinct (JSON
//! payloads, unique ids) is not ranked further: no dictionary could pay for it, and hashing
//! every value would be the most expensive step of the flush. Sort-key text columns are
//! always ranked in full (their ranks are the sort keys).

use super::bitmap::{self, ColumnBitmaps};
use super::fingerprint::{fingerprint_columns, key_hash, value_hash, FingerprintIndex};
use super::encoding::{BlockSlice, DenseValues};
use crate::sort::{self, ColumnKey};
use super::intern::Interner;
use lookback_common::{Batch, Column, ColumnValues, Schema, TextValues};
use std::ops::Range;

/// Rank of a null value.
pub(crate) const NULL_RANK: u32 = u32::MAX;
/// Non-null values of a non-key text column looked at before deciding whether to rank it.
const PROBE_VALUES: usize = 1 << 16;
/// A probed column is given up when more than this share (in tenths) of its values were new.
const PROBE_DISTINCT_TENTHS_MAX: usize = 9;

/// A text column's distinct values in byte order, and each input row's rank among them.
pub(crate) struct Ranking<'a> {
    pub entries: Vec<&'a [u8]>,
    /// Per output row (segment order): rank, or [`NULL_RANK`].
    pub ranks: Vec<u32>,
    pub non_null: usize,
}

/// Input batches of one schema plus the order their rows take in the segment.
pub(crate) struct SegmentRows<'a> {
    parts: Vec<&'a Batch>,
    /// Segment order: (part, row within the part) of every output row.
    locs: Vec<(u32, u32)>,
    /// Per schema column: the ranking of a text column (None for other types, or when probing
    /// gave up on the column).
    rankings: Vec<Option<Ranking<'a>>>,
}

impl<'a> SegmentRows<'a> {
    /// A batch already in segment order.
    pub(crate) fn sorted(schema: &Schema, batch: &'a Batch) -> SegmentRows<'a> {
        let parts = vec![batch];
        let locs: Vec<(u32, u32)> = (0..batch.rows() as u32).map(|r| (0, r)).collect();
        let rankings = (0..schema.len()).map(|c| rank_in_order(&parts, c, false)).collect();
        SegmentRows { parts, locs, rankings }
    }

    /// The rows of `parts` (any order), to be written sorted by `schema.sort_key`; ties keep
    /// input order.
    pub(crate) fn sorting(schema: &Schema, parts: &[&'a Batch], threads: usize) -> SegmentRows<'a> {
        let parts: Vec<&'a Batch> = parts.to_vec();
        let mut part_starts = Vec::with_capacity(parts.len() + 1);
        let mut total = 0usize;
        for p in &parts {
            part_starts.push(total);
            total += p.rows();
        }
        part_starts.push(total);
        assert!(u32::try_from(total).is_ok(), "segment rows exceed u32 row ids");
        // Every text column is ranked streaming through the input (reading values in output
        // order would miss the cache on every one); the ranks of sort-key columns are the sort
        // keys. Then ranks are permuted to output order, where the writer reads them in runs.
        let mut rankings: Vec<Option<Ranking<'a>>> =
            super::parallel::map(schema.len(), threads, |c| rank_in_order(&parts, c, !schema.sort_key.contains(&c)));
        let order = sort_rows(schema, &parts, &rankings, total);
        let permuted = super::parallel::map(rankings.len(), threads, |c| {
            rankings[c].as_ref().map(|ranking| order.iter().map(|&row| ranking.ranks[row as usize]).collect::<Vec<u32>>())
        });
        for (ranking, ranks) in rankings.iter_mut().zip(permuted) {
            if let (Some(ranking), Some(ranks)) = (ranking.as_mut(), ranks) {
                ranking.ranks = ranks;
            }
        }
        let locs = locate(&order, &part_starts);
        SegmentRows { parts, locs, rankings }
    }

    pub(crate) fn rows(&self) -> usize {
        self.locs.len()
    }

    pub(crate) fn ranking(&self, column: usize) -> Option<&Ranking<'a>> {
        self.rankings[column].as_ref()
    }

    /// One column of the output rows in `range`. With `codes`, also the segment dictionary
    /// codes (ranks) of its non-null values.
    pub(crate) fn block(&self, column: usize, range: Range<usize>, codes: bool) -> (BlockSlice<'a>, Option<Vec<u32>>) {
        let columns: Vec<&'a Column> = self.parts.iter().map(|p| p.column(column)).collect();
        let locs = &self.locs[range.clone()];
        let has_nulls = columns.iter().any(|c| c.validity.is_some());
        let validity: Option<Vec<bool>> = has_nulls
            .then(|| locs.iter().map(|&(p, r)| !columns[p as usize].is_null(r as usize)).collect())
            .filter(|v: &Vec<bool>| v.iter().any(|valid| !valid));
        let null_count = validity.as_ref().map_or(0, |v| v.iter().filter(|valid| !**valid).count());
        let kept: Vec<(u32, u32)> = match &validity {
            Some(v) => locs.iter().zip(v).filter(|(_, valid)| **valid).map(|(l, _)| *l).collect(),
            None => locs.to_vec(),
        };
        let ranking = if codes { self.rankings[column].as_ref() } else { None };
        let (values, codes) = match ranking {
            Some(ranking) => {
                let ranks = &ranking.ranks[range];
                let codes: Vec<u32> = ranks.iter().copied().filter(|&r| r != NULL_RANK).collect();
                let values = codes.iter().map(|&c| ranking.entries[c as usize]).collect();
                (DenseValues::Text(values), Some(codes))
            }
            None => (gather(&columns, &kept), None),
        };
        (BlockSlice { null_count, validity, values }, codes)
    }

    /// The bitmaps of every bitmap column of `schema`, over output row numbers.
    pub(crate) fn bitmaps(&self, schema: &Schema) -> Vec<ColumnBitmaps> {
        schema
            .bitmap_columns
            .iter()
            .map(|&c| match self.rankings[c].as_ref() {
                Some(ranking) => {
                    bitmap::build_from_ranks(c, &ranking.entries, ranking.ranks.iter().copied())
                }
                None => {
                    let columns: Vec<&Column> = self.parts.iter().map(|p| p.column(c)).collect();
                    let values = self.locs.iter().map(|&(p, r)| text_at(columns[p as usize], r as usize));
                    bitmap::build_from_values(c, values)
                }
            })
            .collect()
    }
}

impl SegmentRows<'_> {
    /// The fingerprint index over output rows (blocks of `block_rows`) when `schema` has one ([`fingerprint_columns`]):
    /// each value hashed once per distinct value when its column is ranked, else per row.
    pub(crate) fn fingerprint(&self, schema: &Schema, block_rows: usize) -> Option<([usize; 3], FingerprintIndex)> {
        let columns = fingerprint_columns(schema)?;
        let per_row: Vec<Vec<Option<u64>>> = columns.iter().map(|&c| self.value_hashes(c)).collect();
        let hashes = (0..self.rows()).map(|row| match (per_row[0][row], per_row[1][row], per_row[2][row]) {
            (Some(app), Some(ip), Some(ua)) => Some(key_hash(app, ip, ua)),
            _ => None,
        });
        Some((columns, FingerprintIndex::build(hashes, block_rows)))
    }

    /// [`value_hash`] of text column `c` in every output row (`None` for null).
    fn value_hashes(&self, c: usize) -> Vec<Option<u64>> {
        match self.rankings[c].as_ref() {
            Some(ranking) => {
                let entries: Vec<u64> = ranking.entries.iter().map(|e| value_hash(e)).collect();
                ranking.ranks.iter().map(|&r| (r != NULL_RANK).then(|| entries[r as usize])).collect()
            }
            None => {
                let columns: Vec<&Column> = self.parts.iter().map(|p| p.column(c)).collect();
                self.locs.iter().map(|&(p, r)| text_at(columns[p as usize], r as usize).map(value_hash)).collect()
            }
        }
    }
}

fn text_at(column: &Column, row: usize) -> Option<&[u8]> {
    match &column.values {
        ColumnValues::Text(t) if !column.is_null(row) => Some(t.get_bytes(row)),
        ColumnValues::Text(_) => None,
        _ => unreachable!("bitmap and fingerprint columns are text"),
    }
}

/// The non-null values at `kept` of a column split across parts.
fn gather<'a>(columns: &[&'a Column], kept: &[(u32, u32)]) -> DenseValues<'a> {
    let Some(first) = columns.first() else { unreachable!("segments hold at least one part") };
    macro_rules! pick {
        ($variant:ident, $dense:ident, $map:expr) => {
            DenseValues::$dense(
                kept.iter()
                    .map(|&(p, r)| match &columns[p as usize].values {
                        ColumnValues::$variant(v) => $map(v, r as usize),
                        _ => unreachable!("parts share one schema"),
                    })
                    .collect(),
            )
        };
    }
    match &first.values {
        ColumnValues::Bool(_) => pick!(Bool, Bool, |v: &Vec<bool>, r| v[r]),
        ColumnValues::Int64(_) => pick!(Int64, Int, |v: &Vec<i64>, r| v[r]),
        ColumnValues::Timestamp(_) => pick!(Timestamp, Int, |v: &Vec<i64>, r| v[r]),
        ColumnValues::Float64(_) => pick!(Float64, Float, |v: &Vec<f64>, r| v[r]),
        ColumnValues::Uuid(_) => pick!(Uuid, Uuid, |v: &Vec<[u8; 16]>, r| v[r]),
        ColumnValues::Text(_) => {
            pick!(Text, Text, |t: &'a lookback_common::TextValues, r| t.get_bytes(r))
        }
    }
}

/// Ranks text column `c` over all rows of `parts`, in input order; `None` for other column
/// types, or when `probe` finds the column too distinct for a dictionary.
///
/// A part in dictionary form is interned entry by entry (each distinct value of the batch
/// once), its rows then take their entry's id; a plain part is interned row by row.
fn rank_in_order<'a>(parts: &[&'a Batch], c: usize, probe: bool) -> Option<Ranking<'a>> {
    let columns: Vec<(&'a Column, &'a TextValues)> = parts
        .iter()
        .map(|p| {
            let column = p.column(c);
            match &column.values {
                ColumnValues::Text(text) => Some((column, text)),
                _ => None,
            }
        })
        .collect::<Option<_>>()?;
    let rows: usize = parts.iter().map(|p| p.rows()).sum();
    let mut interner = Interner::new();
    let mut ids: Vec<u32> = Vec::with_capacity(rows);
    let mut non_null = 0usize;
    let mut probed = !probe;
    let mut entry_ids: Vec<u32> = Vec::new();
    for &(column, text) in &columns {
        match &text.codes {
            Some(codes) => {
                entry_ids.clear();
                let entries = (0..text.entries()).map(|e| Some(text.entry_bytes(e)));
                interner.intern_all(entries, NULL_RANK, |id| entry_ids.push(id), |_, _| false);
                for (r, &code) in codes.iter().enumerate() {
                    if column.is_null(r) {
                        ids.push(NULL_RANK);
                    } else {
                        ids.push(entry_ids[code as usize]);
                        non_null += 1;
                    }
                }
            }
            None => {
                let values = (0..text.len()).map(|r| (!column.is_null(r)).then(|| text.get_bytes(r)));
                let base = non_null;
                // A large plain part (a decoded segment) is probed in its middle.
                let give_up = |seen: usize, interner: &Interner<'_>| {
                    !probed && base + seen == PROBE_VALUES && too_distinct(interner.len(), PROBE_VALUES)
                };
                if !interner.intern_all(values, NULL_RANK, |id| ids.push(id), give_up) {
                    return None;
                }
                non_null += column.validity.as_ref().map_or(text.len(), |v| v.iter().filter(|ok| **ok).count());
            }
        }
        // The probe looks at whole parts: after the first PROBE_VALUES non-null values.
        if !probed && non_null >= PROBE_VALUES {
            probed = true;
            if too_distinct(interner.len(), non_null) {
                return None;
            }
        }
    }
    let (entries, rank) = interner.into_sorted();
    for id in ids.iter_mut().filter(|id| **id != NULL_RANK) {
        *id = rank[*id as usize];
    }
    Some(Ranking { entries, ranks: ids, non_null })
}

fn too_distinct(distinct: usize, non_null: usize) -> bool {
    distinct * 10 > non_null * PROBE_DISTINCT_TENTHS_MAX
}

/// Input row numbers in segment order.
fn sort_rows(schema: &Schema, parts: &[&Batch], rankings: &[Option<Ranking<'_>>], total: usize) -> Vec<u32> {
    if schema.sort_key.is_empty() {
        return (0..total as u32).collect();
    }
    let keys: Option<Vec<ColumnKey>> = schema
        .sort_key
        .iter()
        .map(|&c| match &rankings[c] {
            Some(ranking) => Some(ColumnKey::from_ranks(&ranking.ranks, ranking.entries.len())),
            None => {
                let columns: Vec<&Column> = parts.iter().map(|p| p.column(c)).collect();
                sort::column_key(&Column::concat(schema.columns[c].ty, &columns))
            }
        })
        .collect();
    match keys {
        Some(keys) if sort::packable(&keys) => sort::packed_sort(&keys, total),
        _ => {
            let key_schema = sort::key_schema(schema);
            let key_columns: Vec<Column> = schema
                .sort_key
                .iter()
                .map(|&c| {
                    let columns: Vec<&Column> = parts.iter().map(|p| p.column(c)).collect();
                    Column::concat(schema.columns[c].ty, &columns)
                })
                .collect();
            let keys = Batch::try_new(&key_schema, key_columns).expect("key columns come from batches of the schema");
            sort::sort_order(&key_schema, &keys)
        }
    }
}

/// (part, row within part) of every row number in `order`.
fn locate(order: &[u32], part_starts: &[usize]) -> Vec<(u32, u32)> {
    let mut part_of = Vec::with_capacity(*part_starts.last().unwrap_or(&0));
    for (p, w) in part_starts.windows(2).enumerate() {
        part_of.extend(std::iter::repeat_n(p as u32, w[1] - w[0]));
    }
    order
        .iter()
        .map(|&row| {
            let p = part_of[row as usize];
            (p, (row as usize - part_starts[p as usize]) as u32)
        })
        .collect()
}
