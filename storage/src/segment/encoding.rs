//! Column block payloads: the uncompressed ("raw") bytes of one column of one block.
//!
//! Raw layout: `[validity][values]`. Validity is present only when the block has nulls:
//! `ceil(rows / 8)` bytes, bit `i` (LSB first) set when row `i` is not null, unused high bits of
//! the last byte zero. Values are *dense*: only non-null rows are stored, in row order, in the
//! encoding named by the footer's encoding id. The writer builds every candidate encoding that
//! applies to the column type and keeps the one that is smallest after compression.
//!
//! Shared building blocks live here: byte planes (fixed-width integers split into one plane per
//! byte, so zstd sees the mostly-zero high bytes as long runs), zigzag, and validity. Decoders
//! trust nothing: every count is bounded by the block's row count or the bytes left.

use super::dictionary::TextDictionary;
use super::{numeric, text};
use lookback_common::{ByteReader, Column, ColumnType, ColumnValues, ReadError, TextValues};

/// Encoding ids, stored in the footer. Never renumber.
pub(crate) const ENCODING_PLAIN: u8 = 1;
pub(crate) const ENCODING_FOR_PLANES: u8 = 2;
pub(crate) const ENCODING_DELTA_PLANES: u8 = 3;
pub(crate) const ENCODING_DICT: u8 = 4;
pub(crate) const ENCODING_DICT_RLE: u8 = 5;
pub(crate) const ENCODING_SEGMENT_CODES: u8 = 6;
pub(crate) const ENCODING_SEGMENT_CODES_RLE: u8 = 7;

/// Compression ids, stored in the footer. Never renumber.
pub(crate) const COMPRESSION_NONE: u8 = 0;
pub(crate) const COMPRESSION_ZSTD: u8 = 1;

/// Why a payload does not decode; the reader adds path and offset.
#[derive(Debug)]
pub(crate) struct Invalid(pub String);

impl From<ReadError> for Invalid {
    fn from(e: ReadError) -> Self {
        Invalid(e.to_string())
    }
}

pub(crate) fn invalid<T>(reason: impl Into<String>) -> Result<T, Invalid> {
    Err(Invalid(reason.into()))
}

/// The non-null values of one column block, in row order.
pub(crate) enum DenseValues<'a> {
    Bool(Vec<bool>),
    Int(Vec<i64>),
    Float(Vec<f64>),
    Text(Vec<&'a [u8]>),
    Uuid(Vec<[u8; 16]>),
}

/// One column of one block, ready to encode.
pub(crate) struct BlockSlice<'a> {
    pub null_count: usize,
    /// Present only when `null_count > 0`.
    pub validity: Option<Vec<bool>>,
    pub values: DenseValues<'a>,
}

/// Every applicable (encoding id, raw bytes) candidate for `slice`, validity included.
/// `segment_codes` are the codes of the slice's non-null values in the column's segment
/// dictionary, when it has one (then only the segment-code encodings are offered).
pub(crate) fn encode_candidates(
    slice: &BlockSlice<'_>,
    dictionary_values_max: usize,
    segment_codes: Option<&[u32]>,
) -> Vec<(u8, Vec<u8>)> {
    let payloads = match (&slice.values, segment_codes) {
        (DenseValues::Text(_), Some(codes)) => text::encode_segment_codes(codes),
        (DenseValues::Bool(v), _) => vec![(ENCODING_PLAIN, numeric::encode_bools(v))],
        (DenseValues::Int(v), _) => numeric::encode_ints(v),
        (DenseValues::Float(v), _) => vec![(ENCODING_PLAIN, numeric::encode_floats(v))],
        (DenseValues::Uuid(v), _) => vec![(ENCODING_PLAIN, v.concat())],
        (DenseValues::Text(v), None) => text::encode_texts(v, dictionary_values_max),
    };
    let mut validity = Vec::new();
    if let Some(v) = &slice.validity {
        put_bits(&mut validity, v);
    }
    payloads
        .into_iter()
        .map(|(id, payload)| {
            let mut raw = Vec::with_capacity(validity.len() + payload.len());
            raw.extend_from_slice(&validity);
            raw.extend_from_slice(&payload);
            (id, raw)
        })
        .collect()
}

