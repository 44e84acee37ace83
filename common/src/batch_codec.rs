//! The columnar batch encoding shared by the ingest protocol and the WAL.
//!
//! One encoding for both means a batch received from a producer is validated once and its bytes
//! could be logged as they came; decoding is a handful of bounds checks and `memcpy`s per
//! column, never per-row parsing. Layout (all little-endian, see docs/format.md):
//!
//! ```text
//! u32 rows | u16 columns | u16 reserved(0)
//! per column:
//!   u8 type code | u8 flags (bit 0: validity present) | u8 encoding (0 = plain) | u8 reserved(0)
//!   [validity bitmap: ceil(rows/8) bytes, bit i (LSB first) = 1 when row i is not null]
//!   values:
//!     bool:              bitmap, ceil(rows/8) bytes
//!     int64, timestamp:  rows × i64
//!     float64:           rows × f64 (IEEE 754 bits)
//!     uuid:              rows × 16 bytes
//!     text, encoding 0:  rows × u32 end offsets, then end_offset[rows-1] bytes of UTF-8
//!     text, encoding 1/2 (dictionary): u32 entries, entries × u32 end offsets, the entries'
//!                        UTF-8 bytes, then rows × code (u16 for encoding 1, u32 for 2); every
//!                        code (null rows' too) is below `entries`, and entries >= 1 when rows > 0
//! ```
//!
//! [`encode_batch`] writes each column in the form it is held in; [`encode_batch_compact`]
//! (what producers send) turns repetitive text columns into dictionaries first.
//!
//! Decoding is defensive: every length is bounded by [`DecodeLimits`] and by the bytes actually
//! present, text must be UTF-8 with offsets on character boundaries, and the batch must match
//! the target schema (types, column count, no nulls in non-nullable columns).

use crate::batch::{Batch, Column, ColumnValues, TextValues};
use crate::bytes::{ByteReader, ReadError};
use crate::schema::{ColumnType, Schema};
use thiserror::Error;

const FLAG_VALIDITY: u8 = 1;
const ENCODING_PLAIN: u8 = 0;
const ENCODING_DICTIONARY_U16: u8 = 1;
const ENCODING_DICTIONARY_U32: u8 = 2;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CodecError {
    #[error("malformed batch: {0}")]
    Malformed(String),
    #[error("schema mismatch: {0}")]
    SchemaMismatch(String),
    #[error("value too large: {0}")]
    ValueTooLarge(String),
    #[error("batch too large: {rows} rows exceeds the limit of {rows_max}")]
    TooManyRows { rows: usize, rows_max: usize },
}

impl From<ReadError> for CodecError {
    fn from(e: ReadError) -> Self {
        CodecError::Malformed(e.to_string())
    }
}

/// Limits enforced while decoding untrusted batches.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    pub rows_max: usize,
    pub text_value_bytes_max: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            rows_max: 1 << 20,
            text_value_bytes_max: 1 << 20,
        }
    }
}

pub fn encode_batch(batch: &Batch, out: &mut Vec<u8>) {
    put_batch_header(batch, out);
    for col in batch.columns() {
        encode_column(col, out);
    }
}

