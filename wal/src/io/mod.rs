//! The writer thread's I/O backend: "write these bytes at this offset, then fdatasync".
//!
//! Group commit is written once against [`SegmentIo`]; two backends implement it:
//! [`pwrite::PwriteIo`] (`pwrite` loop + `fdatasync`) and [`uring::UringIo`] (a write SQE linked
//! to a DATASYNC fsync SQE, submitted together). Both call the fault-injection hook
//! ([`lookback_common::Faults::check`]) before each operation, so tests fail writes and syncs on
//! the same path a failing disk would.
//!
//! Errors are never retried here: the caller poisons the WAL.

pub mod pwrite;
pub mod uring;

use std::fs::File;
use std::io;
use std::path::Path;

use lookback_common::Faults;

use crate::error::WalError;
use crate::options::{IoBackendKind, IoMode};

/// Which step of a write-and-sync failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoStep {
    Write,
    Fdatasync,
}

impl IoStep {
    pub fn name(self) -> &'static str {
        match self {
            IoStep::Write => "write",
            IoStep::Fdatasync => "fdatasync",
        }
    }
}

#[derive(Debug)]
pub struct IoFailure {
    pub step: IoStep,
    pub error: io::Error,
}

impl IoFailure {
    pub fn write(error: io::Error) -> IoFailure {
        IoFailure { step: IoStep::Write, error }
    }

    pub fn sync(error: io::Error) -> IoFailure {
        IoFailure { step: IoStep::Fdatasync, error }
    }
}

pub trait SegmentIo: Send {
    fn kind(&self) -> IoBackendKind;

    /// Writes all of `bytes` at `offset` of `file`, then fdatasyncs it; returns once both have
    /// completed. `path` names the file for the fault hook and messages.
    fn write_and_sync(&mut self, file: &File, path: &Path, offset: u64, bytes: &[u8]) -> Result<(), IoFailure>;
}

/// Resolves `mode` into a backend. `Auto` probes io_uring and falls back to pwrite, logging
/// which one it picked; `IoUring` fails when the kernel (or a seccomp filter) refuses it.
pub fn open_backend(mode: IoMode, faults: &Faults) -> Result<Box<dyn SegmentIo>, WalError> {
    match mode {
        IoMode::Pwrite => Ok(Box::new(pwrite::PwriteIo::new(faults.clone()))),
        IoMode::IoUring => match uring::UringIo::probe(faults.clone()) {
            Ok(io) => Ok(Box::new(io)),
            Err(e) => Err(WalError::io("set up io_uring for the wal (io = IoUring)", &e)),
        },
        IoMode::Auto => match uring::UringIo::probe(faults.clone()) {
            Ok(io) => {
                tracing::info!("wal uses io_uring for group commit");
                Ok(Box::new(io))
            }
            Err(e) => {
                tracing::warn!(error = %e, "io_uring is unavailable; wal falls back to pwrite + fdatasync");
                Ok(Box::new(pwrite::PwriteIo::new(faults.clone())))
            }
        },
    }
}

/// Whether this process can use io_uring (ring creation and a NOP round trip succeed).
pub fn io_uring_available() -> bool {
    uring::UringIo::probe(Faults::none()).is_ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests panic with the error
mod tests {
    use super::*;
    use lookback_common::faults::EIO;
    use lookback_common::{FaultAction, FaultOp, FaultRule};
    use std::os::unix::fs::FileExt;

    fn backends(faults: &Faults) -> Vec<Box<dyn SegmentIo>> {
        let mut out: Vec<Box<dyn SegmentIo>> = vec![Box::new(pwrite::PwriteIo::new(faults.clone()))];
        match uring::UringIo::probe(faults.clone()) {
            Ok(io) => out.push(Box::new(io)),
            Err(e) => eprintln!("SKIP io_uring backend: io_uring unavailable here: {e}"),
        }
        out
    }

    #[test]
    fn both_backends_write_at_offset_and_sync() {
        let dir = tempfile::tempdir().unwrap();
        for mut io in backends(&Faults::none()) {
            let path = dir.path().join(format!("{:?}.bin", io.kind()));
            let file = File::options().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
            file.write_all_at(&[0; 4096], 0).unwrap();
            let data: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
            io.write_and_sync(&file, &path, 100, &data).unwrap();
            let back = std::fs::read(&path).unwrap();
            assert_eq!(&back[100..3100], &data[..], "{:?}", io.kind());
            assert!(back[..100].iter().all(|b| *b == 0));
        }
    }

    #[test]
    fn both_backends_report_injected_faults_by_step() {
        let dir = tempfile::tempdir().unwrap();
        let faults = Faults::none();
        for mut io in backends(&faults) {
            let path = dir.path().join("f.bin");
            let file = File::options().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
            for (op, step) in [(FaultOp::Write, IoStep::Write), (FaultOp::Sync, IoStep::Fdatasync)] {
                faults.arm(FaultRule { op, path_contains: "f.bin".into(), skip: 0, action: FaultAction::Error(EIO), once: true });
                let failure = io.write_and_sync(&file, &path, 0, b"abc").unwrap_err();
                assert_eq!(failure.step, step, "{:?}", io.kind());
                assert_eq!(failure.error.raw_os_error(), Some(EIO));
            }
        }
    }
}