/// Whether `encoding` is one this version writes for `ty`.
pub(crate) fn encoding_supported(ty: ColumnType, encoding: u8) -> bool {
    match ty {
        ColumnType::Bool | ColumnType::Float64 | ColumnType::Uuid => encoding == ENCODING_PLAIN,
        ColumnType::Int64 | ColumnType::Timestamp => {
            matches!(encoding, ENCODING_FOR_PLANES | ENCODING_DELTA_PLANES)
        }
        ColumnType::Text => matches!(
            encoding,
            ENCODING_PLAIN
                | ENCODING_DICT
                | ENCODING_DICT_RLE
                | ENCODING_SEGMENT_CODES
                | ENCODING_SEGMENT_CODES_RLE
        ),
    }
}

/// Whether `encoding` holds codes into the column's segment dictionary.
pub(crate) fn uses_segment_dictionary(encoding: u8) -> bool {
    matches!(encoding, ENCODING_SEGMENT_CODES | ENCODING_SEGMENT_CODES_RLE)
}

/// Decodes raw bytes of one column block into a full column of `rows` rows (null slots hold
/// zero / empty values, as in every [`Column`]). `segment_dictionary` is the column's segment
/// dictionary, needed by the segment-code encodings.
pub(crate) fn decode_block(
    ty: ColumnType,
    encoding: u8,
    raw: &[u8],
    rows: usize,
    null_count: usize,
    segment_dictionary: Option<&TextDictionary>,
) -> Result<Column, Invalid> {
    if !encoding_supported(ty, encoding) {
        return invalid(format!("encoding {encoding} is not valid for a {} column", ty.name()));
    }
    let Some(non_null) = rows.checked_sub(null_count) else {
        return invalid(format!("null count {null_count} exceeds {rows} rows"));
    };
    let mut r = ByteReader::new(raw);
    let validity = if null_count > 0 { Some(get_validity(&mut r, rows, null_count)?) } else { None };
    let values = match ty {
        ColumnType::Bool => ColumnValues::Bool(numeric::decode_bools(&mut r, non_null)?),
        ColumnType::Int64 => ColumnValues::Int64(numeric::decode_ints(&mut r, encoding, non_null)?),
        ColumnType::Timestamp => {
            ColumnValues::Timestamp(numeric::decode_ints(&mut r, encoding, non_null)?)
        }
        ColumnType::Float64 => ColumnValues::Float64(numeric::decode_floats(&mut r, non_null)?),
        ColumnType::Uuid => ColumnValues::Uuid(numeric::decode_uuids(&mut r, non_null)?),
        ColumnType::Text => {
            ColumnValues::Text(text::decode_texts(&mut r, encoding, non_null, segment_dictionary)?)
        }
    };
    if !r.is_empty() {
        return invalid(format!("{} trailing bytes after values", r.remaining()));
    }
    Ok(Column::new(expand(values, validity.as_deref()), validity))
}

/// Decodes raw bytes of one text column block in a segment-code encoding into one code per
/// row (code 0 in null rows) and the validity as stored (bits LSB first, set when not null),
/// without expanding the text.
pub(crate) fn decode_block_codes(
    encoding: u8,
    raw: &[u8],
    rows: usize,
    null_count: usize,
    dictionary_len: usize,
) -> Result<(Vec<u32>, Option<Vec<u8>>), Invalid> {
    let Some(non_null) = rows.checked_sub(null_count) else {
        return invalid(format!("null count {null_count} exceeds {rows} rows"));
    };
    let mut r = ByteReader::new(raw);
    let validity = if null_count > 0 { Some(get_validity_bits(&mut r, rows, null_count)?) } else { None };
    let dense = text::decode_segment_codes(&mut r, encoding, non_null, dictionary_len)?;
    if !r.is_empty() {
        return invalid(format!("{} trailing bytes after values", r.remaining()));
    }
    let codes = match &validity {
        None => dense,
        Some(bits) => spread_dense(&dense, rows, |i| bits[i / 8] >> (i % 8) & 1 == 1, 0),
    };
    Ok((codes, validity))
}

