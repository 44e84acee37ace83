//! The payload of a WAL record: one admitted batch for one table, after deduplication, plus
//! what recovery needs to rebuild the producer sequence table and the dedup window.
//!
//! ```text
//! u8 kind (1 = batch) | u8 reserved(0) | u16 table_len | table name (UTF-8)
//! u64 producer_id | u64 seq | u64 ingest_unix_ms | batch (lookback-common batch codec) to the end
//! ```

use lookback_common::{decode_batch, encode_batch, Batch, ByteReader, DecodeLimits, Schema};

const KIND_BATCH: u8 = 1;

#[derive(Debug, Clone, PartialEq)]
pub struct BatchRecord {
    pub table: String,
    pub producer_id: u64,
    pub seq: u64,
    pub ingest_unix_ms: u64,
    pub batch: Batch,
}

/// The fixed fields of a record, decoded before the batch (whose schema depends on the table).
pub struct RecordHeader<'a> {
    pub table: &'a str,
    pub producer_id: u64,
    pub seq: u64,
    pub ingest_unix_ms: u64,
    pub batch_bytes: &'a [u8],
}

pub fn encode(table: &str, producer_id: u64, seq: u64, ingest_unix_ms: u64, batch: &Batch) -> Vec<u8> {
    encode_into(Vec::new(), table, producer_id, seq, ingest_unix_ms, batch)
}

/// [`encode`] into `out` (cleared first), so a buffer can be reused.
pub fn encode_into(mut out: Vec<u8>, table: &str, producer_id: u64, seq: u64, ingest_unix_ms: u64, batch: &Batch) -> Vec<u8> {
    out.clear();
    out.reserve(32 + table.len() + batch.heap_bytes() + batch.columns().len() * 8);
    out.push(KIND_BATCH);
    out.push(0);
    lookback_common::bytes::put_bytes_u16_len(&mut out, table.as_bytes());
    for v in [producer_id, seq, ingest_unix_ms] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    encode_batch(batch, &mut out);
    out
}

pub fn decode_header(payload: &[u8]) -> Result<RecordHeader<'_>, String> {
    let mut r = ByteReader::new(payload);
    let kind = r.u8().map_err(|e| e.to_string())?;
    if kind != KIND_BATCH {
        return Err(format!("unknown wal record kind {kind}"));
    }
    let _reserved = r.u8().map_err(|e| e.to_string())?;
    let table = r.bytes_u16_len().map_err(|e| e.to_string())?;
    let table = std::str::from_utf8(table).map_err(|_| "table name is not UTF-8".to_string())?;
    let fields = (|| Ok::<_, lookback_common::ReadError>((r.u64()?, r.u64()?, r.u64()?)))();
    let (producer_id, seq, ingest_unix_ms) = fields.map_err(|e| e.to_string())?;
    let batch_bytes = &payload[r.position()..];
    Ok(RecordHeader { table, producer_id, seq, ingest_unix_ms, batch_bytes })
}

/// Decodes the batch of a record whose header named a table with `schema`. WAL batches were
/// validated at ingest, so limits here only guard against corruption that passed the CRC.
pub fn decode_record_batch(header: &RecordHeader<'_>, schema: &Schema) -> Result<Batch, String> {
    let limits = DecodeLimits { rows_max: usize::MAX >> 1, text_value_bytes_max: usize::MAX >> 1 };
    decode_batch(header.batch_bytes, schema, &limits).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lookback_common::BatchBuilder;

    #[test]
    fn roundtrip() {
        let schema = Schema::events();
        let batch = BatchBuilder::new(&schema, 0).finish().unwrap();
        let bytes = encode("events", 5, 6, 7, &batch);
        let h = decode_header(&bytes).unwrap();
        assert_eq!((h.table, h.producer_id, h.seq, h.ingest_unix_ms), ("events", 5, 6, 7));
        assert_eq!(decode_record_batch(&h, &schema).unwrap(), batch);
        for len in 0..bytes.len() {
            let ok = decode_header(&bytes[..len]).and_then(|h| decode_record_batch(&h, &schema));
            assert!(ok.is_err());
        }
    }
}
