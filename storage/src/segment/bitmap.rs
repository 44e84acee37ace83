//! The bitmap index: for each `schema.bitmap_columns` column, one roaring bitmap of segment-wide
//! row ids per distinct non-null value (nulls are not indexed).
//!
//! On disk a bitmap is its sorted row ids as gaps (`row[0]`, then `row[i] - row[i-1] - 1`):
//! `u32 count`, byte planes of the gaps, then zstd when that shrinks it. This is about 2.5x
//! smaller than roaring's portable serialization on event_type-like columns (dense values make
//! 8 KiB bitmap containers, sparse ones 2 bytes per row), and decodes straight into a
//! [`RoaringBitmap`] with `from_sorted_iter`. Each bitmap has its own crc32 in the footer
//! directory, verified when it is read (lazily, per lookup).

use super::encoding::{get_planes, invalid, put_planes, Invalid};
use lookback_common::ByteReader;
use roaring::RoaringBitmap;
use std::collections::BTreeMap;

/// The encoded (uncompressed) bitmaps of one column: (value, bytes), sorted by value byte-wise.
pub(crate) struct ColumnBitmaps {
    pub column: usize,
    pub bitmaps: Vec<(String, Vec<u8>)>,
}

/// Bitmaps of a ranked column: `codes` yields each row's rank into `entries` (sorted
/// byte-wise), `u32::MAX` for null.
pub(crate) fn build_from_ranks(column: usize, entries: &[&[u8]], codes: impl Iterator<Item = u32>) -> ColumnBitmaps {
    let mut rows: Vec<Vec<u32>> = vec![Vec::new(); entries.len()];
    for (row, code) in codes.enumerate() {
        if code != u32::MAX {
            rows[code as usize].push(row as u32);
        }
    }
    let bitmaps = entries
        .iter()
        .zip(rows)
        .filter(|(_, rows)| !rows.is_empty())
        .map(|(value, rows)| (String::from_utf8_lossy(value).into_owned(), encode(&rows)))
        .collect();
    ColumnBitmaps { column, bitmaps }
}

/// Bitmaps of a column given each row's value (`None` for null).
pub(crate) fn build_from_values<'a>(column: usize, values: impl Iterator<Item = Option<&'a [u8]>>) -> ColumnBitmaps {
    // BTreeMap over bytes orders like the directory. Row ids arrive increasing.
    let mut by_value: BTreeMap<&[u8], Vec<u32>> = BTreeMap::new();
    for (row, value) in values.enumerate() {
        if let Some(value) = value {
            by_value.entry(value).or_default().push(row as u32);
        }
    }
    let bitmaps = by_value
        .into_iter()
        .map(|(value, rows)| (String::from_utf8_lossy(value).into_owned(), encode(&rows)))
        .collect();
    ColumnBitmaps { column, bitmaps }
}

fn encode(rows: &[u32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + rows.len() * 2);
    out.extend_from_slice(&(rows.len() as u32).to_le_bytes());
    let mut next = 0u32;
    let gaps: Vec<u64> = rows
        .iter()
        .map(|&row| {
            assert!(row >= next, "bitmap row ids are strictly increasing");
            let gap = (row - next) as u64;
            next = row + 1;
            gap
        })
        .collect();
    put_planes(&mut out, &gaps);
    out
}

/// Decodes one bitmap and checks its row ids lie in the segment.
pub(crate) fn decode(raw: &[u8], rows: u64) -> Result<RoaringBitmap, Invalid> {
    let mut r = ByteReader::new(raw);
    let count = r.u32()? as u64;
    if count > rows {
        return invalid(format!("bitmap of {count} rows in a segment of {rows}"));
    }
    let gaps = get_planes(&mut r, count as usize)?;
    if !r.is_empty() {
        return invalid("trailing bytes after bitmap");
    }
    let mut ids = Vec::with_capacity(gaps.len());
    let mut next = 0u64;
    for gap in gaps {
        let row = next.saturating_add(gap);
        if row >= rows {
            return invalid(format!("bitmap row id {row} beyond {rows} rows"));
        }
        ids.push(row as u32);
        next = row + 1;
    }
    RoaringBitmap::from_sorted_iter(ids).map_err(|e| Invalid(format!("bitmap: {e}")))
}