/// The validity of `rows` rows as stored (packed bits), checked like [`get_validity`].
fn get_validity_bits(r: &mut ByteReader<'_>, rows: usize, null_count: usize) -> Result<Vec<u8>, Invalid> {
    let bytes = r.bytes(rows.div_ceil(8))?;
    let tail_bits = rows & 7;
    if tail_bits != 0 && bytes.last().is_some_and(|&b| b >> tail_bits != 0) {
        return invalid("nonzero padding bits");
    }
    let set: usize = bytes.iter().map(|b| b.count_ones() as usize).sum();
    if rows - set != null_count {
        return invalid(format!("validity has {} nulls, footer says {null_count}", rows - set));
    }
    Ok(bytes.to_vec())
}

/// Spreads dense values over all rows, putting the zero value in null slots.
fn expand(values: ColumnValues, validity: Option<&[bool]>) -> ColumnValues {
    let Some(validity) = validity else { return values };
    fn spread<T: Copy>(dense: Vec<T>, validity: &[bool], zero: T) -> Vec<T> {
        spread_dense(&dense, validity.len(), |i| validity[i], zero)
    }
    match values {
        ColumnValues::Bool(v) => ColumnValues::Bool(spread(v, validity, false)),
        ColumnValues::Int64(v) => ColumnValues::Int64(spread(v, validity, 0)),
        ColumnValues::Timestamp(v) => ColumnValues::Timestamp(spread(v, validity, 0)),
        ColumnValues::Float64(v) => ColumnValues::Float64(spread(v, validity, 0.0)),
        ColumnValues::Uuid(v) => ColumnValues::Uuid(spread(v, validity, [0; 16])),
        ColumnValues::Text(t) => ColumnValues::Text(spread_text(t, validity)),
    }
}

/// `rows` values: row `i` takes the next value of `dense` where `valid(i)`, `zero` elsewhere.
/// Branch-free (a null costs what a value costs), so mixed validity does not stall on
/// mispredictions. `dense` may be shorter than the valid rows (corrupt input): the missing
/// values read as `zero`; callers check the counts.
pub(crate) fn spread_dense<T: Copy>(dense: &[T], rows: usize, valid: impl Fn(usize) -> bool, zero: T) -> Vec<T> {
    let mut padded = Vec::with_capacity(dense.len() + 1);
    padded.extend_from_slice(dense);
    padded.push(zero);
    let last = dense.len();
    let mut out = Vec::with_capacity(rows);
    let mut next = 0usize;
    for i in 0..rows {
        let ok = valid(i);
        let value = padded[next.min(last)];
        out.push(if ok { value } else { zero });
        next += ok as usize;
    }
    out
}

/// Null rows are empty strings, so the bytes stay; only offsets repeat at null rows.
fn spread_text(dense: TextValues, validity: &[bool]) -> TextValues {
    assert!(dense.codes.is_none(), "segment blocks decode to plain text");
    let mut offsets = Vec::with_capacity(validity.len() + 1);
    offsets.push(0);
    let mut next = dense.offsets.iter().skip(1);
    let mut last = 0;
    for &ok in validity {
        if ok {
            last = next.next().copied().unwrap_or(last);
        }
        offsets.push(last);
    }
    TextValues { offsets, data: dense.data, codes: None }
}

/// Appends `bits` packed LSB first.
pub(crate) fn put_bits(out: &mut Vec<u8>, bits: &[bool]) {
    for chunk in bits.chunks(8) {
        out.push(chunk.iter().enumerate().fold(0u8, |b, (i, &bit)| b | ((bit as u8) << i)));
    }
}

/// Reads `count` bits packed LSB first; unused high bits of the last byte must be zero.
pub(crate) fn get_bits(r: &mut ByteReader<'_>, count: usize) -> Result<Vec<bool>, Invalid> {
    let bytes = r.bytes(count.div_ceil(8))?;
    let tail_bits = count & 7;
    if tail_bits != 0 && bytes.last().is_some_and(|&b| b >> tail_bits != 0) {
        return invalid("nonzero padding bits");
    }
    Ok((0..count).map(|i| bytes[i / 8] >> (i % 8) & 1 == 1).collect())
}

fn get_validity(r: &mut ByteReader<'_>, rows: usize, null_count: usize) -> Result<Vec<bool>, Invalid> {
    let validity = get_bits(r, rows)?;
    let nulls = validity.iter().filter(|ok| !**ok).count();
    if nulls != null_count {
        return invalid(format!("validity has {nulls} nulls, footer says {null_count}"));
    }
    Ok(validity)
}

