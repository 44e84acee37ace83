//! Compression on realistic events: prints bytes/row per column, compares with an estimate of
//! what ClickHouse MergeTree stores for the same sorted rows with CODEC(ZSTD(1)) (its default),
//! and fails if we lose the margin the design promises.

mod segment_util;

use lookback_common::{Batch, ColumnValues, Faults, Schema};
use lookback_storage::segment::{write_segment, Segment, SegmentInfo, SegmentWriteOptions};
use lookback_storage::sort::sort_batch;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use segment_util::{assert_batches_equal, events_batch};
use std::time::Instant;

const ROWS: usize = 200_000;
/// ClickHouse compresses column files in blocks of up to 1 MiB (max_compress_block_size), each
/// with a 16-byte checksum and 9-byte header.
const CLICKHOUSE_BLOCK_BYTES: usize = 1 << 20;
const CLICKHOUSE_BLOCK_OVERHEAD_BYTES: usize = 25;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The uncompressed column files ClickHouse writes: values (nulls as defaults), plus a UInt8
/// null map for Nullable columns. Strings are varint length + bytes, per row.
fn clickhouse_files(batch: &Batch, c: usize) -> Vec<Vec<u8>> {
    let column = batch.column(c);
    let mut values = Vec::new();
    match &column.values {
        ColumnValues::Text(t) => {
            for i in 0..t.len() {
                put_varint(&mut values, t.get_bytes(i).len() as u64);
                values.extend_from_slice(t.get_bytes(i));
            }
        }
        ColumnValues::Int64(v) | ColumnValues::Timestamp(v) => v.iter().for_each(|x| values.extend_from_slice(&x.to_le_bytes())),
        ColumnValues::Float64(v) => v.iter().for_each(|x| values.extend_from_slice(&x.to_le_bytes())),
        ColumnValues::Uuid(v) => v.iter().for_each(|x| values.extend_from_slice(x)),
        ColumnValues::Bool(v) => v.iter().for_each(|x| values.push(*x as u8)),
    }
    let mut files = vec![values];
    if let Some(validity) = &column.validity {
        files.push(validity.iter().map(|ok| !ok as u8).collect());
    }
    files
}

fn clickhouse_bytes(batch: &Batch, schema: &Schema, c: usize) -> usize {
    let nullable = schema.columns[c].nullable;
    let mut files = clickhouse_files(batch, c);
    if nullable && files.len() == 1 {
        files.push(vec![0u8; batch.rows()]);
    }
    files
        .iter()
        .flat_map(|f| f.chunks(CLICKHOUSE_BLOCK_BYTES))
        .map(|chunk| zstd::bulk::compress(chunk, 1).expect("zstd").len() + CLICKHOUSE_BLOCK_OVERHEAD_BYTES)
        .sum()
}

#[test]
fn segment_events_compress_hard() {
    let mut rng = SmallRng::seed_from_u64(42);
    let schema = Schema::events();
    let sorted = sort_batch(&schema, &events_batch(&mut rng, ROWS));
    let dir = tempfile::tempdir().expect("tempdir");
    let info = SegmentInfo { segment_id: 1, min_lsn: 1, max_lsn: 1 };
    let mut totals = Vec::new();
    for level in [3, 9] {
        let path = dir.path().join(format!("level{level}.seg"));
        let options = SegmentWriteOptions { zstd_level: level, ..SegmentWriteOptions::default() };
        let start = Instant::now();
        let summary = write_segment(&path, &schema, &sorted, &info, &options, &Faults::none()).expect("write");
        let write_s = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let segment = Segment::open(&path).expect("open");
        let read = segment.read_all().expect("read_all");
        let read_s = start.elapsed().as_secs_f64();
        assert_batches_equal(&sorted, &read);
        println!("zstd level {level}: write {:.3} s ({:.2} M rows/s), read_all {:.3} s ({:.2} M rows/s)",
            write_s, ROWS as f64 / write_s / 1e6, read_s, ROWS as f64 / read_s / 1e6);
        println!("{:<12} {:>10} {:>12}", "column", "bytes/row", "clickhouse");
        let mut clickhouse_total = 0.0;
        for (c, def) in schema.columns.iter().enumerate() {
            let ours = summary.column_bytes[c] as f64 / ROWS as f64;
            let theirs = clickhouse_bytes(&sorted, &schema, c) as f64 / ROWS as f64;
            clickhouse_total += theirs;
            println!("{:<12} {:>10.3} {:>12.3}", def.name, ours, theirs);
        }
        let total = summary.file_bytes as f64 / ROWS as f64;
        println!("{:<12} {:>10.3}", "bitmaps", summary.index_bytes as f64 / ROWS as f64);
        println!("{:<12} {:>10.3} {:>12.3}  (ratio {:.3})", "file", total, clickhouse_total, total / clickhouse_total);
        totals.push((total, clickhouse_total));
    }
    let (total, clickhouse) = totals[0];
    assert!(total <= 40.0, "{total:.2} bytes/row at level 3");
    // Goal 0.8x; measured 0.84x at level 3 and 0.82x at level 9 on this data (see
    // docs/format.md for the remaining levers). Guard against regressions.
    assert!(total <= 0.86 * clickhouse, "{total:.2} bytes/row vs ClickHouse estimate {clickhouse:.2}");
    assert!(totals[1].0 <= total * 1.01, "a higher level must not grow the file");
}
