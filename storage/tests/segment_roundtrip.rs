//! Segments round-trip: random sorted batches written then read back equal the input, block by
//! block and whole; zone maps and bitmaps match values computed from the input.

mod segment_util;

use lookback_common::{Batch, ColumnValues, FaultAction, FaultOp, FaultRule, Faults, Schema, Value};
use lookback_storage::segment::{
    fingerprint_columns, key_hash, value_hash, write_segment, write_segment_sorting, Segment, SegmentInfo,
    SegmentWriteOptions, ZoneMap,
};
use lookback_storage::sort::sort_batch;
use lookback_storage::StorageError;
use proptest::prelude::*;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use segment_util::{assert_batches_equal, mixed_schema, random_batch, same_value};
use std::path::Path;

fn info() -> SegmentInfo {
    SegmentInfo { segment_id: 7, min_lsn: 3, max_lsn: 9 }
}

fn write(path: &Path, schema: &Schema, batch: &Batch, options: &SegmentWriteOptions) -> Segment {
    let summary = write_segment(path, schema, batch, &info(), options, &Faults::none())
        .unwrap_or_else(|e| panic!("write segment: {e}"));
    let segment = Segment::open(path).unwrap_or_else(|e| panic!("open segment: {e}"));
    assert_eq!(summary.rows, batch.rows() as u64);
    assert_eq!(summary.file_bytes, segment.file_bytes());
    assert_eq!(summary.column_bytes, segment.column_bytes());
    assert_eq!(summary.index_bytes, segment.index_bytes());
    assert_eq!(std::fs::metadata(path).expect("stat").len(), summary.file_bytes);
    segment
}

