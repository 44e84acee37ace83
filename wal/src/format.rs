//! Byte layout of WAL segment files, and pure encode/decode of their headers and records.
//!
//! All integers are little-endian. A segment file (`wal-{index:020}.log`) is exactly
//! `segment_bytes` long and pre-zeroed, so "never written" reads as zeros:
//!
//! ```text
//! segment header (32 bytes, written together with the segment's first records)
//!  0      4        6       8               16              24        28      32
//!  | magic | version | flags | segment_index | start_lsn     | reserved | crc32 |
//!  | "LBWL"| u16 = 1 | u16 0 | u64           | u64           | u32 0    | u32   |
//!  crc32 covers bytes 0..28. start_lsn is the LSN of the first record in the segment.
//!
//! record (24-byte header + payload), packed back to back after the segment header
//!  0       4             8      16                24
//!  | crc32 | payload_len | lsn  | group_first_lsn | payload (payload_len bytes) |
//!  | u32   | u32         | u64  | u64             |                             |
//!  crc32 covers bytes 4..24+payload_len. group_first_lsn is the first LSN of the group commit
//!  (one write + fdatasync) that carried the record; recovery uses it to tell a torn final group
//!  from damage followed by later, acknowledged groups.
//! ```
//!
//! Records never span segments. Nothing here does I/O or trusts its input: decoding goes
//! through [`ByteReader`] and bounds every length by the bytes actually present.

use lookback_common::{crc32, ByteReader, Lsn};

pub const SEGMENT_HEADER_BYTES: usize = 32;
pub const RECORD_HEADER_BYTES: usize = 24;
pub const SEGMENT_MAGIC: [u8; 4] = *b"LBWL";
pub const FORMAT_VERSION: u16 = 1;

const HEADER_CRC_OFFSET: usize = 28;
const _: () = assert!(HEADER_CRC_OFFSET + 4 == SEGMENT_HEADER_BYTES);
const _: () = assert!(4 + 4 + 8 + 8 == RECORD_HEADER_BYTES);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub index: u64,
    pub start_lsn: Lsn,
}

/// What the first 32 bytes of a segment file say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderState {
    /// All zero: the segment was prepared but never written.
    Zero,
    Valid(SegmentHeader),
    /// A well-formed header of a format version this build cannot read.
    Unsupported(u16),
    /// Anything else: torn, damaged or not a WAL segment.
    Invalid(String),
}

impl SegmentHeader {
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&SEGMENT_MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&self.index.to_le_bytes());
        out.extend_from_slice(&self.start_lsn.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        let crc = crc32(&out[start..]);
        out.extend_from_slice(&crc.to_le_bytes());
        debug_assert_eq!(out.len() - start, SEGMENT_HEADER_BYTES);
    }

    /// Classifies the start of a segment file (`bytes` may be shorter than a header).
    pub fn decode(bytes: &[u8]) -> HeaderState {
        let head = &bytes[..bytes.len().min(SEGMENT_HEADER_BYTES)];
        if head.iter().all(|b| *b == 0) {
            return HeaderState::Zero;
        }
        match Self::decode_fields(head) {
            Ok(state) => state,
            Err(reason) => HeaderState::Invalid(reason),
        }
    }

    fn decode_fields(head: &[u8]) -> Result<HeaderState, String> {
        let short = |e: lookback_common::ReadError| format!("segment header: {e}");
        let mut r = ByteReader::new(head);
        let covered = r.bytes(HEADER_CRC_OFFSET).map_err(short)?;
        let stored_crc = r.u32().map_err(short)?;
        let computed_crc = crc32(covered);
        if stored_crc != computed_crc {
            return Err(format!("segment header crc {stored_crc:#010x} does not match {computed_crc:#010x}"));
        }
        let mut r = ByteReader::new(covered);
        let magic = r.array::<4>().map_err(short)?;
        if magic != SEGMENT_MAGIC {
            return Err(format!("segment header magic {magic:02x?} is not {SEGMENT_MAGIC:02x?}"));
        }
        let version = r.u16().map_err(short)?;
        if version != FORMAT_VERSION {
            return Ok(HeaderState::Unsupported(version));
        }
        let _flags = r.u16().map_err(short)?;
        let index = r.u64().map_err(short)?;
        let start_lsn = r.u64().map_err(short)?;
        Ok(HeaderState::Valid(SegmentHeader { index, start_lsn }))
    }
}

/// A record decoded in place from a segment's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub lsn: Lsn,
    pub group_first_lsn: Lsn,
    pub payload: &'a [u8],
}

impl RecordView<'_> {
    /// Bytes the record occupies on disk, header included.
    pub fn encoded_bytes(&self) -> u64 {
        (RECORD_HEADER_BYTES + self.payload.len()) as u64
    }
}

/// Why the bytes at a position are not a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordFault {
    /// Fewer than a record header's bytes remain in the segment.
    Short,
    /// payload_len runs past the end of the segment.
    LengthOutOfRange { payload_len: u32, available: usize },
    CrcMismatch { stored: u32, computed: u32 },
    /// group_first_lsn is zero or after the record's own LSN.
    GroupAfterLsn { lsn: Lsn, group_first_lsn: Lsn },
}

