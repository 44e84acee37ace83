//! Append → recover roundtrips: many segments, checkpoints and recycling, concurrent appenders
//! and group commit, LSN continuity, limits and shutdown. Every test runs on both backends.
#![allow(clippy::unwrap_used)] // tests panic with the error

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use lookback_wal::{IoBackendKind, IoMode, Lsn, WalError};

fn expected_backend(mode: IoMode) -> IoBackendKind {
    match mode {
        IoMode::IoUring => IoBackendKind::IoUring,
        _ => IoBackendKind::Pwrite,
    }
}

#[test]
fn roundtrip_across_segments_with_checkpoints_and_recycling() {
    for mode in backends() {
        let tmp = tempfile::tempdir().unwrap();
        let options = options(tmp.path(), mode, 64 * 1024);
        let opened = open(&options, 0);
        assert_eq!(opened.wal.backend(), expected_backend(mode));
        assert_eq!((opened.report.last_lsn, opened.replayed.len()), (0, 0));
        let mut model: Vec<Vec<u8>> = Vec::new();
        let mut checkpoint = 0;
        for i in 0..400u64 {
            let data = payload(i + 1, (i as usize * 97) % 6000);
            let lsn = append_durable(&opened.wal, data.clone());
            model.push(data);
            assert_eq!(lsn, model.len() as Lsn, "first lsn is 1 and lsns are dense");
            if lsn.is_multiple_of(100) {
                let files_before = opened.wal.stats().segment_files;
                checkpoint = lsn - 50;
                opened.wal.checkpoint(checkpoint).unwrap();
                assert!(opened.wal.stats().segment_files < files_before, "checkpoint retires segments");
            }
        }
        let stats = opened.wal.stats();
        assert_eq!(stats.records, 400);
        assert!(stats.syncs >= 400 && stats.bytes_written > 0);
        assert_eq!(stats.sync_micros_buckets.last().map(|b| b.1), Some(stats.syncs));
        let recycled = std::fs::read_dir(tmp.path()).unwrap().filter(|e| {
            e.as_ref().unwrap().file_name().to_string_lossy().starts_with("recycle-")
        });
        assert!(recycled.count() <= options.recycled_segments_max);
        opened.wal.shutdown();
        drop(opened);

        let reopened = open(&options, checkpoint);
        assert_eq!(reopened.report.last_lsn, 400);
        assert!(reopened.report.truncated.is_none());
        let expected: Vec<(Lsn, Vec<u8>)> =
            model.iter().enumerate().skip(checkpoint as usize).map(|(i, p)| (i as Lsn + 1, p.clone())).collect();
        assert_eq!(reopened.replayed, expected);
        assert_eq!(append_durable(&reopened.wal, b"after reopen".to_vec()), 401);
        drop(reopened);
        let third = open(&options, checkpoint);
        assert_eq!(third.replayed.len(), expected.len() + 1);
        assert_eq!(third.replayed.last().map(|r| r.1.as_slice()), Some(&b"after reopen"[..]));
    }
}