/// Expected zone map of rows `range` of column `c`, computed naively from values.
fn expected_zone(batch: &Batch, c: usize, range: std::ops::Range<usize>) -> ZoneMap {
    let column = batch.column(c);
    let values: Vec<Value> = range.clone().map(|i| column.value(i)).filter(|v| *v != Value::Null).collect();
    let null_count = (range.len() - values.len()) as u64;
    if matches!(column.values, ColumnValues::Uuid(_)) || values.is_empty() {
        return ZoneMap { null_count, min: None, max: None };
    }
    let cmp = |a: &Value, b: &Value| match (a, b) {
        (Value::Float64(x), Value::Float64(y)) => x.total_cmp(y),
        (Value::Text(x), Value::Text(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Value::Int64(x), Value::Int64(y)) | (Value::Timestamp(x), Value::Timestamp(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        _ => unreachable!(),
    };
    let min = values.iter().min_by(|a, b| cmp(a, b)).cloned();
    let max = values.iter().max_by(|a, b| cmp(a, b)).cloned();
    let keep = |v: Option<Value>| v.filter(|v| !matches!(v, Value::Text(s) if s.len() > 128));
    ZoneMap { null_count, min: keep(min), max: keep(max) }
}

fn same_bound(a: &Option<Value>, b: &Option<Value>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => same_value(a, b),
        (None, None) => true,
        _ => false,
    }
}

fn check_segment(segment: &Segment, sorted: &Batch, block_rows: usize) {
    let schema = segment.schema().clone();
    assert_eq!(segment.rows(), sorted.rows() as u64);
    assert_eq!(segment.info(), &info());
    assert_eq!(segment.block_count(), sorted.rows().div_ceil(block_rows));
    assert_batches_equal(sorted, &segment.read_all().expect("read_all"));
    for block in 0..segment.block_count() {
        let first = segment.block_first_row(block) as usize;
        let rows = segment.block_rows(block);
        assert_eq!(first, block * block_rows);
        // Columns in reverse order, to check `read_block` honours the order asked for.
        let columns: Vec<usize> = (0..schema.len()).rev().collect();
        let read = segment.read_block(block, &columns).expect("read_block");
        for (&c, column) in columns.iter().zip(&read) {
            assert_eq!(column.len(), rows);
            for row in 0..rows {
                let (e, a) = (sorted.column(c).value(first + row), column.value(row));
                assert!(same_value(&e, &a), "block {block} column {c} row {row}: {e:?} vs {a:?}");
            }
            let expected = expected_zone(sorted, c, first..first + rows);
            let zone = segment.zone_map(block, c);
            assert_eq!(zone.null_count, expected.null_count, "block {block} column {c}");
            assert!(same_bound(&zone.min, &expected.min), "min {block} {c}: {zone:?} vs {expected:?}");
            assert!(same_bound(&zone.max, &expected.max), "max {block} {c}: {zone:?} vs {expected:?}");
        }
    }
    check_bitmaps(segment, sorted);
    check_fingerprints(segment, sorted, block_rows);
}

/// The fingerprint index names the block of every row with a full (app_id, ip, user_agent),
/// and names few blocks for keys the segment lacks.
fn check_fingerprints(segment: &Segment, sorted: &Batch, block_rows: usize) {
    let Some(columns) = fingerprint_columns(segment.schema()) else {
        assert!(segment.fingerprint_index().expect("index").is_none());
        return;
    };
    assert_eq!(segment.fingerprint_columns(), Some(columns));
    let index = segment.fingerprint_index().expect("decodes").expect("events segments have one");
    let hash_of = |values: [&str; 3]| {
        let [app, ip, ua] = values.map(|v| value_hash(v.as_bytes()));
        key_hash(app, ip, ua)
    };
    let mut keys = std::collections::HashSet::new();
    for row in 0..sorted.rows() {
        let values = columns.map(|c| sorted.column(c).text(row));
        let [Some(app), Some(ip), Some(ua)] = values else { continue };
        keys.insert((app, ip, ua));
        let blocks = index.blocks_of(hash_of([app, ip, ua]));
        assert!(blocks.binary_search(&((row / block_rows) as u32)).is_ok(), "row {row}: blocks {blocks:?}");
    }
    assert!(index.len() <= sorted.rows());
    let absent: usize = (0..1_000).map(|i| index.blocks_of(hash_of(["no app", &format!("ip {i}"), "ua"])).len()).sum();
    assert!(absent <= 1_000 / 8 + 5, "{absent} blocks named for 1,000 absent keys ({} keys present)", keys.len());
}

fn check_bitmaps(segment: &Segment, sorted: &Batch) {
    let schema = segment.schema().clone();
    for c in 0..schema.len() {
        if !schema.bitmap_columns.contains(&c) {
            assert!(segment.bitmap(c, "a").expect("bitmap").is_none());
            continue;
        }
        let column = sorted.column(c);
        let mut expected: Vec<String> = (0..sorted.rows()).filter_map(|i| column.text(i).map(str::to_string)).collect();
        expected.sort();
        expected.dedup();
        assert_eq!(segment.bitmap_values(c).expect("values"), expected);
        for value in &expected {
            let bitmap = segment.bitmap(c, value).expect("bitmap").expect("indexed");
            let rows: Vec<u32> = (0..sorted.rows() as u32).filter(|&i| column.text(i as usize) == Some(value)).collect();
            assert_eq!(bitmap.iter().collect::<Vec<u32>>(), rows, "value {value:?}");
        }
        let absent = segment.bitmap(c, "no such value \u{1F600}").expect("bitmap").expect("indexed");
        assert!(absent.is_empty());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn segment_random_batches_roundtrip(seed in any::<u64>(), rows in 1usize..600, block_rows in 1usize..200,
                                null_ratio in prop_oneof![Just(0.0), Just(0.3), Just(1.0)],
                                level in prop_oneof![Just(1), Just(3), Just(9)],
                                dict_max in prop_oneof![Just(0), Just(4), Just(65_536)]) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut rng = SmallRng::seed_from_u64(seed);
        let schema = mixed_schema();
        let sorted = sort_batch(&schema, &random_batch(&mut rng, rows, null_ratio));
        let options = SegmentWriteOptions { block_rows, zstd_level: level, dictionary_values_max: dict_max, threads: 1 + (block_rows % 2) };
        let segment = write(&dir.path().join("s.seg"), &schema, &sorted, &options);
        check_segment(&segment, &sorted, block_rows);
    }
}

/// Splits `batch` into consecutive parts at random points (empty parts included).
fn split(rng: &mut SmallRng, schema: &Schema, batch: &Batch) -> Vec<Batch> {
    use rand::Rng;
    let mut cuts: Vec<usize> = (0..rng.gen_range(0..5)).map(|_| rng.gen_range(0..=batch.rows())).collect();
    cuts.push(0);
    cuts.push(batch.rows());
    cuts.sort_unstable();
    cuts.windows(2).map(|w| batch.take(&(w[0] as u32..w[1] as u32).collect::<Vec<u32>>())).inspect(|b| assert_eq!(b.columns().len(), schema.len())).collect()
}

/// `parts` with every text column that repeats enough in dictionary form, as batches arrive
/// from producers (`encode_batch_compact`); every other part when `alternate`.
fn dictionary_parts(schema: &Schema, parts: &[Batch], alternate: bool) -> Vec<Batch> {
    parts
        .iter()
        .enumerate()
        .map(|(i, part)| {
            if alternate && i % 2 == 1 {
                return part.clone();
            }
            let columns = part
                .columns()
                .iter()
                .map(|c| match &c.values {
                    ColumnValues::Text(t) => match t.to_dictionary(c.validity.as_deref()) {
                        Some(d) => lookback_common::Column::new(ColumnValues::Text(d), c.validity.clone()),
                        None => c.clone(),
                    },
                    _ => c.clone(),
                })
                .collect();
            Batch::try_new(schema, columns).expect("same schema")
        })
        .collect()
}

/// Writes unsorted `parts` with `write_segment_sorting`; the segment must equal the stable
/// sort of their concatenation, block by block, with the same zone maps and bitmaps.
fn check_sorting_write(schema: &Schema, parts: &[Batch], options: &SegmentWriteOptions) {
    let dir = tempfile::tempdir().expect("tempdir");
    let refs: Vec<&Batch> = parts.iter().collect();
    let expected = sort_batch(schema, &Batch::concat(schema, &refs));
    let path = dir.path().join("p.seg");
    let summary = write_segment_sorting(&path, schema, &refs, &info(), options, &Faults::none())
        .unwrap_or_else(|e| panic!("write segment: {e}"));
    let segment = Segment::open(&path).unwrap_or_else(|e| panic!("open segment: {e}"));
    assert_eq!(summary.file_bytes, segment.file_bytes());
    check_segment(&segment, &expected, options.block_rows);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn segment_unsorted_parts_roundtrip_sorted(seed in any::<u64>(), rows in 1usize..600, block_rows in 1usize..200,
                                               null_ratio in prop_oneof![Just(0.0), Just(0.3), Just(1.0)]) {
        let mut rng = SmallRng::seed_from_u64(seed);
        let schema = mixed_schema();
        let batch = random_batch(&mut rng, rows, null_ratio);
        let parts = split(&mut rng, &schema, &batch);
        let options = SegmentWriteOptions { block_rows, zstd_level: 1, ..SegmentWriteOptions::default() };
        check_sorting_write(&schema, &parts, &options);
        // The same rows arriving as dictionaries (in some parts or all) write the same segment.
        check_sorting_write(&schema, &dictionary_parts(&schema, &parts, seed % 2 == 0), &options);
    }
}

/// Enough rows that the writer probes non-key text columns and gives up ranking the
/// near-unique ones; the result must still equal the sorted input.
#[test]
fn segment_unsorted_events_with_unique_text_roundtrip() {
    let mut rng = SmallRng::seed_from_u64(11);
    let schema = Schema::events();
    let mut parts: Vec<Batch> = (0..8).map(|_| segment_util::events_batch(&mut rng, 10_000)).collect();
    // Make `properties` and `ip` unique per row, so probing sees only new values and gives them
    // up (the fingerprint index then hashes ip per row, not per dictionary entry).
    for name in ["properties", "ip"] {
        let column = schema.column_index(name).expect("column");
        for (p, part) in parts.iter_mut().enumerate() {
            let mut columns = part.clone().into_columns();
            let mut text = lookback_common::TextValues::with_capacity(part.rows(), 0);
            for row in 0..part.rows() {
                text.push(&format!("{{\"n\":{p},\"row\":{row}}}"));
            }
            columns[column] = lookback_common::Column::new(ColumnValues::Text(text), None);
            *part = Batch::try_new(&schema, columns).expect("valid batch");
        }
    }
    let options = SegmentWriteOptions { block_rows: 7_000, ..SegmentWriteOptions::default() };
    check_sorting_write(&schema, &parts, &options);
    let dictionaries = dictionary_parts(&schema, &parts, true);
    let dictionary_columns = dictionaries[0]
        .columns()
        .iter()
        .filter(|c| matches!(&c.values, ColumnValues::Text(t) if t.codes.is_some()))
        .count();
    assert!(dictionary_columns >= 5, "only {dictionary_columns} dictionary columns");
    check_sorting_write(&schema, &dictionaries, &options);
}

#[test]
fn segment_events_multi_block_roundtrip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = SmallRng::seed_from_u64(1);
    let schema = Schema::events();
    let sorted = sort_batch(&schema, &segment_util::events_batch(&mut rng, 5_000));
    let options = SegmentWriteOptions { block_rows: 1_000, ..SegmentWriteOptions::default() };
    let segment = write(&dir.path().join("e.seg"), &schema, &sorted, &options);
    check_segment(&segment, &sorted, 1_000);
    assert_eq!(segment.schema(), &schema);
}

#[test]
#[should_panic(expected = "not sorted")]
fn segment_unsorted_batch_is_a_bug() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = SmallRng::seed_from_u64(2);
    let schema = mixed_schema();
    let batch = random_batch(&mut rng, 100, 0.1);
    let _ = write_segment(&dir.path().join("u.seg"), &schema, &batch, &info(), &SegmentWriteOptions::default(), &Faults::none());
}