impl std::fmt::Display for RecordFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordFault::Short => write!(f, "fewer than {RECORD_HEADER_BYTES} bytes left for a record header"),
            RecordFault::LengthOutOfRange { payload_len, available } => {
                write!(f, "record payload_len {payload_len} exceeds the {available} bytes left in the segment")
            }
            RecordFault::CrcMismatch { stored, computed } => {
                write!(f, "record crc {stored:#010x} does not match {computed:#010x}")
            }
            RecordFault::GroupAfterLsn { lsn, group_first_lsn } => {
                write!(f, "record lsn {lsn} has group_first_lsn {group_first_lsn}")
            }
        }
    }
}

/// Appends one encoded record to `out`.
pub fn encode_record(out: &mut Vec<u8>, lsn: Lsn, group_first_lsn: Lsn, payload: &[u8]) {
    assert!(group_first_lsn >= 1, "group_first_lsn must be positive");
    assert!(group_first_lsn <= lsn, "a record cannot precede its group");
    let payload_len = u32::try_from(payload.len()).unwrap_or_else(|_| panic!("payload of {} bytes", payload.len()));
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&payload_len.to_le_bytes());
    out.extend_from_slice(&lsn.to_le_bytes());
    out.extend_from_slice(&group_first_lsn.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Decodes the record at the start of `bytes` (which runs to the end of its segment). Checks
/// the length bound, the crc and the group field; the caller checks the LSN chain.
pub fn decode_record(bytes: &[u8]) -> Result<RecordView<'_>, RecordFault> {
    let mut r = ByteReader::new(bytes);
    let (Ok(stored), Ok(payload_len), Ok(lsn), Ok(group_first_lsn)) = (r.u32(), r.u32(), r.u64(), r.u64()) else {
        return Err(RecordFault::Short);
    };
    let available = r.remaining();
    let payload = r
        .bytes(payload_len as usize)
        .map_err(|_| RecordFault::LengthOutOfRange { payload_len, available })?;
    if group_first_lsn == 0 || group_first_lsn > lsn {
        return Err(RecordFault::GroupAfterLsn { lsn, group_first_lsn });
    }
    let covered = &bytes[4..RECORD_HEADER_BYTES + payload.len()];
    let computed = crc32(covered);
    if stored != computed {
        return Err(RecordFault::CrcMismatch { stored, computed });
    }
    Ok(RecordView { lsn, group_first_lsn, payload })
}

/// Reads only the LSN field of a would-be record at the start of `bytes`: a cheap filter before
/// the full decode when scanning byte by byte.
pub fn peek_lsn(bytes: &[u8]) -> Option<Lsn> {
    let mut r = ByteReader::new(bytes);
    r.bytes(8).ok()?;
    r.u64().ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests panic with the error
mod tests {
    use super::*;

    #[test]
    fn header_roundtrip_and_classification() {
        let header = SegmentHeader { index: 7, start_lsn: 1234 };
        let mut bytes = Vec::new();
        header.encode(&mut bytes);
        assert_eq!(bytes.len(), SEGMENT_HEADER_BYTES);
        assert_eq!(&bytes[..4], b"LBWL");
        assert_eq!(SegmentHeader::decode(&bytes), HeaderState::Valid(header));
        assert_eq!(SegmentHeader::decode(&[0; 32]), HeaderState::Zero);
        assert_eq!(SegmentHeader::decode(&[0; 5]), HeaderState::Zero);
        for i in 0..SEGMENT_HEADER_BYTES {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(matches!(SegmentHeader::decode(&bad), HeaderState::Invalid(_)), "flip at {i}");
        }
        assert!(matches!(SegmentHeader::decode(&bytes[..20]), HeaderState::Invalid(_)));
    }

    #[test]
    fn unsupported_version_is_distinguished() {
        let mut bytes = Vec::new();
        SegmentHeader { index: 1, start_lsn: 1 }.encode(&mut bytes);
        bytes[4] = 9;
        let crc = crc32(&bytes[..28]);
        bytes[28..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(SegmentHeader::decode(&bytes), HeaderState::Unsupported(9));
    }

    #[test]
    fn record_roundtrip_and_faults() {
        let mut bytes = Vec::new();
        encode_record(&mut bytes, 10, 8, b"hello");
        assert_eq!(bytes.len(), RECORD_HEADER_BYTES + 5);
        let view = decode_record(&bytes).unwrap();
        assert_eq!((view.lsn, view.group_first_lsn, view.payload), (10, 8, &b"hello"[..]));
        assert_eq!(view.encoded_bytes(), bytes.len() as u64);
        assert_eq!(peek_lsn(&bytes), Some(10));
        assert_eq!(decode_record(&bytes[..23]), Err(RecordFault::Short));
        assert!(matches!(decode_record(&bytes[..27]), Err(RecordFault::LengthOutOfRange { .. })));
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            assert!(decode_record(&bad).is_err(), "flip at {i} went unnoticed");
        }
    }

    #[test]
    fn absurd_length_is_bounded_by_the_bytes_present() {
        let mut bytes = vec![0u8; 64];
        bytes[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        let fault = decode_record(&bytes).unwrap_err();
        assert_eq!(fault, RecordFault::LengthOutOfRange { payload_len: u32::MAX, available: 40 });
    }
}