/// Appends `u8 width` (bytes of the widest value, 0..=8) and `width` planes of `values.len()`
/// bytes each; plane `k` holds byte `k` (little-endian) of every value.
pub(crate) fn put_planes(out: &mut Vec<u8>, values: &[u64]) {
    let widest = values.iter().fold(0u64, |acc, &v| acc | v);
    let width = (64 - widest.leading_zeros()).div_ceil(8) as usize;
    out.push(width as u8);
    out.reserve(width * values.len());
    for k in 0..width {
        out.extend(values.iter().map(|&v| (v >> (8 * k)) as u8));
    }
}

/// Reads what [`put_planes`] wrote for `count` values.
pub(crate) fn get_planes(r: &mut ByteReader<'_>, count: usize) -> Result<Vec<u64>, Invalid> {
    let planes = read_planes(r, count, 8)?;
    Ok(join_planes(&planes, count))
}

/// [`get_planes`] for values that must fit in 32 bits (dictionary codes): wider planes are
/// invalid, and the values are built as `u32` directly.
pub(crate) fn get_planes_u32(r: &mut ByteReader<'_>, count: usize) -> Result<Vec<u32>, Invalid> {
    let planes = read_planes(r, count, 4)?;
    Ok(join_planes(&planes, count))
}

/// The width byte and the planes of `count` values at most `width_max` bytes wide.
fn read_planes<'a>(r: &mut ByteReader<'a>, count: usize, width_max: usize) -> Result<Vec<&'a [u8]>, Invalid> {
    let width = r.u8()? as usize;
    if width > width_max {
        return invalid(format!("plane width {width} exceeds {width_max}"));
    }
    if count.saturating_mul(width) > r.remaining() {
        return invalid(format!("{width} planes of {count} values exceed the payload"));
    }
    (0..width).map(|_| Ok(r.bytes(count)?)).collect()
}

/// Values whose byte `k` is `planes[k][i]`. Works in chunks that stay in the L1 cache while
/// every plane is ORed in (one pass over memory instead of one per plane).
fn join_planes<T>(planes: &[&[u8]], count: usize) -> Vec<T>
where
    T: Copy + Default + From<u8> + std::ops::Shl<usize, Output = T> + std::ops::BitOrAssign,
{
    const CHUNK_VALUES: usize = 2048;
    let mut values = vec![T::default(); count];
    for (c, chunk) in values.chunks_mut(CHUNK_VALUES).enumerate() {
        let (start, len) = (c * CHUNK_VALUES, chunk.len());
        for (k, plane) in planes.iter().enumerate() {
            for (v, &b) in chunk.iter_mut().zip(&plane[start..start + len]) {
                *v |= T::from(b) << (8 * k);
            }
        }
    }
    values
}

pub(crate) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub(crate) fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_dense_puts_values_in_valid_rows() {
        let valid = [true, false, false, true, true, false];
        let out = spread_dense(&[7u32, 8, 9], valid.len(), |i| valid[i], 0);
        assert_eq!(out, vec![7, 0, 0, 8, 9, 0]);
        // Fewer values than valid rows (a corrupt block the caller rejects): zeros, no panic.
        assert_eq!(spread_dense(&[7u32], valid.len(), |i| valid[i], 0), vec![7, 0, 0, 0, 0, 0]);
        assert_eq!(spread_dense::<u32>(&[], 3, |_| true, 5), vec![5, 5, 5]);
    }

    #[test]
    fn planes_and_zigzag_roundtrip() {
        let vals = [0u64, 1, 255, 256, u64::MAX, 1 << 40];
        let mut out = Vec::new();
        put_planes(&mut out, &vals);
        assert_eq!(get_planes(&mut ByteReader::new(&out), vals.len()).unwrap(), vals);
        for v in [0i64, -1, 1, i64::MIN, i64::MAX] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
    }

    #[test]
    fn bits_roundtrip_and_reject_padding() {
        let bits = [true, false, true, true, false, false, false, true, true];
        let mut out = Vec::new();
        put_bits(&mut out, &bits);
        assert_eq!(get_bits(&mut ByteReader::new(&out), bits.len()).unwrap(), bits);
        assert!(get_bits(&mut ByteReader::new(&[0xff, 0xff]), 9).is_err());
    }
}
