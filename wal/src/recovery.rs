//! Recovery: find the end of the log, tell a torn tail from corruption, then replay.
//!
//! Pass 1 walks segments in index order. A segment continues the chain if its header is valid,
//! names its own index, and its `start_lsn` is the next expected LSN (or, across a checkpoint,
//! any LSN up to `checkpoint_lsn + 1`: segments wholly covered by a checkpoint may be gone).
//! Inside a segment a record is accepted while its length fits, its crc matches and its LSN is
//! the next expected one. The first spot that fails ends the chain.
//!
//! The tail is everything after that spot: the rest of that segment and all later files. If it
//! is all zeros, the log ended cleanly. Otherwise it is scanned byte by byte for valid records
//! with `lsn >= expected`; one whose `group_first_lsn > expected` belongs to a *later* group
//! than the one that was being written at the spot, so that later group was written (and maybe
//! acknowledged) after the damage: recovery refuses with [`WalError::Corrupt`]. Without one,
//! the damage is a torn final group, none of which was acknowledged: the segment is zeroed from
//! the spot, later files are retired, and appends resume exactly at the spot.
//!
//! Pass 2 re-reads the live segments and replays records with `lsn > checkpoint_lsn`, so the
//! replay callback only sees records of a log that opens successfully.
//!
//! Known limit: a final group damaged *after* it was acknowledged (bit rot in the last write)
//! looks exactly like a torn write and is truncated; nothing in the format can tell them apart.

use std::path::{Path, PathBuf};

use lookback_common::Lsn;