#[test]
fn concurrent_appenders_coalesce_and_callbacks_run_in_lsn_order() {
    const THREADS: u64 = 8;
    const PER_THREAD: u64 = 150;
    for mode in backends() {
        let tmp = tempfile::tempdir().unwrap();
        let options = options(tmp.path(), mode, 256 * 1024);
        let wal = Arc::new(open(&options, 0).wal);
        let completed = Arc::new(Mutex::new(Vec::new()));
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let wal = Arc::clone(&wal);
                let completed = Arc::clone(&completed);
                std::thread::spawn(move || {
                    let mut mine = Vec::new();
                    for i in 0..PER_THREAD {
                        let completed = Arc::clone(&completed);
                        let data = format!("thread {t} record {i}").into_bytes();
                        let lsn = wal
                            .append(data, Box::new(move |r| completed.lock().unwrap().push(r.expect("durable"))))
                            .unwrap();
                        mine.push(lsn);
                    }
                    assert!(mine.windows(2).all(|w| w[0] < w[1]), "one thread's lsns increase");
                    mine
                })
            })
            .collect();
        let mut assigned: Vec<Lsn> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
        assigned.sort();
        let total = THREADS * PER_THREAD;
        assert_eq!(assigned, (1..=total).collect::<Vec<_>>());
        wal.wait_durable(total).unwrap();
        wal.shutdown();
        let completed = completed.lock().unwrap().clone();
        assert_eq!(completed, (1..=total).collect::<Vec<_>>(), "each callback once, in lsn order");
        let stats = wal.stats();
        assert!(stats.syncs < total, "group commit must coalesce: {} syncs for {total} appends", stats.syncs);
        eprintln!("{mode:?}: {total} appends in {} syncs", stats.syncs);
        drop(wal);
        let reopened = open(&options, 0);
        assert_eq!(reopened.replayed.len() as u64, total);
        for t in 0..THREADS {
            let records: Vec<String> = reopened
                .replayed
                .iter()
                .map(|(_, p)| String::from_utf8(p.clone()).unwrap())
                .filter(|s| s.starts_with(&format!("thread {t} ")))
                .collect();
            let expected: Vec<String> = (0..PER_THREAD).map(|i| format!("thread {t} record {i}")).collect();
            assert_eq!(records, expected, "thread {t}'s records in its order");
        }
    }
}

#[test]
fn oversized_records_and_use_after_shutdown_are_rejected() {
    for mode in backends() {
        let tmp = tempfile::tempdir().unwrap();
        let options = options(tmp.path(), mode, 64 * 1024);
        let opened = open(&options, 0);
        let max = options.record_bytes_max;
        let err = opened.wal.append(vec![0; max + 1], Box::new(|_| {})).unwrap_err();
        assert_eq!(err, WalError::RecordTooLarge { bytes: max + 1, max });
        assert_eq!(opened.wal.last_assigned_lsn(), 0, "a rejected append assigns nothing");
        assert_eq!(append_durable(&opened.wal, vec![7; max]), 1, "a record of exactly record_bytes_max fits");
        assert_eq!(append_durable(&opened.wal, Vec::new()), 2, "empty payloads are records too");
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..20 {
            let tx = tx.clone();
            opened.wal.append(vec![1; 100], Box::new(move |r| tx.send(r).unwrap())).unwrap();
        }
        opened.wal.shutdown();
        let drained: Vec<_> = rx.try_iter().collect();
        assert_eq!(drained.len(), 20, "shutdown drains queued appends");
        assert!(drained.iter().all(|r| r.is_ok()));
        let err = opened.wal.append(vec![1], Box::new(|_| {})).unwrap_err();
        assert_eq!(err, WalError::ShutDown);
        assert_eq!(opened.wal.wait_durable(22), Ok(()));
        assert_eq!(opened.wal.wait_durable(23), Err(WalError::ShutDown));
        drop(opened);
        let reopened = open(&options, 0);
        assert_eq!(reopened.replayed.len(), 22);
        assert_eq!(reopened.replayed[0].1, vec![7; max]);
        assert!(reopened.replayed[1].1.is_empty());
    }
}

#[test]
fn checkpoint_beyond_the_log_continues_lsns_after_it() {
    for mode in backends() {
        let tmp = tempfile::tempdir().unwrap();
        let options = options(tmp.path(), mode, 64 * 1024);
        let opened = open(&options, 0);
        for i in 1..=5 {
            append_durable(&opened.wal, payload(i, 10));
        }
        drop(opened);
        // The storage layer checkpointed up to 100 (e.g. from another source of truth).
        let jumped = open(&options, 100);
        assert_eq!((jumped.report.last_lsn, jumped.replayed.len()), (100, 0));
        assert_eq!(jumped.wal.last_assigned_lsn(), 100);
        assert_eq!(jumped.wal.durable_lsn(), 100);
        assert_eq!(append_durable(&jumped.wal, payload(101, 10)), 101);
        assert_eq!(append_durable(&jumped.wal, payload(102, 10)), 102);
        drop(jumped);
        let reopened = open(&options, 100);
        assert_eq!(reopened.replayed, vec![(101, payload(101, 10)), (102, payload(102, 10))]);
        assert_eq!(reopened.report.last_lsn, 102);
    }
}

