//! Zone maps: per column block null count and min/max, so scans can skip blocks unread.
//!
//! min/max are over non-null values, in the sort order of [`crate::sort`] (floats by
//! `total_cmp`, text byte-wise). Absent (`None`) when the block has no non-null value, for
//! uuid columns, and for a text bound longer than [`ZONE_TEXT_BYTES_MAX`] bytes: `None` means
//! "no bound", never "empty".
//!
//! Footer bytes: `u64 null_count, u8 flags (bit 0: min present, bit 1: max present), [min],
//! [max]`; a bound is `u8` (bool), `i64` (int64/timestamp), `u64` bits (float64) or `u16 len`
//! + UTF-8 bytes (text, len <= 128).

use super::encoding::{BlockSlice, DenseValues};
use super::ZONE_TEXT_BYTES_MAX;
use lookback_common::{ByteReader, ColumnType, Value};
use std::cmp::Ordering;

#[derive(Clone, Debug, PartialEq)]
pub struct ZoneMap {
    pub null_count: u64,
    pub min: Option<Value>,
    pub max: Option<Value>,
}

const FLAG_MIN: u8 = 1;
const FLAG_MAX: u8 = 2;

impl ZoneMap {
    pub(crate) fn of(slice: &BlockSlice<'_>, ty: ColumnType) -> ZoneMap {
        let (min, max) = match &slice.values {
            DenseValues::Bool(v) => split(min_max(v, bool::cmp), Value::Bool),
            DenseValues::Int(v) if ty == ColumnType::Timestamp => {
                split(min_max(v, i64::cmp), Value::Timestamp)
            }
            DenseValues::Int(v) => split(min_max(v, i64::cmp), Value::Int64),
            DenseValues::Float(v) => split(min_max(v, f64::total_cmp), Value::Float64),
            DenseValues::Text(v) => match min_max(v, |a, b| a.cmp(b)) {
                Some((lo, hi)) => (text_bound(lo), text_bound(hi)),
                None => (None, None),
            },
            DenseValues::Uuid(_) => (None, None),
        };
        ZoneMap { null_count: slice.null_count as u64, min, max }
    }

    /// [`ZoneMap::of`] for a text block whose non-null values have segment dictionary `codes`:
    /// the dictionary is sorted byte-wise, so the smallest code is the smallest value, and
    /// integer comparisons replace string comparisons.
    pub(crate) fn of_codes(slice: &BlockSlice<'_>, codes: &[u32]) -> ZoneMap {
        let DenseValues::Text(values) = &slice.values else { unreachable!("codes belong to text blocks") };
        assert_eq!(values.len(), codes.len(), "one code per non-null value");
        let positions = min_max(&(0..codes.len()).collect::<Vec<usize>>(), |&a, &b| codes[a].cmp(&codes[b]));
        let (min, max) = match positions {
            Some((lo, hi)) => (text_bound(values[lo]), text_bound(values[hi])),
            None => (None, None),
        };
        ZoneMap { null_count: slice.null_count as u64, min, max }
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.null_count.to_le_bytes());
        let flags = (self.min.is_some() as u8 * FLAG_MIN) | (self.max.is_some() as u8 * FLAG_MAX);
        out.push(flags);
        for bound in [&self.min, &self.max].into_iter().flatten() {
            put_bound(out, bound);
        }
    }

    pub(crate) fn decode(r: &mut ByteReader<'_>, ty: ColumnType) -> Result<ZoneMap, String> {
        let null_count = r.u64().map_err(|e| e.to_string())?;
        let flags = r.u8().map_err(|e| e.to_string())?;
        if flags & !(FLAG_MIN | FLAG_MAX) != 0 || (flags != 0 && ty == ColumnType::Uuid) {
            return Err(format!("bad zone map flags {flags:#x}"));
        }
        let min = if flags & FLAG_MIN != 0 { Some(get_bound(r, ty)?) } else { None };
        let max = if flags & FLAG_MAX != 0 { Some(get_bound(r, ty)?) } else { None };
        Ok(ZoneMap { null_count, min, max })
    }
}

impl ZoneMap {
    /// Orders `a` against `b` in the order min/max were taken in (floats by `total_cmp`, text
    /// byte-wise), for a scan comparing a query's literal with a bound; `None` for values of
    /// different or unordered types (bool, uuid), which prune nothing.
    pub fn compare(a: &Value, b: &Value) -> Option<Ordering> {
        match (a, b) {
            (Value::Int64(a), Value::Int64(b)) | (Value::Timestamp(a), Value::Timestamp(b)) => Some(a.cmp(b)),
            (Value::Float64(a), Value::Float64(b)) => Some(a.total_cmp(b)),
            (Value::Text(a), Value::Text(b)) => Some(a.as_bytes().cmp(b.as_bytes())),
            _ => None,
        }
    }
}

fn min_max<T: Copy>(values: &[T], cmp: impl Fn(&T, &T) -> Ordering) -> Option<(T, T)> {
    let (&first, rest) = values.split_first()?;
    Some(rest.iter().fold((first, first), |(lo, hi), &v| {
        (if cmp(&v, &lo).is_lt() { v } else { lo }, if cmp(&v, &hi).is_gt() { v } else { hi })
    }))
}

fn split<T>(bounds: Option<(T, T)>, wrap: impl Fn(T) -> Value) -> (Option<Value>, Option<Value>) {
    bounds.map_or((None, None), |(lo, hi)| (Some(wrap(lo)), Some(wrap(hi))))
}

fn text_bound(bytes: &[u8]) -> Option<Value> {
    let text = std::str::from_utf8(bytes).ok()?;
    (text.len() <= ZONE_TEXT_BYTES_MAX).then(|| Value::Text(text.to_string()))
}

fn put_bound(out: &mut Vec<u8>, bound: &Value) {
    match bound {
        Value::Bool(b) => out.push(*b as u8),
        Value::Int64(x) | Value::Timestamp(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Float64(x) => out.extend_from_slice(&x.to_bits().to_le_bytes()),
        Value::Text(s) => {
            assert!(s.len() <= ZONE_TEXT_BYTES_MAX, "zone map text bound too long");
            out.extend_from_slice(&(s.len() as u16).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        Value::Null | Value::Uuid(_) => unreachable!("zone maps hold no null or uuid bounds"),
    }
}

fn get_bound(r: &mut ByteReader<'_>, ty: ColumnType) -> Result<Value, String> {
    let e = |e: lookback_common::ReadError| e.to_string();
    Ok(match ty {
        ColumnType::Bool => match r.u8().map_err(e)? {
            0 => Value::Bool(false),
            1 => Value::Bool(true),
            other => return Err(format!("bad bool bound {other}")),
        },
        ColumnType::Int64 => Value::Int64(r.i64().map_err(e)?),
        ColumnType::Timestamp => Value::Timestamp(r.i64().map_err(e)?),
        ColumnType::Float64 => Value::Float64(f64::from_bits(r.u64().map_err(e)?)),
        ColumnType::Text => {
            let bytes = r.bytes_u16_len().map_err(e)?;
            if bytes.len() > ZONE_TEXT_BYTES_MAX {
                return Err(format!("text bound of {} bytes", bytes.len()));
            }
            let text = std::str::from_utf8(bytes).map_err(|_| "text bound is not UTF-8")?;
            Value::Text(text.to_string())
        }
        ColumnType::Uuid => return Err("uuid columns have no bounds".into()),
    })
}
