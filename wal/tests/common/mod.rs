//! Helpers shared by the WAL integration tests: backends to run under, small-segment options,
//! open-and-collect-replay, synchronous appends, and directory snapshots for damage tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use lookback_wal::{io_uring_available, IoMode, Lsn, RecoveryReport, Wal, WalError, WalOptions};

/// Both backends; io_uring is skipped loudly where the kernel refuses it.
pub fn backends() -> Vec<IoMode> {
    if io_uring_available() {
        vec![IoMode::Pwrite, IoMode::IoUring]
    } else {
        eprintln!("SKIP: io_uring is unavailable on this machine; running the pwrite backend only");
        vec![IoMode::Pwrite]
    }
}

pub fn options(dir: &Path, io: IoMode, segment_bytes: u64) -> WalOptions {
    let mut options = WalOptions::new(dir);
    options.io = io;
    options.segment_bytes = segment_bytes;
    options.record_bytes_max = (segment_bytes / 4) as usize;
    options.group_bytes_max = (segment_bytes / 2) as usize;
    options.queue_bytes_max = segment_bytes as usize * 4;
    options.recycled_segments_max = 2;
    options
}

pub struct Opened {
    pub wal: Wal,
    pub report: RecoveryReport,
    pub replayed: Vec<(Lsn, Vec<u8>)>,
}

pub fn try_open(options: &WalOptions, checkpoint_lsn: Lsn) -> Result<Opened, WalError> {
    let mut replayed = Vec::new();
    let (wal, report) = Wal::open(options.clone(), checkpoint_lsn, &mut |lsn, payload| {
        replayed.push((lsn, payload.to_vec()));
        Ok(())
    })?;
    assert_eq!(report.records_replayed, replayed.len() as u64);
    assert!(replayed.windows(2).all(|w| w[1].0 == w[0].0 + 1), "replay must be in lsn order without gaps");
    assert!(replayed.iter().all(|(lsn, _)| *lsn > checkpoint_lsn), "records <= checkpoint must be skipped");
    Ok(Opened { wal, report, replayed })
}

pub fn open(options: &WalOptions, checkpoint_lsn: Lsn) -> Opened {
    try_open(options, checkpoint_lsn).unwrap_or_else(|e| panic!("open wal in {}: {e}", options.dir.display()))
}

/// Appends and waits for the durability callback, which must report success with the same LSN.
pub fn append_durable(wal: &Wal, payload: Vec<u8>) -> Lsn {
    let (tx, rx) = mpsc::channel();
    let lsn = wal
        .append(payload, Box::new(move |result| tx.send(result).unwrap_or(())))
        .unwrap_or_else(|e| panic!("append: {e}"));
    let result = rx.recv_timeout(Duration::from_secs(10)).expect("durability callback within 10 s");
    assert_eq!(result, Ok(lsn));
    assert!(wal.durable_lsn() >= lsn);
    lsn
}

/// Deterministic payload for an LSN, `len` bytes.
pub fn payload(lsn: Lsn, len: usize) -> Vec<u8> {
    (0..len).map(|i| (lsn as usize * 31 + i * 7) as u8).collect()
}

pub type Snapshot = Vec<(PathBuf, Vec<u8>)>;

pub fn snapshot(dir: &Path) -> Snapshot {
    let mut files: Snapshot = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            (PathBuf::from(path.file_name().unwrap()), bytes)
        })
        .collect();
    files.sort();
    files
}

pub fn restore(dir: &Path, snapshot: &Snapshot) {
    if dir.exists() {
        std::fs::remove_dir_all(dir).unwrap();
    }
    std::fs::create_dir_all(dir).unwrap();
    for (name, bytes) in snapshot {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

pub fn segment_name(index: u64) -> String {
    format!("wal-{index:020}.log")
}

pub fn segment_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("wal-") && n.ends_with(".log"))
        .collect();
    names.sort();
    names
}
