//! Configuration of a [`crate::Wal`]: directory, size limits and the I/O backend.
//!
//! Every limit is named with its unit last. Defaults suit a production server (64 MiB segments,
//! 32 MiB groups); tests use small segments. [`WalOptions::validate`] states the relations the
//! limits must satisfy; `Wal::open` asserts them, so an engine should validate its configuration
//! first and report a bad value as a configuration error.

use std::path::PathBuf;

use lookback_common::Faults;

use crate::format::{RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES};

const MIB: usize = 1024 * 1024;

pub const SEGMENT_BYTES_DEFAULT: u64 = 64 * MIB as u64;
pub const GROUP_BYTES_MAX_DEFAULT: usize = 32 * MIB;
pub const QUEUE_BYTES_MAX_DEFAULT: usize = 256 * MIB;
pub const RECORD_BYTES_MAX_DEFAULT: usize = 48 * MIB;
pub const RECYCLED_SEGMENTS_MAX_DEFAULT: usize = 4;

/// Smallest segment accepted: one page.
pub const SEGMENT_BYTES_MIN: u64 = 4096;
/// Largest segment accepted: recovery reads one whole segment into memory, and one write of a
/// whole segment must fit io_uring's `u32` length.
pub const SEGMENT_BYTES_MAX: u64 = 1 << 30;

/// How the writer thread issues its writes and fdatasyncs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoMode {
    /// Probe io_uring at open (ring creation and a NOP round trip); fall back to pwrite.
    Auto,
    /// io_uring or fail to open.
    IoUring,
    /// `pwrite` + `fdatasync` system calls.
    Pwrite,
}

/// The backend actually in use, after `IoMode::Auto` was resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoBackendKind {
    IoUring,
    Pwrite,
}

#[derive(Clone, Debug)]
pub struct WalOptions {
    pub dir: PathBuf,
    /// Size of every segment file, pre-allocated and pre-zeroed.
    pub segment_bytes: u64,
    /// Most record bytes coalesced into one write + fdatasync (a single larger record still
    /// forms its own group).
    pub group_bytes_max: usize,
    /// `append` blocks while this many payload bytes are queued or in flight.
    pub queue_bytes_max: usize,
    /// Largest payload accepted by `append`.
    pub record_bytes_max: usize,
    /// Old segment files kept (renamed) for reuse instead of being deleted.
    pub recycled_segments_max: usize,
    pub io: IoMode,
    pub faults: Faults,
}

impl WalOptions {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        WalOptions {
            dir: dir.into(),
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            group_bytes_max: GROUP_BYTES_MAX_DEFAULT,
            queue_bytes_max: QUEUE_BYTES_MAX_DEFAULT,
            record_bytes_max: RECORD_BYTES_MAX_DEFAULT,
            recycled_segments_max: RECYCLED_SEGMENTS_MAX_DEFAULT,
            io: IoMode::Auto,
            faults: Faults::none(),
        }
    }

    /// Checks the relations between limits; the message names the offending option.
    pub fn validate(&self) -> Result<(), String> {
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&self.segment_bytes) {
            return Err(format!(
                "segment_bytes {} is outside {SEGMENT_BYTES_MIN}..={SEGMENT_BYTES_MAX}",
                self.segment_bytes
            ));
        }
        let record_room = self.segment_bytes - (SEGMENT_HEADER_BYTES + RECORD_HEADER_BYTES) as u64;
        if self.record_bytes_max as u64 > record_room {
            return Err(format!(
                "record_bytes_max {} does not fit a segment of {} bytes (at most {record_room})",
                self.record_bytes_max, self.segment_bytes
            ));
        }
        if self.record_bytes_max > u32::MAX as usize {
            return Err(format!("record_bytes_max {} exceeds the u32 length field", self.record_bytes_max));
        }
        if self.group_bytes_max == 0 {
            return Err("group_bytes_max must be positive".into());
        }
        if self.queue_bytes_max == 0 {
            return Err("queue_bytes_max must be positive".into());
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests panic with the error
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_relations_are_named() {
        let options = WalOptions::new("/tmp/x");
        assert_eq!(options.validate(), Ok(()));
        let mut small = options.clone();
        small.segment_bytes = 64 * 1024;
        let err = small.validate().unwrap_err();
        assert!(err.starts_with("record_bytes_max"), "{err}");
        small.record_bytes_max = 64 * 1024 - 56;
        assert_eq!(small.validate(), Ok(()));
        small.segment_bytes = 100;
        assert!(small.validate().unwrap_err().starts_with("segment_bytes"));
    }
}
