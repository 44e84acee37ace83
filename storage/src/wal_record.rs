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

/// A record whose batch bytes are already in the payload (as a producer sent them, not encoded
/// again: for a 10,000-event batch that is one `memcpy` instead of half a millisecond of
/// encoding, inside the admission lock). The ingest time is written last, by [`Self::finish`],
/// because it is taken under that lock.
pub struct PendingRecord {
    payload: Vec<u8>,
    ingest_unix_ms_at: usize,
}

impl PendingRecord {
    /// `batch_bytes` must be a batch-codec encoding (it is logged as is).
    pub fn new(mut out: Vec<u8>, table: &str, producer_id: u64, seq: u64, batch_bytes: &[u8]) -> PendingRecord {
        out.clear();
        out.reserve(32 + table.len() + batch_bytes.len());
        put_header(&mut out, table, producer_id, seq, 0);
        let ingest_unix_ms_at = out.len() - 8;
        out.extend_from_slice(batch_bytes);
        PendingRecord { payload: out, ingest_unix_ms_at }
    }

    pub fn finish(mut self, ingest_unix_ms: u64) -> Vec<u8> {
        let at = self.ingest_unix_ms_at;
        self.payload[at..at + 8].copy_from_slice(&ingest_unix_ms.to_le_bytes());
        self.payload
    }

    /// The buffer back, for a record encoded another way.
    pub fn into_buffer(self) -> Vec<u8> {
        self.payload
    }
}

/// [`encode`] into `out` (cleared first), so a buffer can be reused.
pub fn encode_into(mut out: Vec<u8>, table: &str, producer_id: u64, seq: u64, ingest_unix_ms: u64, batch: &Batch) -> Vec<u8> {
    out.clear();
    out.reserve(32 + table.len() + batch.heap_bytes() + batch.columns().len() * 8);
    put_header(&mut out, table, producer_id, seq, ingest_unix_ms);
    encode_batch(batch, &mut out);
    out
}

fn put_header(out: &mut Vec<u8>, table: &str, producer_id: u64, seq: u64, ingest_unix_ms: u64) {
    out.push(KIND_BATCH);
    out.push(0);
    lookback_common::bytes::put_bytes_u16_len(out, table.as_bytes());
    for v in [producer_id, seq, ingest_unix_ms] {
        out.extend_from_slice(&v.to_le_bytes());
    }
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
    use lookback_common::{BatchBuilder, ColumnType, Value};

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

    #[test]
    fn a_pending_record_of_the_batch_bytes_equals_the_encoded_record() {
        let schema = Schema::events();
        let mut builder = BatchBuilder::new(&schema, 3);
        for i in 0..3u8 {
            let row: Vec<Value> = schema
                .columns
                .iter()
                .map(|c| match c.ty {
                    ColumnType::Uuid => Value::Uuid([i + 1; 16]),
                    ColumnType::Timestamp => Value::Timestamp(1_700_000_000_000_000 + i64::from(i)),
                    ColumnType::Float64 => Value::Float64(f64::from(i) * 0.5),
                    ColumnType::Text => Value::Text(format!("v{i}")),
                    _ => Value::Null,
                })
                .collect();
            builder.push_row(&row).unwrap();
        }
        let batch = builder.finish().unwrap();
        let mut batch_bytes = Vec::new();
        encode_batch(&batch, &mut batch_bytes);
        let reused = vec![0xAB; 7];
        let pending = PendingRecord::new(reused, "events", 5, 6, &batch_bytes);
        let payload = pending.finish(1_234_567);
        assert_eq!(payload, encode("events", 5, 6, 1_234_567, &batch));
        let h = decode_header(&payload).unwrap();
        assert_eq!(h.ingest_unix_ms, 1_234_567);
        assert_eq!(decode_record_batch(&h, &schema).unwrap(), batch);
    }
}
