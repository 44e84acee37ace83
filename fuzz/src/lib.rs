//! Fuzz targets: each takes arbitrary bytes, must never panic, hang or allocate without bound,
//! and checks what it can of the decoded result (re-encoding round trips). The same functions
//! run under libFuzzer (`fuzz/libfuzzer/`, `cargo +nightly fuzz run <target>`: the long mode)
//! and under [`driver`], a small stable-Rust mutation loop over the committed corpus that the
//! test suite runs for a few seconds per target (the short mode).
//!
//! The decoders' targets are below; the two that need a running server, [`pgwire()`] (bytes
//! on a Postgres connection) and [`sql()`] (SQL text through the endpoint's query path), live
//! in their modules over a shared in-process [`fixture`].

pub mod driver;
pub mod fixture;
pub mod panics;
pub mod pgwire;
pub mod seeds;
pub mod sql;

pub use pgwire::pgwire;
pub use sql::sql;

use lookback_common::{decode_batch, DecodeLimits, Schema};
use lookback_wire::ingest::frame::{self, Frame, FRAME_HEADER_BYTES};
use std::path::PathBuf;

/// A fuzz target: takes any bytes, panics on a finding.
pub type Target = fn(&[u8]);

/// The targets by name, as the corpus directories and libFuzzer binaries are named.
pub const TARGETS: [(&str, Target); 6] = [
    ("ingest_frame", ingest_frame),
    ("wal_record", wal_record),
    ("segment", segment),
    ("manifest", manifest),
    ("pgwire", pgwire),
    ("sql", sql),
];

/// Decode limits small enough that a hostile row count cannot make a target slow.
fn limits() -> DecodeLimits {
    DecodeLimits { rows_max: 4096, text_value_bytes_max: 1 << 16 }
}

/// An ingest frame as the server reads it: the length/CRC header, the body, and for a batch
/// frame the batch codec against the `events` schema. A decoded frame re-encodes to one
/// that decodes the same.
pub fn ingest_frame(data: &[u8]) {
    let _ = frame::check_body_len(u32::from_le_bytes(first4(data)), 1 << 20);
    let Ok(decoded) = frame::decode_body(data) else { return };
    let mut out = Vec::new();
    frame::encode_frame(&decoded, &mut out);
    let again = frame::decode_body(&out[FRAME_HEADER_BYTES..]);
    assert_eq!(again.as_ref(), Ok(&decoded), "a decoded frame re-encodes to the same frame");
    if let Frame::Batch(batch) = decoded {
        if let Ok(b) = decode_batch(batch.batch, &Schema::events(), &limits()) {
            let mut bytes = Vec::new();
            lookback_common::encode_batch(&b, &mut bytes);
            let round = decode_batch(&bytes, &Schema::events(), &limits()).expect("a re-encoded batch decodes");
            assert_eq!(round.rows(), b.rows());
        }
    }
}

fn first4(data: &[u8]) -> [u8; 4] {
    let mut out = [0u8; 4];
    for (o, d) in out.iter_mut().zip(data) {
        *o = *d;
    }
    out
}

/// WAL segment bytes as recovery scans them: the segment header, then records one after
/// another until one does not decode; each record's payload as storage decodes it. The
/// input is also decoded as one record's payload on its own: a mutated record fails its CRC,
/// so without this the payload decoder would only ever see the seeds' intact payloads (a
/// checksum catches damage, not a bug in what was written).
pub fn wal_record(data: &[u8]) {
    wal_payload(data);
    let _ = lookback_wal::format::SegmentHeader::decode(data);
    let mut at = data.len().min(lookback_wal::format::SEGMENT_HEADER_BYTES);
    // Also scan from the start: the input may be records without a header.
    for start in [0, at] {
        at = start;
        while let Ok(record) = lookback_wal::format::decode_record(&data[at..]) {
            let len = lookback_wal::format::RECORD_HEADER_BYTES + record.payload.len();
            assert!(len > 0 && at + len <= data.len(), "a decoded record lies within the input");
            wal_payload(record.payload);
            at += len;
        }
    }
}

/// One WAL record's payload as recovery replays it: its header, then its batch against the
/// `events` schema.
fn wal_payload(payload: &[u8]) {
    if let Ok(header) = lookback_storage::wal_record::decode_header(payload) {
        let _ = lookback_storage::wal_record::decode_record_batch(&header, &Schema::events());
    }
}

thread_local! {
    static SCRATCH: PathBuf = scratch_file();
}

fn scratch_file() -> PathBuf {
    let base = if std::path::Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
    let thread = format!("{:?}", std::thread::current().id()).replace(|c: char| !c.is_ascii_alphanumeric(), "");
    base.join(format!("lookback-fuzz-{}-{thread}.seg", std::process::id()))
}

/// A segment file as queries read it: open (footer, checksums), then every block of every
/// column, the bitmaps and the fingerprint index. Errors are fine; panics are not.
pub fn segment(data: &[u8]) {
    SCRATCH.with(|path| {
        if std::fs::write(path, data).is_err() {
            return;
        }
        let Ok(segment) = lookback_storage::segment::Segment::open(path) else { return };
        let columns: Vec<usize> = (0..segment.schema().columns.len()).collect();
        for block in 0..segment.block_count() {
            if let Ok(read) = segment.read_block(block, &columns) {
                assert_eq!(read.len(), columns.len(), "a block read returns every column asked for");
            }
        }
        for column in 0..columns.len() {
            if let Ok(values) = segment.bitmap_values(column) {
                for value in values.iter().take(16) {
                    let _ = segment.bitmap(column, value);
                }
            }
        }
        let _ = segment.fingerprint_index();
    });
}

/// A manifest as start-up reads it; a decoded one re-encodes to bytes that decode the same.
pub fn manifest(data: &[u8]) {
    let path = std::path::Path::new("MANIFEST");
    let Ok(decoded) = lookback_storage::manifest::Manifest::decode(data, path) else { return };
    let again = lookback_storage::manifest::Manifest::decode(&decoded.encode(), path).expect("a re-encoded manifest decodes");
    assert_eq!(again, decoded, "manifest round trip");
}