/// Rows (u32), columns (u16) and a reserved u16, little-endian (docs/ingest-protocol.md §6).
fn put_batch_header(batch: &Batch, out: &mut Vec<u8>) {
    let rows = u32::try_from(batch.rows()).expect("batch rows exceed u32::MAX");
    out.extend_from_slice(&rows.to_le_bytes());
    out.extend_from_slice(&(batch.columns().len() as u16).to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
}

/// [`encode_batch`], with every plain text column that repeats enough values written as a
/// dictionary (the form producers should send: smaller on the wire and in the WAL, and the
/// server decodes and flushes each distinct value once).
pub fn encode_batch_compact(batch: &Batch, out: &mut Vec<u8>) {
    put_batch_header(batch, out);
    for col in batch.columns() {
        let dictionary = match &col.values {
            ColumnValues::Text(t) => t.to_dictionary(col.validity.as_deref()),
            _ => None,
        };
        match dictionary {
            Some(d) => encode_column(
                &Column::new(ColumnValues::Text(d), col.validity.clone()),
                out,
            ),
            None => encode_column(col, out),
        }
    }
}

fn encode_column(col: &Column, out: &mut Vec<u8>) {
    out.push(col.values.column_type().code());
    out.push(if col.validity.is_some() {
        FLAG_VALIDITY
    } else {
        0
    });
    let encoding = match &col.values {
        ColumnValues::Text(t) if t.codes.is_some() && t.entries() <= 1 << 16 => {
            ENCODING_DICTIONARY_U16
        }
        ColumnValues::Text(t) if t.codes.is_some() => ENCODING_DICTIONARY_U32,
        _ => ENCODING_PLAIN,
    };
    out.push(encoding);
    out.push(0);
    if let Some(v) = &col.validity {
        put_bitmap(v, out);
    }
    match &col.values {
        ColumnValues::Bool(v) => put_bitmap(v, out),
        ColumnValues::Int64(v) | ColumnValues::Timestamp(v) => {
            out.reserve(v.len() * 8);
            v.iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
        }
        ColumnValues::Float64(v) => {
            out.reserve(v.len() * 8);
            v.iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
        }
        ColumnValues::Uuid(v) => {
            out.reserve(v.len() * 16);
            v.iter().for_each(|x| out.extend_from_slice(x));
        }
        ColumnValues::Text(t) => {
            if t.codes.is_some() {
                out.extend_from_slice(&(t.entries() as u32).to_le_bytes());
            }
            out.reserve(t.entries() * 4 + t.data.len());
            t.offsets[1..]
                .iter()
                .for_each(|o| out.extend_from_slice(&o.to_le_bytes()));
            out.extend_from_slice(&t.data);
            match (&t.codes, encoding) {
                (Some(codes), ENCODING_DICTIONARY_U16) => codes
                    .iter()
                    .for_each(|&c| out.extend_from_slice(&(c as u16).to_le_bytes())),
                (Some(codes), _) => codes
                    .iter()
                    .for_each(|c| out.extend_from_slice(&c.to_le_bytes())),
                (None, _) => {}
            }
        }
    }
}

/// Packs bools LSB-first into bytes.
pub fn put_bitmap(bits: &[bool], out: &mut Vec<u8>) {
    for chunk in bits.chunks(8) {
        let mut byte = 0u8;
        for (i, &b) in chunk.iter().enumerate() {
            byte |= (b as u8) << i;
        }
        out.push(byte);
    }
}

/// Unpacks `rows` bools from an LSB-first bitmap. `bytes` must hold `ceil(rows/8)` bytes.
pub fn get_bitmap(bytes: &[u8], rows: usize) -> Vec<bool> {
    debug_assert!(bytes.len() >= rows.div_ceil(8));
    (0..rows)
        .map(|i| bytes[i / 8] >> (i % 8) & 1 == 1)
        .collect()
}

/// Decodes a batch and validates it against `schema`. The whole input must be consumed.
pub fn decode_batch(
    bytes: &[u8],
    schema: &Schema,
    limits: &DecodeLimits,
) -> Result<Batch, CodecError> {
    let mut r = ByteReader::new(bytes);
    let rows = r.u32()? as usize;
    if rows > limits.rows_max {
        return Err(CodecError::TooManyRows {
            rows,
            rows_max: limits.rows_max,
        });
    }
    let column_count = r.u16()? as usize;
    let _reserved = r.u16()?;
    if column_count != schema.columns.len() {
        return Err(CodecError::SchemaMismatch(format!(
            "table {} has {} columns, batch has {column_count}",
            schema.name,
            schema.columns.len()
        )));
    }
    let mut columns = Vec::with_capacity(column_count);
    for def in &schema.columns {
        let col =
            decode_column(&mut r, rows, def.ty, limits).map_err(|e| in_column(e, &def.name))?;
        columns.push(col);
    }
    if !r.is_empty() {
        return Err(CodecError::Malformed(format!(
            "{} trailing bytes after batch",
            r.remaining()
        )));
    }
    Batch::try_new(schema, columns).map_err(CodecError::SchemaMismatch)
}

fn in_column(e: CodecError, name: &str) -> CodecError {
    match e {
        CodecError::Malformed(m) => CodecError::Malformed(format!("column {name}: {m}")),
        CodecError::SchemaMismatch(m) => CodecError::SchemaMismatch(format!("column {name}: {m}")),
        CodecError::ValueTooLarge(m) => CodecError::ValueTooLarge(format!("column {name}: {m}")),
        other => other,
    }
}

fn decode_column(
    r: &mut ByteReader<'_>,
    rows: usize,
    expected: ColumnType,
    limits: &DecodeLimits,
) -> Result<Column, CodecError> {
    let code = r.u8()?;
    let flags = r.u8()?;
    let encoding = r.u8()?;
    let _reserved = r.u8()?;
    let ty = ColumnType::from_code(code)
        .ok_or_else(|| CodecError::Malformed(format!("unknown type code {code}")))?;
    if ty != expected {
        return Err(CodecError::SchemaMismatch(format!(
            "expected {}, batch has {}",
            expected.name(),
            ty.name()
        )));
    }
    let dictionary = ty == ColumnType::Text
        && matches!(encoding, ENCODING_DICTIONARY_U16 | ENCODING_DICTIONARY_U32);
    if flags & !FLAG_VALIDITY != 0 || (encoding != ENCODING_PLAIN && !dictionary) {
        return Err(CodecError::Malformed(format!(
            "unknown flags {flags:#x} or encoding {encoding} for a {} column",
            ty.name()
        )));
    }
    let validity = if flags & FLAG_VALIDITY != 0 {
        Some(get_bitmap(r.bytes(rows.div_ceil(8))?, rows))
    } else {
        None
    };
    let values = match ty {
        ColumnType::Bool => ColumnValues::Bool(get_bitmap(r.bytes(rows.div_ceil(8))?, rows)),
        ColumnType::Int64 => ColumnValues::Int64(get_i64s(r, rows)?),
        ColumnType::Timestamp => ColumnValues::Timestamp(get_i64s(r, rows)?),
        ColumnType::Float64 => ColumnValues::Float64(
            get_i64s(r, rows)?
                .into_iter()
                .map(|x| f64::from_bits(x as u64))
                .collect(),
        ),
        ColumnType::Uuid => ColumnValues::Uuid(
            r.bytes(checked_len(rows, 16)?)?
                .chunks_exact(16)
                .map(|c| <[u8; 16]>::try_from(c).expect("chunks_exact yields 16 bytes"))
                .collect(),
        ),
        ColumnType::Text if dictionary => {
            ColumnValues::Text(decode_dictionary(r, rows, encoding, limits)?)
        }
        ColumnType::Text => ColumnValues::Text(decode_text(r, rows, limits)?),
    };
    Ok(Column::new(
        values,
        validity.filter(|v| v.iter().any(|b| !b)),
    ))
}

fn checked_len(rows: usize, width: usize) -> Result<usize, CodecError> {
    rows.checked_mul(width)
        .ok_or_else(|| CodecError::Malformed("length overflow".into()))
}

fn get_i64s(r: &mut ByteReader<'_>, rows: usize) -> Result<Vec<i64>, CodecError> {
    let bytes = r.bytes(checked_len(rows, 8)?)?;
    Ok(bytes
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().expect("chunks_exact yields 8 bytes")))
        .collect())
}