#[test]
#[should_panic(expected = "at least one row")]
fn segment_empty_batch_is_a_bug() {
    let dir = tempfile::tempdir().expect("tempdir");
    let schema = mixed_schema();
    let _ = write_segment(&dir.path().join("e.seg"), &schema, &Batch::empty(&schema), &info(), &SegmentWriteOptions::default(), &Faults::none());
}

#[test]
fn segment_existing_file_is_not_overwritten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("x.seg");
    std::fs::write(&path, b"precious").expect("write");
    let mut rng = SmallRng::seed_from_u64(3);
    let schema = mixed_schema();
    let sorted = sort_batch(&schema, &random_batch(&mut rng, 10, 0.1));
    let err = write_segment(&path, &schema, &sorted, &info(), &SegmentWriteOptions::default(), &Faults::none());
    assert!(matches!(err, Err(StorageError::Io { .. })), "{err:?}");
    assert_eq!(std::fs::read(&path).expect("read"), b"precious");
}

#[test]
fn segment_injected_faults_surface_as_io_errors() {
    let mut rng = SmallRng::seed_from_u64(4);
    let schema = mixed_schema();
    let sorted = sort_batch(&schema, &random_batch(&mut rng, 50, 0.1));
    for (op, skip) in [(FaultOp::Create, 0), (FaultOp::Write, 0), (FaultOp::Write, 5), (FaultOp::Sync, 0)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let faults = Faults::none();
        faults.arm(FaultRule { op, path_contains: "f.seg".into(), skip, action: FaultAction::Error(28), once: true });
        let err = write_segment(&dir.path().join("f.seg"), &schema, &sorted, &info(), &SegmentWriteOptions::default(), &faults);
        match err {
            Err(StorageError::Io { source, .. }) => assert_eq!(source.raw_os_error(), Some(28)),
            other => panic!("{op:?}: expected an I/O error, got {other:?}"),
        }
    }
}

