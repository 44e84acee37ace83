//! Encodings of fixed-width column types: bool, int64/timestamp, float64, uuid.
//!
//! - bool, plain: bits LSB first.
//! - int64/timestamp, FOR planes: `i64 min`, then byte planes of `value - min` (wrapping, u64).
//!   Best for unordered values in a narrow range.
//! - int64/timestamp, delta planes: `i64 first`, then byte planes of
//!   `zigzag(value[i] - value[i-1])` for `i >= 1` (wrapping). Best for timestamps sorted by
//!   device then time: deltas inside a device run are small and positive.
//! - float64, plain: IEEE-754 bits, u64 LE each (NaN payloads and -0.0 survive).
//! - uuid, plain: the 16 bytes.
//!
//! All counts are the block's non-null count, already bounded by the caller.

use super::encoding::{
    get_bits, get_planes, invalid, put_bits, put_planes, unzigzag, zigzag, Invalid,
    ENCODING_DELTA_PLANES, ENCODING_FOR_PLANES,
};
use lookback_common::ByteReader;

pub(crate) fn encode_bools(values: &[bool]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len().div_ceil(8));
    put_bits(&mut out, values);
    out
}

pub(crate) fn decode_bools(r: &mut ByteReader<'_>, count: usize) -> Result<Vec<bool>, Invalid> {
    get_bits(r, count)
}

/// Both integer candidates.
pub(crate) fn encode_ints(values: &[i64]) -> Vec<(u8, Vec<u8>)> {
    vec![
        (ENCODING_FOR_PLANES, encode_for_planes(values)),
        (ENCODING_DELTA_PLANES, encode_delta_planes(values)),
    ]
}

fn encode_for_planes(values: &[i64]) -> Vec<u8> {
    let min = values.iter().copied().min().unwrap_or(0);
    let mut out = Vec::with_capacity(9 + values.len() * 8);
    out.extend_from_slice(&min.to_le_bytes());
    let offsets: Vec<u64> = values.iter().map(|&v| v.wrapping_sub(min) as u64).collect();
    put_planes(&mut out, &offsets);
    out
}

fn encode_delta_planes(values: &[i64]) -> Vec<u8> {
    let first = values.first().copied().unwrap_or(0);
    let mut out = Vec::with_capacity(9 + values.len() * 8);
    out.extend_from_slice(&first.to_le_bytes());
    let deltas: Vec<u64> = values.windows(2).map(|w| zigzag(w[1].wrapping_sub(w[0]))).collect();
    put_planes(&mut out, &deltas);
    out
}

pub(crate) fn decode_ints(
    r: &mut ByteReader<'_>,
    encoding: u8,
    count: usize,
) -> Result<Vec<i64>, Invalid> {
    let base = r.i64()?;
    match encoding {
        ENCODING_FOR_PLANES => {
            let offsets = get_planes(r, count)?;
            Ok(offsets.into_iter().map(|o| base.wrapping_add(o as i64)).collect())
        }
        ENCODING_DELTA_PLANES => {
            let deltas = get_planes(r, count.saturating_sub(1))?;
            let mut values = Vec::with_capacity(count);
            if count > 0 {
                values.push(base);
            }
            let mut last = base;
            for d in deltas {
                last = last.wrapping_add(unzigzag(d));
                values.push(last);
            }
            Ok(values)
        }
        other => invalid(format!("unknown integer encoding {other}")),
    }
}

pub(crate) fn encode_floats(values: &[f64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_bits().to_le_bytes()).collect()
}

pub(crate) fn decode_floats(r: &mut ByteReader<'_>, count: usize) -> Result<Vec<f64>, Invalid> {
    let bytes = r.bytes(count.saturating_mul(8))?;
    Ok(bytes
        .chunks_exact(8)
        .map(|c| f64::from_bits(u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))))
        .collect())
}

pub(crate) fn decode_uuids(r: &mut ByteReader<'_>, count: usize) -> Result<Vec<[u8; 16]>, Invalid> {
    let bytes = r.bytes(count.saturating_mul(16))?;
    Ok(bytes.chunks_exact(16).map(|c| c.try_into().unwrap_or([0; 16])).collect())
}