/// A dictionary-encoded text column: its entries (validated like a plain column of that many
/// rows), then one code per row.
fn decode_dictionary(
    r: &mut ByteReader<'_>,
    rows: usize,
    encoding: u8,
    limits: &DecodeLimits,
) -> Result<TextValues, CodecError> {
    let entries = r.u32()? as usize;
    if entries > rows || (entries == 0 && rows > 0) {
        return Err(CodecError::Malformed(format!(
            "dictionary of {entries} entries for {rows} rows"
        )));
    }
    let mut text = decode_text(r, entries, limits)?;
    let codes: Vec<u32> = if encoding == ENCODING_DICTIONARY_U16 {
        r.bytes(checked_len(rows, 2)?)?
            .chunks_exact(2)
            .map(|c| u32::from(u16::from_le_bytes([c[0], c[1]])))
            .collect()
    } else {
        r.bytes(checked_len(rows, 4)?)?
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().expect("chunks_exact yields 4 bytes")))
            .collect()
    };
    if let Some(bad) = codes.iter().find(|&&c| c as usize >= entries) {
        return Err(CodecError::Malformed(format!(
            "dictionary code {bad} out of {entries} entries"
        )));
    }
    text.codes = Some(codes);
    Ok(text)
}

fn decode_text(
    r: &mut ByteReader<'_>,
    rows: usize,
    limits: &DecodeLimits,
) -> Result<TextValues, CodecError> {
    let ends = r.bytes(checked_len(rows, 4)?)?;
    let mut offsets = Vec::with_capacity(rows + 1);
    offsets.push(0u32);
    let mut prev = 0u32;
    for c in ends.chunks_exact(4) {
        let end = u32::from_le_bytes(c.try_into().expect("chunks_exact yields 4 bytes"));
        if end < prev {
            return Err(CodecError::Malformed(format!(
                "text offset {end} goes backwards from {prev}"
            )));
        }
        if (end - prev) as usize > limits.text_value_bytes_max {
            return Err(CodecError::ValueTooLarge(format!(
                "text value of {} bytes exceeds the limit of {}",
                end - prev,
                limits.text_value_bytes_max
            )));
        }
        offsets.push(end);
        prev = end;
    }
    let data = r.bytes(prev as usize)?;
    let text = std::str::from_utf8(data)
        .map_err(|e| CodecError::Malformed(format!("text is not UTF-8: {e}")))?;
    if let Some(bad) = offsets
        .iter()
        .find(|&&o| !text.is_char_boundary(o as usize))
    {
        return Err(CodecError::Malformed(format!(
            "text offset {bad} splits a UTF-8 character"
        )));
    }
    Ok(TextValues {
        offsets,
        data: data.to_vec(),
        codes: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{BatchBuilder, Value};

    fn sample() -> Batch {
        let schema = Schema::events();
        let mut b = BatchBuilder::new(&schema, 3);
        for i in 0..3u8 {
            let mut row = vec![
                Value::Uuid([i; 16]),
                Value::Text("app".into()),
                Value::Timestamp(1_700_000_000_000_000 + i as i64),
                Value::Text(if i == 0 { "click" } else { "install" }.into()),
            ];
            row.extend((4..14).map(|c| match c {
                11 if i == 2 => Value::Float64(4.99),
                11 => Value::Null,
                _ if i == 1 => Value::Null,
                _ => Value::Text(format!("v{c}-é")),
            }));
            b.push_row(&row).unwrap();
        }
        b.finish().unwrap()
    }

    #[test]
    fn roundtrip() {
        let batch = sample();
        let mut buf = Vec::new();
        encode_batch(&batch, &mut buf);
        let back = decode_batch(&buf, &Schema::events(), &DecodeLimits::default()).unwrap();
        assert_eq!(batch, back);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let mut buf = Vec::new();
        encode_batch(&sample(), &mut buf);
        for len in 0..buf.len() {
            assert!(
                decode_batch(&buf[..len], &Schema::events(), &DecodeLimits::default()).is_err()
            );
        }
    }

    #[test]
    fn limits_and_schema_are_enforced() {
        let mut buf = Vec::new();
        encode_batch(&sample(), &mut buf);
        let limits = DecodeLimits {
            rows_max: 2,
            text_value_bytes_max: 1024,
        };
        assert!(matches!(
            decode_batch(&buf, &Schema::events(), &limits),
            Err(CodecError::TooManyRows { .. })
        ));
        let limits = DecodeLimits {
            rows_max: 10,
            text_value_bytes_max: 4,
        };
        assert!(matches!(
            decode_batch(&buf, &Schema::events(), &limits),
            Err(CodecError::ValueTooLarge(_))
        ));
        let other = Schema::new(
            "t",
            vec![crate::schema::ColumnDef::new("a", ColumnType::Int64, false)],
            vec![],
            vec![],
        )
        .unwrap();
        assert!(matches!(
            decode_batch(&buf, &other, &DecodeLimits::default()),
            Err(CodecError::SchemaMismatch(_))
        ));
    }

    /// A one-text-column batch of `values` (None = null).
    fn text_batch(values: &[Option<&str>]) -> (Schema, Batch) {
        let schema = Schema::new(
            "t",
            vec![crate::schema::ColumnDef::new("s", ColumnType::Text, true)],
            vec![],
            vec![],
        )
        .unwrap();
        let mut b = BatchBuilder::new(&schema, values.len());
        for v in values {
            b.push_row(&[v.map_or(Value::Null, |s| Value::Text(s.into()))])
                .unwrap();
        }
        (schema.clone(), b.finish().unwrap())
    }

    #[test]
    fn compact_encoding_uses_dictionaries_and_roundtrips() {
        let values: Vec<Option<&str>> = (0..1000)
            .map(|i| {
                if i % 7 == 0 {
                    None
                } else {
                    Some(["ios", "android", "wéb"][i % 3])
                }
            })
            .collect();
        let (schema, batch) = text_batch(&values);
        let (mut plain, mut compact) = (Vec::new(), Vec::new());
        encode_batch(&batch, &mut plain);
        encode_batch_compact(&batch, &mut compact);
        assert!(
            compact.len() * 2 < plain.len(),
            "{} vs {}",
            compact.len(),
            plain.len()
        );
        let back = decode_batch(&compact, &schema, &DecodeLimits::default()).unwrap();
        assert_eq!(back, batch);
        let ColumnValues::Text(t) = &back.column(0).values else {
            panic!("text")
        };
        assert_eq!(t.entries(), 3, "null rows add no entry");
        // The WAL re-encodes the received form: the dictionary survives.
        let mut again = Vec::new();
        encode_batch(&back, &mut again);
        assert_eq!(again, compact);
        // Near-unique columns stay plain.
        let unique: Vec<String> = (0..100).map(|i| format!("id-{i}")).collect();
        let (_, batch) = text_batch(&unique.iter().map(|s| Some(s.as_str())).collect::<Vec<_>>());
        let ColumnValues::Text(t) = &batch.column(0).values else {
            panic!("text")
        };
        assert!(t.to_dictionary(None).is_none());
    }

    #[test]
    fn wide_dictionaries_use_u32_codes() {
        let owned: Vec<String> = (0..140_000).map(|i| format!("{}", i % 70_000)).collect();
        let (schema, batch) =
            text_batch(&owned.iter().map(|s| Some(s.as_str())).collect::<Vec<_>>());
        let mut buf = Vec::new();
        encode_batch_compact(&batch, &mut buf);
        assert_eq!(buf[10], ENCODING_DICTIONARY_U32);
        assert_eq!(
            decode_batch(&buf, &schema, &DecodeLimits::default()).unwrap(),
            batch
        );
    }

    #[test]
    fn malformed_dictionaries_are_errors() {
        let (schema, batch) = text_batch(&[Some("a"), Some("b"), Some("a"), Some("a")]);
        let mut good = Vec::new();
        encode_batch_compact(&batch, &mut good);
        assert_eq!(good[10], ENCODING_DICTIONARY_U16);
        let limits = DecodeLimits::default();
        // Layout: 8-byte batch header, 4-byte column header, u32 entries (2), 2 end offsets,
        // "ab", then 4 u16 codes.
        let entries_at = 12;
        let codes_at = entries_at + 4 + 8 + 2;
        assert_eq!(good.len(), codes_at + 8);
        let mut bad = good.clone();
        bad[codes_at + 2] = 2; // code 2 of 2 entries
        assert!(
            matches!(decode_batch(&bad, &schema, &limits), Err(CodecError::Malformed(m)) if m.contains("code 2"))
        );
        let mut bad = good.clone();
        bad[entries_at] = 5; // more entries than rows
        assert!(matches!(
            decode_batch(&bad, &schema, &limits),
            Err(CodecError::Malformed(_))
        ));
        let mut bad = good.clone();
        bad[entries_at] = 0; // no entries for 4 rows
        assert!(matches!(
            decode_batch(&bad, &schema, &limits),
            Err(CodecError::Malformed(_))
        ));
        let mut bad = good.clone();
        bad[10] = 3; // unknown encoding
        assert!(
            matches!(decode_batch(&bad, &schema, &limits), Err(CodecError::Malformed(m)) if m.contains("encoding 3"))
        );
        let mut bad = good.clone();
        bad[entries_at + 4 + 8] = 0xff; // entry bytes not UTF-8
        assert!(matches!(
            decode_batch(&bad, &schema, &limits),
            Err(CodecError::Malformed(_))
        ));
        for len in 0..good.len() {
            assert!(
                decode_batch(&good[..len], &schema, &limits).is_err(),
                "truncated at {len}"
            );
        }
        let tight = DecodeLimits {
            rows_max: 10,
            text_value_bytes_max: 0,
        };
        assert!(matches!(
            decode_batch(&good, &schema, &tight),
            Err(CodecError::ValueTooLarge(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn compact_roundtrips_random_text(values in proptest::collection::vec(
            proptest::option::of(proptest::sample::select(vec!["", "a", "bb", "é", "long value"])), 0..300)) {
            let (schema, batch) = text_batch(&values);
            let mut buf = Vec::new();
            encode_batch_compact(&batch, &mut buf);
            proptest::prop_assert_eq!(decode_batch(&buf, &schema, &DecodeLimits::default()).unwrap(), batch);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = decode_batch(&bytes, &Schema::events(), &DecodeLimits::default());
        }
    }
}