use crate::error::{file_name, WalError};
use crate::format::{decode_record, peek_lsn, HeaderState, SegmentHeader, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use crate::prepare::PreparedSegment;
use crate::recycle::RecyclePool;
use crate::segment_files::SegmentDir;

#[derive(Debug, Clone)]
pub struct RecoveryReport {
    /// Records handed to the replay callback (those with `lsn > checkpoint_lsn`).
    pub records_replayed: u64,
    /// The highest LSN in the log or the checkpoint, whichever is larger: the next append gets
    /// `last_lsn + 1`.
    pub last_lsn: Lsn,
    /// Set when a torn tail was cut off.
    pub truncated: Option<Truncation>,
}

#[derive(Debug, Clone)]
pub struct Truncation {
    pub path: PathBuf,
    pub offset: u64,
    pub reason: String,
}

/// A segment file that holds records, oldest first.
#[derive(Debug, Clone)]
pub struct LiveSegment {
    pub index: u64,
    pub start_lsn: Lsn,
    pub path: PathBuf,
}

/// Where appends continue inside an existing segment.
#[derive(Debug)]
pub struct ResumePoint {
    pub index: u64,
    pub path: PathBuf,
    pub offset: u64,
    pub bytes: u64,
}

#[derive(Debug)]
pub struct Recovered {
    pub report: RecoveryReport,
    pub segments: Vec<LiveSegment>,
    /// `None`: the next record starts a new segment (`next_index`).
    pub resume: Option<ResumePoint>,
    pub next_lsn: Lsn,
    pub next_index: u64,
    /// An unwritten, zeroed `next_index` file found in the directory, ready for use.
    pub adopted: Option<PreparedSegment>,
}

/// The replay callback given to `Wal::open`: Err aborts the open with `WalError::Replay`.
pub type Replay<'a> = &'a mut dyn FnMut(Lsn, &[u8]) -> Result<(), String>;

/// A segment pass 1 accepted, with where its chain ended.
struct Walked {
    live: LiveSegment,
    end: u64,
}

/// The result of pass 1. Only the last segment's bytes are kept, so memory stays at one
/// segment however many segments the log has.
struct Walk {
    segments: Vec<Walked>,
    last_bytes: Vec<u8>,
    expected: Lsn,
}

struct Chain {
    checkpoint_lsn: Lsn,
    /// Next LSN the chain expects; `None` before the first segment.
    expected: Option<Lsn>,
}

enum Tail {
    Clean,
    Torn(Truncation),
}

pub fn recover(
    dir: &SegmentDir,
    pool: &RecyclePool,
    files: &[(u64, PathBuf)],
    segment_bytes: u64,
    checkpoint_lsn: Lsn,
    replay: Replay<'_>,
) -> Result<Recovered, WalError> {
    check_contiguous(files)?;
    let walk = walk_segments(dir, files, checkpoint_lsn)?;
    let expected = walk.expected;
    let tail_files = &files[walk.segments.len()..];
    let last = walk.segments.last().map(|w| (w, walk.last_bytes.as_slice()));
    let tail = check_tail(dir, last, tail_files, expected)?;
    if let Tail::Torn(truncation) = &tail {
        tracing::warn!(path = %truncation.path.display(), offset = truncation.offset, reason = %truncation.reason,
            "wal ends in a torn write; truncating the unacknowledged tail");
        if let Some((w, bytes)) = last.filter(|(w, _)| w.live.path == truncation.path) {
            let file = dir.open_segment(&w.live.path)?;
            dir.zero_range(&file, &w.live.path, w.end, bytes.len() as u64)?;
        }
    }
    let next_index = walk.segments.last().map(|w| w.live.index + 1).or(tail_files.first().map(|(i, _)| *i)).unwrap_or(1);
    let adopted = settle_tail_files(dir, pool, tail_files, next_index, segment_bytes, &tail)?;
    let next_lsn = expected.max(checkpoint_lsn.saturating_add(1));
    // Resume inside the last segment unless a checkpoint beyond the log forces an LSN jump,
    // which must start a new segment (a segment's LSNs are contiguous).
    let resume = last.filter(|_| next_lsn == expected).map(|(w, bytes)| ResumePoint {
        index: w.live.index,
        path: w.live.path.clone(),
        offset: w.end,
        bytes: bytes.len() as u64,
    });
    let segments: Vec<LiveSegment> = walk.segments.into_iter().map(|w| w.live).collect();
    let records_replayed = replay_segments(dir, &segments, checkpoint_lsn, replay)?;
    let truncated = match tail {
        Tail::Torn(truncation) => Some(truncation),
        Tail::Clean => None,
    };
    let report = RecoveryReport { records_replayed, last_lsn: next_lsn - 1, truncated };
    Ok(Recovered { report, segments, resume, next_lsn, next_index, adopted })
}

fn check_contiguous(files: &[(u64, PathBuf)]) -> Result<(), WalError> {
    for pair in files.windows(2) {
        let [(before, _), (after, path)] = pair else { continue };
        if *after != before + 1 {
            return Err(WalError::corrupt(path, 0, format!("wal segments {} to {} are missing", before + 1, after - 1)));
        }
    }
    Ok(())
}

/// Pass 1: validates the chain through consecutive segments, without replaying.
fn walk_segments(dir: &SegmentDir, files: &[(u64, PathBuf)], checkpoint_lsn: Lsn) -> Result<Walk, WalError> {
    let mut chain = Chain { checkpoint_lsn, expected: None };
    let mut segments = Vec::new();
    let mut last_bytes = Vec::new();
    for (index, path) in files {
        let bytes = dir.read_segment(path)?;
        let header = match SegmentHeader::decode(&bytes) {
            HeaderState::Valid(header) => header,
            HeaderState::Unsupported(version) => return Err(unsupported(path, version)),
            HeaderState::Zero | HeaderState::Invalid(_) => break,
        };
        if header.index != *index {
            return Err(WalError::corrupt(path, 0, format!("segment header names segment {}", header.index)));
        }
        if !chain.continues_at(header.start_lsn, path)? {
            break;
        }
        let end = chain.walk(&bytes, &mut |_, _| Ok(()))?;
        segments.push(Walked { live: LiveSegment { index: *index, start_lsn: header.start_lsn, path: path.clone() }, end });
        last_bytes = bytes;
    }
    let expected = chain.expected.unwrap_or(checkpoint_lsn.saturating_add(1));
    Ok(Walk { segments, last_bytes, expected })
}

fn unsupported(path: &Path, version: u16) -> WalError {
    let reason = format!("segment format version {version} is not supported (this build reads version {})", crate::format::FORMAT_VERSION);
    WalError::corrupt(path, 0, reason)
}

impl Chain {
    /// Whether a segment starting at `start_lsn` continues the chain; Err when it contradicts it.
    fn continues_at(&mut self, start_lsn: Lsn, path: &Path) -> Result<bool, WalError> {
        let covered_next = self.checkpoint_lsn.saturating_add(1);
        if start_lsn == 0 {
            return Err(WalError::corrupt(path, 0, "segment header has start lsn 0"));
        }
        match self.expected {
            None if start_lsn > covered_next => Err(WalError::corrupt(
                path,
                0,
                format!("segment starts at lsn {start_lsn} but the checkpoint covers only lsn {}: records are missing", self.checkpoint_lsn),
            )),
            Some(expected) if start_lsn < expected => Err(WalError::corrupt(
                path,
                0,
                format!("segment starts at lsn {start_lsn} but the previous segment ends at lsn {}", expected - 1),
            )),
            Some(expected) if start_lsn != expected && start_lsn > covered_next => Ok(false),
            _ => {
                self.expected = Some(start_lsn);
                Ok(true)
            }
        }
    }

    /// Walks records from the segment header on; returns the offset where the chain ends.
    fn walk(&mut self, bytes: &[u8], replay: Replay<'_>) -> Result<u64, WalError> {
        let mut expected = self.expected.unwrap_or(1);
        let mut offset = SEGMENT_HEADER_BYTES;
        while let Some(Ok(record)) = bytes.get(offset..).map(decode_record) {
            if record.lsn != expected {
                break;
            }
            if record.lsn > self.checkpoint_lsn {
                replay(record.lsn, record.payload).map_err(|e| WalError::Replay(format!("record {}: {e}", record.lsn)))?;
            }
            expected += 1;
            offset += record.encoded_bytes() as usize;
        }
        self.expected = Some(expected);
        Ok(offset as u64)
    }
}

/// Pass 2: replays the accepted segments, checking each ends where pass 1 said.
fn replay_segments(dir: &SegmentDir, segments: &[LiveSegment], checkpoint_lsn: Lsn, replay: Replay<'_>) -> Result<u64, WalError> {
    let mut chain = Chain { checkpoint_lsn, expected: None };
    let mut replayed = 0u64;
    let mut counting = |lsn: Lsn, payload: &[u8]| {
        replayed += 1;
        replay(lsn, payload)
    };
    for segment in segments {
        let bytes = dir.read_segment(&segment.path)?;
        let continues = matches!(SegmentHeader::decode(&bytes), HeaderState::Valid(h) if h.start_lsn == segment.start_lsn)
            && chain.continues_at(segment.start_lsn, &segment.path)?;
        if !continues {
            return Err(WalError::corrupt(&segment.path, 0, "segment header changed during recovery"));
        }
        chain.walk(&bytes, &mut counting)?;
    }
    Ok(replayed)
}

/// Classifies everything after the chain's end: clean, torn, or (Err) corrupt.
fn check_tail(
    dir: &SegmentDir,
    last: Option<(&Walked, &[u8])>,
    tail_files: &[(u64, PathBuf)],
    expected: Lsn,
) -> Result<Tail, WalError> {
    let mut later = Vec::new();
    for (index, path) in tail_files {
        let bytes = dir.read_segment(path)?;
        check_tail_header(path, *index, &bytes, expected)?;
        later.push((path, bytes));
    }
    // (file, its bytes, where the tail starts in it)
    let mut regions: Vec<(&Path, &[u8], usize)> = Vec::new();
    if let Some((w, bytes)) = last {
        regions.push((&w.live.path, bytes, w.end as usize));
    }
    regions.extend(later.iter().map(|(path, bytes)| (path.as_path(), bytes.as_slice(), 0)));
    let Some(&(damage_path, _, damage_offset)) = regions.first() else {
        return Ok(Tail::Clean);
    };
    let tail_bytes: usize = regions.iter().map(|(_, bytes, from)| bytes.len() - from).sum();
    let lsn_max = expected.saturating_add((tail_bytes / RECORD_HEADER_BYTES) as u64 + 1);
    let mut first_damage: Option<Truncation> = None;
    for &(path, bytes, from) in &regions {
        if bytes[from..].iter().all(|b| *b == 0) {
            continue;
        }
        if let Some((offset, lsn, group_first_lsn)) = find_later_group(bytes, from, expected, lsn_max) {
            let reason = format!(
                "the log breaks before lsn {expected}, yet record lsn {lsn} of a later group (first lsn {group_first_lsn}) \
                 follows at {}:{offset}; acknowledged records may be lost",
                file_name(path)
            );
            return Err(WalError::corrupt(damage_path, damage_offset as u64, reason));
        }
        if first_damage.is_none() {
            let reason = describe_damage(bytes, from, expected);
            first_damage = Some(Truncation { path: path.to_path_buf(), offset: from as u64, reason });
        }
    }
    Ok(first_damage.map_or(Tail::Clean, Tail::Torn))
}

/// A later file's valid header must not contradict the chain.
fn check_tail_header(path: &Path, index: u64, bytes: &[u8], expected: Lsn) -> Result<(), WalError> {
    match SegmentHeader::decode(bytes) {
        HeaderState::Unsupported(version) => Err(unsupported(path, version)),
        HeaderState::Valid(h) if h.index != index => {
            Err(WalError::corrupt(path, 0, format!("segment header names segment {}", h.index)))
        }
        HeaderState::Valid(h) if h.start_lsn < expected => Err(WalError::corrupt(
            path,
            0,
            format!("segment starts at lsn {} but the log before it ends at lsn {}", h.start_lsn, expected - 1),
        )),
        _ => Ok(()),
    }
}

/// Scans byte by byte from `from` for a valid record with `lsn` in `expected..=lsn_max` whose
/// group began after `expected`: proof that a later group was written after the damage.
fn find_later_group(bytes: &[u8], from: usize, expected: Lsn, lsn_max: Lsn) -> Option<(usize, Lsn, Lsn)> {
    let last_start = bytes.len().checked_sub(RECORD_HEADER_BYTES)?;
    (from..=last_start).find_map(|offset| {
        let rest = &bytes[offset..];
        let lsn = peek_lsn(rest)?;
        if lsn < expected || lsn > lsn_max {
            return None;
        }
        let record = decode_record(rest).ok()?;
        (record.group_first_lsn > expected).then_some((offset, record.lsn, record.group_first_lsn))
    })
}

fn describe_damage(bytes: &[u8], from: usize, expected: Lsn) -> String {
    if from == 0 {
        return match SegmentHeader::decode(bytes) {
            HeaderState::Invalid(reason) => format!("torn segment header: {reason}"),
            _ => "unwritten segment holds bytes of a torn group".into(),
        };
    }
    match bytes.get(from..).map(decode_record) {
        Some(Ok(record)) => format!("record lsn {} where lsn {expected} was expected", record.lsn),
        Some(Err(fault)) => format!("torn record where lsn {expected} was expected: {fault}"),
        None => "segment ends early".into(),
    }
}

/// Retires files after the chain's end, except one zeroed, full-size `next_index` file which is
/// adopted as the prepared next segment (a clean shutdown leaves one behind).
fn settle_tail_files(
    dir: &SegmentDir,
    pool: &RecyclePool,
    tail_files: &[(u64, PathBuf)],
    next_index: u64,
    segment_bytes: u64,
    tail: &Tail,
) -> Result<Option<PreparedSegment>, WalError> {
    if let ([(index, path)], Tail::Clean) = (tail_files, tail) {
        let len = std::fs::metadata(path).map(|m| m.len()).ok();
        if *index == next_index && len == Some(segment_bytes) {
            let file = dir.open_segment(path)?;
            return Ok(Some(PreparedSegment { index: *index, path: path.clone(), file, bytes: segment_bytes }));
        }
    }
    if tail_files.is_empty() {
        return Ok(None);
    }
    // Highest index first, so a crash part-way leaves no gap in the indexes.
    for (_, path) in tail_files.iter().rev() {
        pool.retire(dir, path)?;
    }
    dir.sync_dir()?;
    Ok(None)
}
