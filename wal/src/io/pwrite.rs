//! The portable backend: a `pwrite` loop (short writes and EINTR resumed) then `fdatasync`.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use lookback_common::{FaultOp, Faults};

use super::{IoFailure, SegmentIo};
use crate::options::IoBackendKind;

pub struct PwriteIo {
    faults: Faults,
}

impl PwriteIo {
    pub fn new(faults: Faults) -> PwriteIo {
        PwriteIo { faults }
    }
}

impl SegmentIo for PwriteIo {
    fn kind(&self) -> IoBackendKind {
        IoBackendKind::Pwrite
    }

    fn write_and_sync(&mut self, file: &File, path: &Path, offset: u64, bytes: &[u8]) -> Result<(), IoFailure> {
        self.faults.check(FaultOp::Write, path).map_err(IoFailure::write)?;
        pwrite_all(file, offset, bytes).map_err(IoFailure::write)?;
        self.faults.check(FaultOp::Sync, path).map_err(IoFailure::sync)?;
        fdatasync(file).map_err(IoFailure::sync)?;
        self.faults.synced_file(path, Some((offset, bytes.len())));
        Ok(())
    }
}

fn pwrite_all(file: &File, offset: u64, bytes: &[u8]) -> io::Result<()> {
    let mut done = 0usize;
    while done < bytes.len() {
        let rest = &bytes[done..];
        let position = libc::off_t::try_from(offset + done as u64)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "write offset exceeds off_t"))?;
        // SAFETY: `rest` is a live, initialized slice for the duration of the call; the kernel
        // reads at most `rest.len()` bytes from it.
        let written = unsafe { libc::pwrite(file.as_raw_fd(), rest.as_ptr().cast(), rest.len(), position) };
        if written < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(error);
        }
        if written == 0 {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "pwrite wrote zero bytes"));
        }
        done += written as usize;
    }
    Ok(())
}

fn fdatasync(file: &File) -> io::Result<()> {
    loop {
        // SAFETY: plain system call on an open descriptor owned by `file`.
        if unsafe { libc::fdatasync(file.as_raw_fd()) } == 0 {
            return Ok(());
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}
