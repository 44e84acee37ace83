//! Damage that is not a torn tail must refuse to open with `WalError::Corrupt` naming the file
//! and offset: a flipped byte in an early record when later groups exist, a missing segment,
//! and segments missing before the first one the checkpoint does not cover.
#![allow(clippy::unwrap_used)] // tests panic with the error

mod common;

use common::*;
use lookback_wal::WalError;

const SEGMENT_HEADER_BYTES: u64 = 32;
const RECORD_HEADER_BYTES: u64 = 24;

#[test]
fn flipped_byte_in_an_early_record_with_later_groups_is_corruption() {
    for mode in backends() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("wal");
        let options = options(&dir, mode, 64 * 1024);
        let opened = open(&options, 0);
        for lsn in 1..=10 {
            append_durable(&opened.wal, payload(lsn, 50));
        }
        drop(opened);
        // Record 3 starts after the header and two 74-byte records.
        let record_three = SEGMENT_HEADER_BYTES + 2 * (RECORD_HEADER_BYTES + 50);
        for flip_at in [0, 5, 12, 30, 60] {
            let path = dir.join(segment_name(1));
            let mut bytes = std::fs::read(&path).unwrap();
            let original = bytes.clone();
            bytes[(record_three + flip_at) as usize] ^= 0x10;
            std::fs::write(&path, &bytes).unwrap();
            match try_open(&options, 0) {
                Err(WalError::Corrupt { path: bad, offset, reason }) => {
                    assert_eq!(bad, path, "names the damaged file");
                    assert_eq!(offset, record_three, "names the damaged record's offset");
                    assert!(reason.contains("later group"), "{reason}");
                    let message = WalError::Corrupt { path: bad, offset, reason }.to_string();
                    assert!(message.starts_with("wal segment ") && message.contains("is corrupt at offset"), "{message}");
                }
                Err(other) => panic!("{mode:?}: expected Corrupt, got {other}"),
                Ok(o) => panic!("{mode:?}: opened a corrupt log, replayed {} records", o.replayed.len()),
            }
            assert_eq!(std::fs::read(&path).unwrap(), bytes, "a refused open must not modify the segment");
            std::fs::write(&path, &original).unwrap();
        }
        assert_eq!(open(&options, 0).replayed.len(), 10, "the repaired log opens");
    }
}

/// Fills segments 1..=3 and returns the last LSN written.
fn three_segments(options: &lookback_wal::WalOptions) -> u64 {
    let opened = open(options, 0);
    let mut lsn = 0;
    while opened.wal.stats().segment_files < 3 {
        lsn = append_durable(&opened.wal, payload(lsn + 1, 900));
    }
    lsn = append_durable(&opened.wal, payload(lsn + 1, 900));
    lsn
}

#[test]
fn a_missing_middle_segment_is_corruption() {
    for mode in backends() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("wal");
        let options = options(&dir, mode, 8 * 1024);
        three_segments(&options);
        std::fs::remove_file(dir.join(segment_name(2))).unwrap();
        match try_open(&options, 0) {
            Err(WalError::Corrupt { path, reason, .. }) => {
                assert_eq!(path, dir.join(segment_name(3)));
                assert!(reason.contains("missing"), "{reason}");
            }
            other => panic!("{mode:?}: expected Corrupt, got {:?}", other.map(|o| o.replayed.len())),
        }
    }
}

#[test]
fn a_missing_first_segment_not_covered_by_the_checkpoint_is_corruption() {
    for mode in backends() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("wal");
        let options = options(&dir, mode, 8 * 1024);
        let last = three_segments(&options);
        std::fs::remove_file(dir.join(segment_name(1))).unwrap();
        match try_open(&options, 0) {
            Err(WalError::Corrupt { path, offset, reason }) => {
                assert_eq!((path, offset), (dir.join(segment_name(2)), 0));
                assert!(reason.contains("records are missing"), "{reason}");
            }
            other => panic!("{mode:?}: expected Corrupt, got {:?}", other.map(|o| o.replayed.len())),
        }
        // With a checkpoint covering segment 1 the same directory is fine.
        let covered = open(&options, last - 3);
        assert_eq!(covered.replayed.len(), 3);
        assert_eq!(covered.report.last_lsn, last);
    }
}

#[test]
fn damaged_last_record_of_a_full_segment_before_later_segments_is_corruption() {
    for mode in backends() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("wal");
        let options = options(&dir, mode, 8 * 1024);
        three_segments(&options);
        // 900-byte payloads: 8 records of 924 bytes fit after the 32-byte header of an 8 KiB segment.
        let last_in_first = SEGMENT_HEADER_BYTES + 7 * (RECORD_HEADER_BYTES + 900);
        let path = dir.join(segment_name(1));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[(last_in_first + RECORD_HEADER_BYTES + 10) as usize] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        match try_open(&options, 0) {
            Err(WalError::Corrupt { path: bad, offset, .. }) => assert_eq!((bad, offset), (path, last_in_first)),
            other => panic!("{mode:?}: expected Corrupt, got {:?}", other.map(|o| o.replayed.len())),
        }
    }
}