#[test]
fn fresh_directory_is_created_and_starts_at_lsn_one_after_its_checkpoint() {
    for mode in backends() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("nested").join("wal");
        let options = options(&dir, mode, 64 * 1024);
        let opened = open(&options, 0);
        assert_eq!(append_durable(&opened.wal, b"x".to_vec()), 1);
        assert_eq!(segment_files(&dir).first().map(String::as_str), Some(segment_name(1).as_str()));
    }
}

#[test]
fn auto_mode_picks_a_working_backend() {
    let tmp = tempfile::tempdir().unwrap();
    let options = options(tmp.path(), IoMode::Auto, 64 * 1024);
    let opened = open(&options, 0);
    let expected = if lookback_wal::io_uring_available() { IoBackendKind::IoUring } else { IoBackendKind::Pwrite };
    assert_eq!(opened.wal.backend(), expected);
    assert_eq!(append_durable(&opened.wal, b"auto".to_vec()), 1);
}

#[test]
fn backpressure_bounds_the_queue_and_every_append_completes() {
    for mode in backends() {
        let tmp = tempfile::tempdir().unwrap();
        let mut options = options(tmp.path(), mode, 256 * 1024);
        options.queue_bytes_max = 3 * 10_000;
        let wal = Arc::new(open(&options, 0).wal);
        let peak = Arc::new(Mutex::new(0u64));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let wal = Arc::clone(&wal);
                let peak = Arc::clone(&peak);
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        wal.append(vec![3; 10_000], Box::new(|r| assert!(r.is_ok()))).unwrap();
                        let queued = wal.stats().queued_bytes;
                        let mut peak = peak.lock().unwrap();
                        *peak = (*peak).max(queued);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        wal.wait_durable(200).unwrap();
        assert!(*peak.lock().unwrap() <= options.queue_bytes_max as u64, "queue exceeded its bound");
        assert_eq!(wal.stats().queued_bytes, 0);
        assert_eq!(wal.stats().records, 200);
    }
}

fn recycled_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).unwrap().filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("recycle-")).count()
}

#[test]
fn checkpointed_segments_are_recycled_up_to_the_limit_and_reused() {
    for mode in backends() {
        let tmp = tempfile::tempdir().unwrap();
        let mut options = options(tmp.path(), mode, 8 * 1024);
        options.recycled_segments_max = 1;
        let opened = open(&options, 0);
        let mut lsn = 0;
        while opened.wal.stats().segment_files < 4 {
            lsn = append_durable(&opened.wal, payload(lsn + 1, 1500));
        }
        let checkpoint = lsn;
        opened.wal.checkpoint(checkpoint).unwrap();
        assert_eq!(opened.wal.stats().segment_files, 1, "all but the active segment are retired");
        assert_eq!(recycled_files(tmp.path()), 1, "one kept for reuse, the others deleted");
        // Fill the active segment and the prepared one: the next preparation reuses the pool file.
        while opened.wal.stats().segment_files < 3 {
            lsn = append_durable(&opened.wal, payload(lsn + 1, 1500));
        }
        opened.wal.shutdown();
        assert_eq!(recycled_files(tmp.path()), 0, "the recycled file became a segment again");
        drop(opened);
        let reopened = open(&options, checkpoint);
        assert_eq!(reopened.report.last_lsn, lsn);
        assert_eq!(reopened.replayed.iter().map(|r| r.0).collect::<Vec<_>>(), (checkpoint + 1..=lsn).collect::<Vec<_>>());
        drop(reopened);
        match try_open(&options, 0) {
            Err(WalError::Corrupt { reason, .. }) => assert!(reason.contains("records are missing"), "{reason}"),
            other => panic!("opening without the checkpoint must refuse, got {:?}", other.map(|o| o.replayed.len())),
        }
    }
}