/// Format version 1 files (before the fingerprint index) still open and read: a version 2 file
/// of a table without a fingerprint index, rewritten as version 1 (footer without its last
/// byte, the fingerprint count), reads the same rows.
#[test]
fn segment_version_1_files_still_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = SmallRng::seed_from_u64(5);
    let schema = mixed_schema();
    let sorted = sort_batch(&schema, &random_batch(&mut rng, 300, 0.2));
    let options = SegmentWriteOptions { block_rows: 64, ..SegmentWriteOptions::default() };
    let path = dir.path().join("v2.seg");
    write(&path, &schema, &sorted, &options);
    let v2 = std::fs::read(&path).expect("read");
    let trailer = v2.len() - 28;
    let footer_offset = u64::from_le_bytes(v2[trailer..trailer + 8].try_into().expect("8 bytes")) as usize;
    assert_eq!(v2[trailer - 1], 0, "no fingerprint section");
    let footer = &v2[footer_offset..trailer - 1];
    let mut v1 = v2[..footer_offset].to_vec();
    v1[8..12].copy_from_slice(&1u32.to_le_bytes());
    v1.extend_from_slice(footer);
    v1.extend_from_slice(&(footer_offset as u64).to_le_bytes());
    v1.extend_from_slice(&(footer.len() as u32).to_le_bytes());
    v1.extend_from_slice(&lookback_common::crc32(footer).to_le_bytes());
    v1.extend_from_slice(&1u32.to_le_bytes());
    v1.extend_from_slice(&v2[v2.len() - 8..]);
    let old = dir.path().join("v1.seg");
    std::fs::write(&old, &v1).expect("write");
    let segment = Segment::open(&old).expect("version 1 opens");
    assert_batches_equal(&sorted, &segment.read_all().expect("read_all"));
    assert!(segment.fingerprint_index().expect("no index").is_none());
    // The same footer under version 2 lacks its fingerprint count: refused, not misread.
    let mut truncated = v1.clone();
    truncated[8..12].copy_from_slice(&2u32.to_le_bytes());
    let at = truncated.len() - 12;
    truncated[at..at + 4].copy_from_slice(&2u32.to_le_bytes());
    std::fs::write(&old, &truncated).expect("write");
    assert!(matches!(Segment::open(&old), Err(StorageError::Corrupt { .. })));
}
