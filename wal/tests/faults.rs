//! Injected I/O failures poison the WAL: the pending callback gets Err, `poisoned()` says why,
//! later appends are refused, and a new `Wal` recovers everything acknowledged before.
#![allow(clippy::unwrap_used)] // tests panic with the error

mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::*;
use lookback_common::faults::{EIO, ENOSPC};
use lookback_common::{FaultAction, FaultOp, FaultRule, Faults};
use lookback_wal::{Lsn, WalError, WalOptions};

fn arm(faults: &Faults, op: FaultOp, path_contains: &str, errno: i32) {
    faults.arm(FaultRule { op, path_contains: path_contains.into(), skip: 0, action: FaultAction::Error(errno), once: true });
}

/// Appends until a callback fails; returns the acknowledged LSNs and the failure.
fn append_until_failure(options: &WalOptions, arm_fault: impl FnOnce(&Faults)) -> (Vec<Lsn>, WalError) {
    let opened = open(options, 0);
    let mut acknowledged = Vec::new();
    for i in 1..=3 {
        acknowledged.push(append_durable(&opened.wal, payload(i, 500)));
    }
    arm_fault(&options.faults);
    let failure = loop {
        let (tx, rx) = mpsc::channel();
        let lsn = opened.wal.append(payload(99, 500), Box::new(move |r| tx.send(r).unwrap())).unwrap();
        match rx.recv_timeout(Duration::from_secs(10)).expect("callback within 10 s") {
            Ok(durable) => acknowledged.push(durable),
            Err(error) => {
                assert!(opened.wal.wait_durable(lsn).is_err(), "wait_durable reports the poison");
                break error;
            }
        }
    };
    let reason = opened.wal.poisoned().expect("the wal is poisoned");
    assert!(matches!(&failure, WalError::Poisoned(r) if *r == reason), "{failure}");
    let refused = opened.wal.append(b"later".to_vec(), Box::new(|_| {})).unwrap_err();
    assert_eq!(refused, failure, "later appends are refused with the same error");
    opened.wal.shutdown();
    (acknowledged, failure)
}

fn reopen_keeps_acknowledged(options: &WalOptions, acknowledged: &[Lsn]) {
    options.faults.clear();
    let reopened = open(options, 0);
    let recovered: Vec<Lsn> = reopened.replayed.iter().map(|r| r.0).collect();
    assert!(recovered.len() >= acknowledged.len(), "lost acknowledged records: {recovered:?} vs {acknowledged:?}");
    assert_eq!(&recovered[..acknowledged.len()], acknowledged);
    // The failed record may survive (its write reached the page cache) but was never acknowledged.
    assert!(recovered.len() <= acknowledged.len() + 1);
    let next = append_durable(&reopened.wal, b"after restart".to_vec());
    assert_eq!(next, recovered.len() as Lsn + 1);
}

#[test]
fn failed_fdatasync_poisons_and_restart_recovers_acknowledged_records() {
    for mode in backends() {
        let tmp = tempfile::tempdir().unwrap();
        let options = options(tmp.path(), mode, 64 * 1024);
        let (acknowledged, failure) = append_until_failure(&options, |f| arm(f, FaultOp::Sync, &segment_name(1), EIO));
        assert_eq!(
            failure.to_string(),
            format!(
                "wal is poisoned after a failed fdatasync of {}: Input/output error (os error 5); restart the server",
                segment_name(1)
            )
        );
        reopen_keeps_acknowledged(&options, &acknowledged);
    }
}

#[test]
fn failed_write_poisons() {
    for mode in backends() {
        let tmp = tempfile::tempdir().unwrap();
        let options = options(tmp.path(), mode, 64 * 1024);
        let (acknowledged, failure) = append_until_failure(&options, |f| arm(f, FaultOp::Write, &segment_name(1), ENOSPC));
        assert!(failure.to_string().contains("failed write of"), "{failure}");
        assert!(failure.to_string().contains("No space left on device"), "{failure}");
        reopen_keeps_acknowledged(&options, &acknowledged);
    }
}

#[test]
fn failed_preparation_of_the_next_segment_poisons_at_the_switch() {
    // EIO: a full disk (ENOSPC) is retried instead, see the next test.
    for mode in backends() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("wal");
        let mut options = options(&dir, mode, 8 * 1024);
        options.recycled_segments_max = 0;
        let faults = options.faults.clone();
        // The preparer starts creating segment 2 at open; fail that creation.
        arm(&faults, FaultOp::Create, "wal-00000000000000000002", EIO);
        let opened = open(&options, 0);
        let mut acknowledged = Vec::new();
        let failure = loop {
            let (tx, rx) = mpsc::channel();
            opened.wal.append(payload(1, 1500), Box::new(move |r| tx.send(r).unwrap())).unwrap();
            match rx.recv_timeout(Duration::from_secs(10)).unwrap() {
                Ok(lsn) => acknowledged.push(lsn),
                Err(e) => break e,
            }
        };
        assert!(failure.to_string().contains("failed preparation of segment 2"), "{failure}");
        assert!(acknowledged.len() >= 3, "segment 1 holds several records before the switch");
        drop(opened);
        reopen_keeps_acknowledged(&options, &acknowledged);
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn full_disk_refuses_appends_without_poisoning_and_resumes_once_space_is_freed() {
    for mode in backends() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("wal");
        let mut options = options(&dir, mode, 8 * 1024);
        options.recycled_segments_max = 0;
        let faults = options.faults.clone();
        // Every creation of segment 2 fails, like a disk that stays full.
        faults.arm(FaultRule { op: FaultOp::Create, path_contains: segment_name(2).replace(".log", ""), skip: 0, action: FaultAction::Error(ENOSPC), once: false });
        let opened = open(&options, 0);
        let first = append_durable(&opened.wal, payload(1, 1500));
        wait_until("the wal reports the full disk", || opened.wal.disk_full().is_some());
        let refused = opened.wal.append(payload(2, 1500), Box::new(|_| {})).unwrap_err();
        assert!(matches!(refused, WalError::Io { errno: Some(ENOSPC), .. }), "{refused}");
        assert!(refused.to_string().contains("No space left on device"), "{refused}");
        assert!(opened.wal.poisoned().is_none(), "a full disk does not poison");
        // Space is freed: the preparer's retry succeeds and appends go on across the switch.
        faults.clear();
        wait_until("the wal takes writes again", || opened.wal.disk_full().is_none());
        let later: Vec<Lsn> = (0..12).map(|i| append_durable(&opened.wal, payload(10 + i, 1500))).collect();
        assert_eq!(later[0], first + 1, "the refused append took no lsn");
        assert!(segment_files(&dir).len() >= 2, "appends went on into segment 2: {:?}", segment_files(&dir));
        drop(opened);
        let reopened = open(&options, 0);
        assert_eq!(reopened.replayed.len(), 13, "every acknowledged record recovered");
    }
}
