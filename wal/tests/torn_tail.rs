//! Torn tails: for every byte offset inside the last record, cut the record there (zeros after)
//! or garble that byte. Recovery must keep exactly the earlier records, report the truncation,
//! resume appending at the cut, and a second recovery must see old + new records.
#![allow(clippy::unwrap_used)] // tests panic with the error

mod common;

use std::path::Path;

use common::*;
use lookback_wal::{IoMode, Lsn, WalOptions};

const RECORDS: u64 = 5;
const LAST_PAYLOAD_BYTES: usize = 40;
const SEGMENT_HEADER_BYTES: usize = 32;
const RECORD_HEADER_BYTES: usize = 24;

struct Fixture {
    snapshot: Snapshot,
    payloads: Vec<Vec<u8>>,
    /// Offset of the last record in segment 1, and its encoded length.
    last_offset: usize,
    last_bytes: usize,
}

/// Writes RECORDS records, one group each, and snapshots the directory.
fn fixture(dir: &Path, options: &WalOptions) -> Fixture {
    let opened = open(options, 0);
    let payloads: Vec<Vec<u8>> = (1..=RECORDS)
        .map(|lsn| payload(lsn, if lsn == RECORDS { LAST_PAYLOAD_BYTES } else { 100 + lsn as usize }))
        .collect();
    for data in &payloads {
        append_durable(&opened.wal, data.clone());
    }
    drop(opened);
    let before_last: usize = payloads[..payloads.len() - 1].iter().map(|p| RECORD_HEADER_BYTES + p.len()).sum();
    Fixture {
        snapshot: snapshot(dir),
        payloads,
        last_offset: SEGMENT_HEADER_BYTES + before_last,
        last_bytes: RECORD_HEADER_BYTES + LAST_PAYLOAD_BYTES,
    }
}

fn damage_segment(dir: &Path, damage: impl FnOnce(&mut Vec<u8>)) {
    let path = dir.join(segment_name(1));
    let mut bytes = std::fs::read(&path).unwrap();
    damage(&mut bytes);
    std::fs::write(&path, bytes).unwrap();
}

/// Opens the damaged log, checks the survivors and the report, appends, and reopens.
fn recover_and_continue(options: &WalOptions, fixture: &Fixture, expect_truncation: bool, what: &str) {
    let kept: Vec<(Lsn, Vec<u8>)> =
        fixture.payloads[..RECORDS as usize - 1].iter().enumerate().map(|(i, p)| (i as Lsn + 1, p.clone())).collect();
    let opened = try_open(options, 0).unwrap_or_else(|e| panic!("{what}: recovery failed: {e}"));
    assert_eq!(opened.replayed, kept, "{what}: exactly the earlier records survive");
    assert_eq!(opened.report.last_lsn, RECORDS - 1, "{what}");
    match (&opened.report.truncated, expect_truncation) {
        (Some(t), true) => {
            assert_eq!(t.path.file_name().unwrap().to_str(), Some(segment_name(1).as_str()), "{what}");
            assert_eq!(t.offset, fixture.last_offset as u64, "{what}: truncation at the damaged record");
        }
        (None, false) => {}
        (other, _) => panic!("{what}: expected truncation {expect_truncation}, got {other:?}"),
    }
    let new_first = append_durable(&opened.wal, b"new one".to_vec());
    let new_second = append_durable(&opened.wal, b"new two".to_vec());
    assert_eq!((new_first, new_second), (RECORDS, RECORDS + 1), "{what}: lsns continue after the kept records");
    drop(opened);
    let again = try_open(options, 0).unwrap_or_else(|e| panic!("{what}: second recovery failed: {e}"));
    let mut expected = kept;
    expected.push((RECORDS, b"new one".to_vec()));
    expected.push((RECORDS + 1, b"new two".to_vec()));
    assert_eq!(again.replayed, expected, "{what}: second recovery sees old + new");
    assert!(again.report.truncated.is_none(), "{what}: the second recovery is clean");
}

fn run_every_offset(mode: IoMode, garble: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let options = options(&dir, mode, 64 * 1024);
    let fixture = fixture(&dir, &options);
    let original = std::fs::read(dir.join(segment_name(1))).unwrap();
    let last = fixture.last_offset..fixture.last_offset + fixture.last_bytes;
    assert!(original[last.end..].iter().all(|b| *b == 0), "the segment is zero after the last record");
    for cut in 0..fixture.last_bytes {
        restore(&dir, &fixture.snapshot);
        let at = fixture.last_offset + cut;
        let what = format!("{mode:?} {} at byte {cut} of the last record", if garble { "garble" } else { "cut" });
        let expect_truncation = if garble {
            damage_segment(&dir, |b| b[at] ^= 0xFF);
            true
        } else {
            damage_segment(&dir, |b| b[at..].fill(0));
            original[fixture.last_offset..at].iter().any(|b| *b != 0)
        };
        recover_and_continue(&options, &fixture, expect_truncation, &what);
    }
}

#[test]
fn cut_at_every_offset_of_the_last_record_is_a_torn_tail() {
    for mode in backends() {
        run_every_offset(mode, false);
    }
}

#[test]
fn garbled_byte_at_every_offset_of_the_last_record_is_a_torn_tail() {
    for mode in backends() {
        run_every_offset(mode, true);
    }
}

#[test]
fn torn_header_of_a_new_last_segment_is_a_torn_start() {
    for mode in backends() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("wal");
        let options = options(&dir, mode, 8 * 1024);
        let opened = open(&options, 0);
        let mut lsn = 0;
        while segment_files(&dir).len() < 2 || opened.wal.stats().segment_files < 2 {
            lsn = append_durable(&opened.wal, payload(lsn + 1, 1000));
        }
        drop(opened);
        // Garble one byte of segment 2's header: that segment's first write was torn.
        let second = dir.join(segment_name(2));
        let mut bytes = std::fs::read(&second).unwrap();
        bytes[10] ^= 0x01;
        std::fs::write(&second, bytes).unwrap();
        let reopened = try_open(&options, 0).unwrap_or_else(|e| panic!("{mode:?}: {e}"));
        let truncated = reopened.report.truncated.clone().expect("torn header is reported");
        assert_eq!(truncated.path, second);
        assert_eq!(truncated.offset, 0);
        assert_eq!(reopened.report.last_lsn, lsn - 1, "the record in the torn segment is dropped");
        assert_eq!(append_durable(&reopened.wal, b"resumed".to_vec()), lsn);
        drop(reopened);
        let again = open(&options, 0);
        assert_eq!(again.replayed.len() as u64, lsn);
        assert_eq!(again.replayed.last().map(|r| r.1.clone()), Some(b"resumed".to_vec()));
        assert!(again.report.truncated.is_none());
    }
}
