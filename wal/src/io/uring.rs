//! The io_uring backend: one write SQE linked (`IO_LINK`) to an fsync SQE with
//! `FsyncFlags::DATASYNC`, submitted together with one `submit_and_wait(2)`.
//!
//! A short write breaks the link (the kernel cancels the fsync with `ECANCELED`), so the
//! remainder is resubmitted, again linked to an fsync, until everything is written and synced.
//! Every completion's result is checked. The call blocks until the kernel has finished with the
//! buffer, which is what makes handing it a borrowed slice sound.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use io_uring::{opcode, squeue, types, IoUring};
use lookback_common::{FaultOp, Faults};

use super::{IoFailure, SegmentIo};
use crate::options::IoBackendKind;

/// Submission queue entries: one write and one fsync are in flight at a time.
const RING_ENTRIES: u32 = 8;
const WRITE_TAG: u64 = 1;
const SYNC_TAG: u64 = 2;
const NOP_TAG: u64 = 3;

pub struct UringIo {
    ring: IoUring,
    faults: Faults,
}

/// Results of one submission; `None` where that entry was not submitted.
#[derive(Default)]
struct Completions {
    write: Option<i32>,
    sync: Option<i32>,
}

impl UringIo {
    /// Creates a ring and proves it works with a NOP round trip.
    pub fn probe(faults: Faults) -> io::Result<UringIo> {
        let mut ring = IoUring::new(RING_ENTRIES)?;
        let nop = opcode::Nop::new().build().user_data(NOP_TAG);
        // SAFETY: a NOP references no memory.
        unsafe { ring.submission().push(&nop) }.map_err(|_| io::Error::other("io_uring submission queue is full"))?;
        submit_and_wait(&ring, 1)?;
        let Some(cqe) = ring.completion().next() else {
            return Err(io::Error::other("io_uring NOP produced no completion"));
        };
        if cqe.result() < 0 {
            return Err(io::Error::from_raw_os_error(-cqe.result()));
        }
        Ok(UringIo { ring, faults })
    }

    /// Submits a write of `bytes` (linked to an fdatasync when `with_sync`) and waits for all.
    fn submit(&mut self, file: &File, offset: u64, bytes: &[u8], with_sync: bool) -> io::Result<Completions> {
        let fd = types::Fd(file.as_raw_fd());
        let len = u32::try_from(bytes.len()).map_err(|_| io::Error::other("write exceeds u32 length"))?;
        let mut write = opcode::Write::new(fd, bytes.as_ptr(), len).offset(offset).build().user_data(WRITE_TAG);
        if with_sync {
            write = write.flags(squeue::Flags::IO_LINK);
        }
        let sync = opcode::Fsync::new(fd).flags(types::FsyncFlags::DATASYNC).build().user_data(SYNC_TAG);
        let entries = if with_sync { 2 } else { 1 };
        {
            let mut sq = self.ring.submission();
            // SAFETY: `bytes` outlives the submission: this function waits for every completion
            // below before returning, and the ring is drained on each call.
            unsafe {
                sq.push(&write).map_err(|_| io::Error::other("io_uring submission queue is full"))?;
                if with_sync {
                    sq.push(&sync).map_err(|_| io::Error::other("io_uring submission queue is full"))?;
                }
            }
        }
        submit_and_wait(&self.ring, entries)?;
        let mut out = Completions::default();
        let mut seen = 0;
        while seen < entries {
            let next = self.ring.completion().next();
            match next {
                Some(cqe) if cqe.user_data() == WRITE_TAG => out.write = Some(cqe.result()),
                Some(cqe) if cqe.user_data() == SYNC_TAG => out.sync = Some(cqe.result()),
                Some(_) => continue,
                None => {
                    submit_and_wait(&self.ring, entries - seen)?;
                    continue;
                }
            }
            seen += 1;
        }
        Ok(out)
    }
}

/// `submit_and_wait`, resumed after EINTR: the entries were submitted and must be waited for.
fn submit_and_wait(ring: &IoUring, want: usize) -> io::Result<()> {
    loop {
        match ring.submit_and_wait(want) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

fn cqe_error(result: i32) -> io::Error {
    io::Error::from_raw_os_error(-result)
}

impl SegmentIo for UringIo {
    fn kind(&self) -> IoBackendKind {
        IoBackendKind::IoUring
    }

    fn write_and_sync(&mut self, file: &File, path: &Path, offset: u64, bytes: &[u8]) -> Result<(), IoFailure> {
        self.faults.check(FaultOp::Write, path).map_err(IoFailure::write)?;
        // An injected sync fault lets the write happen and fails the sync, as a real one would.
        let sync_fault = self.faults.check(FaultOp::Sync, path).err();
        let mut done = 0usize;
        loop {
            let rest = &bytes[done..];
            let with_sync = sync_fault.is_none();
            let results = self.submit(file, offset + done as u64, rest, with_sync).map_err(IoFailure::write)?;
            let written = results.write.unwrap_or(0);
            if written < 0 {
                return Err(IoFailure::write(cqe_error(written)));
            }
            if written == 0 && !rest.is_empty() {
                return Err(IoFailure::write(io::Error::new(io::ErrorKind::WriteZero, "io_uring write wrote zero bytes")));
            }
            done += written as usize;
            if done < bytes.len() {
                continue; // short write: the linked fsync was cancelled; resubmit the rest
            }
            if let Some(error) = sync_fault {
                return Err(IoFailure::sync(error));
            }
            return match results.sync {
                Some(result) if result >= 0 => {
                    self.faults.synced_file(path, Some((offset, bytes.len())));
                    Ok(())
                }
                Some(result) => Err(IoFailure::sync(cqe_error(result))),
                None => Err(IoFailure::sync(io::Error::other("io_uring fsync produced no completion"))),
            };
        }
    }
}
