//! Corrupt segments are refused, never panic and never decode into wrong rows: every byte of a
//! small segment flipped, every truncation, unknown versions.

mod segment_util;

use lookback_common::{Batch, Faults, Schema};
use lookback_storage::segment::{write_segment, Segment, SegmentInfo, SegmentWriteOptions, SEGMENT_FORMAT_VERSION};
use lookback_storage::sort::sort_batch;
use lookback_storage::StorageError;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use segment_util::{assert_batches_equal, events_batch, mixed_schema, random_batch};
use std::path::Path;

/// Opens, reads every row and every bitmap: the whole surface a reader can touch.
fn read_everything(path: &Path) -> Result<Batch, StorageError> {
    let segment = Segment::open(path)?;
    let batch = segment.read_all()?;
    for &c in &segment.schema().bitmap_columns {
        for value in segment.bitmap_values(c)? {
            segment.bitmap(c, &value)?;
        }
    }
    segment.fingerprint_index()?;
    Ok(batch)
}

/// The segments every test damages: a mixed-type table, and the events table (which has a
/// fingerprint index).
const KINDS: [Kind; 2] = [Kind::Mixed, Kind::Events];

#[derive(Clone, Copy, Debug)]
enum Kind {
    Mixed,
    Events,
}

fn small_segment(dir: &Path) -> (Vec<u8>, Batch) {
    small_segment_of(dir, Kind::Mixed)
}

fn small_segment_of(dir: &Path, kind: Kind) -> (Vec<u8>, Batch) {
    let mut rng = SmallRng::seed_from_u64(11);
    let (schema, batch) = match kind {
        Kind::Mixed => (mixed_schema(), random_batch(&mut rng, 120, 0.2)),
        Kind::Events => (Schema::events(), events_batch(&mut rng, 120)),
    };
    let sorted = sort_batch(&schema, &batch);
    let path = dir.join("orig.seg");
    let options = SegmentWriteOptions { block_rows: 50, ..SegmentWriteOptions::default() };
    let info = SegmentInfo { segment_id: 1, min_lsn: 1, max_lsn: 2 };
    write_segment(&path, &schema, &sorted, &info, &options, &Faults::none()).expect("write");
    assert_batches_equal(&sorted, &read_everything(&path).expect("pristine segment reads"));
    (std::fs::read(&path).expect("read file"), sorted)
}

fn expect_corrupt(path: &Path, what: &str) {
    match read_everything(path) {
        Err(StorageError::Corrupt { path: p, .. }) => assert_eq!(p, path, "{what}: error names the file"),
        Err(other) => panic!("{what}: expected Corrupt, got {other}"),
        Ok(_) => panic!("{what}: corrupt segment read without error"),
    }
}

#[test]
fn segment_every_flipped_byte_is_detected() {
    for kind in KINDS {
        let dir = tempfile::tempdir().expect("tempdir");
        let (bytes, _) = small_segment_of(dir.path(), kind);
        let path = dir.path().join("flipped.seg");
        let mut rng = SmallRng::seed_from_u64(12);
        for pos in 0..bytes.len() {
            let mut copy = bytes.clone();
            copy[pos] ^= 1 << rng.gen_range(0..8);
            std::fs::write(&path, &copy).expect("write copy");
            expect_corrupt(&path, &format!("{kind:?}: bit flip at {pos} of {}", bytes.len()));
        }
    }
}

#[test]
fn segment_every_truncation_is_detected() {
    for kind in KINDS {
        let dir = tempfile::tempdir().expect("tempdir");
        let (bytes, _) = small_segment_of(dir.path(), kind);
        let path = dir.path().join("short.seg");
        for len in 0..bytes.len() {
            std::fs::write(&path, &bytes[..len]).expect("write copy");
            expect_corrupt(&path, &format!("{kind:?}: truncated to {len} of {}", bytes.len()));
        }
    }
}

#[test]
fn segment_random_garbage_never_panics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (bytes, sorted) = small_segment(dir.path());
    let path = dir.path().join("garbage.seg");
    let mut rng = SmallRng::seed_from_u64(13);
    for round in 0..500 {
        let mut copy = bytes.clone();
        for _ in 0..rng.gen_range(1..20) {
            let pos = rng.gen_range(0..copy.len());
            copy[pos] = rng.gen();
        }
        std::fs::write(&path, &copy).expect("write copy");
        // Multi-byte damage could in theory collide with a crc32; if it reads, it must be right.
        if let Ok(batch) = read_everything(&path) {
            assert_eq!(copy, bytes, "round {round}: damaged file read without error");
            assert_batches_equal(&sorted, &batch);
        }
    }
}

#[test]
fn segment_unknown_version_is_refused_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut bytes, _) = small_segment(dir.path());
    let next = (SEGMENT_FORMAT_VERSION + 1).to_le_bytes();
    bytes[8..12].copy_from_slice(&next);
    let at = bytes.len() - 12;
    bytes[at..at + 4].copy_from_slice(&next);
    let path = dir.path().join("future.seg");
    std::fs::write(&path, &bytes).expect("write");
    let err = Segment::open(&path).expect_err("future version");
    let expected = format!("version {} is not supported", SEGMENT_FORMAT_VERSION + 1);
    assert!(err.to_string().contains(&expected), "{err}");
}
