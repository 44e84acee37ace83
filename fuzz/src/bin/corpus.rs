//! Writes the seed corpus (`fuzz/corpus/<target>/`) from a data directory that a server wrote
//! (segments, MANIFEST, WAL segments) plus seeds built here (ingest frames, Postgres message
//! streams, SQL statements):
//! `cargo run -p lookback-fuzz --bin lookback-fuzz-corpus -- <data_dir> fuzz/corpus`, or
//! `... -- fuzz/corpus` for the seeds built here only. Files are overwritten by name; other
//! files in the corpus (inputs that once failed, kept as regressions) are left alone.

use lookback_common::{BatchBuilder, Schema, Value};
use lookback_wire::ingest::frame::{self, AckFrame, BatchFrame, ErrorFrame, Frame, Hello, Welcome, FRAME_HEADER_BYTES};
use std::path::{Path, PathBuf};

/// Seeds larger than this are cut (libFuzzer's default max_len is 4 KiB; segments need more).
const SEED_BYTES_MAX: usize = 64 << 10;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (data_dir, out) = match args.as_slice() {
        [_, data_dir, out] => (Some(Path::new(data_dir)), Path::new(out)),
        [_, out] => (None, Path::new(out)),
        _ => {
            eprintln!("usage: lookback-fuzz-corpus [<data_dir>] <corpus_dir>");
            std::process::exit(2);
        }
    };
    let write = |target: &str, name: &str, bytes: &[u8]| -> std::io::Result<()> {
        let dir = out.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(name), &bytes[..bytes.len().min(SEED_BYTES_MAX)])
    };
    for (i, body) in frame_bodies().iter().enumerate() {
        write("ingest_frame", &format!("frame-{i}"), body)?;
    }
    for (name, bytes) in lookback_fuzz::seeds::pgwire_sessions() {
        write("pgwire", name, &bytes)?;
    }
    for (name, bytes) in wal_seeds() {
        write("wal_record", name, &bytes)?;
    }
    for (i, (sql, _)) in lookback_fuzz::seeds::SQL.iter().enumerate() {
        write("sql", &format!("query-{i:02}"), sql.as_bytes())?;
    }
    match data_dir {
        Some(data_dir) => from_data_dir(data_dir, &write),
        None => Ok(()),
    }
}

/// Writes one seed: (target, file name, bytes).
type WriteSeed<'a> = dyn Fn(&str, &str, &[u8]) -> std::io::Result<()> + 'a;

/// The seeds taken from a data directory a server wrote.
fn from_data_dir(data_dir: &Path, write: &WriteSeed) -> std::io::Result<()> {
    write("manifest", "manifest", &std::fs::read(data_dir.join("MANIFEST"))?)?;
    let mut segments: Vec<PathBuf> = files(&data_dir.join("segments"), "seg")?;
    segments.sort_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0));
    for (i, segment) in segments.iter().take(2).enumerate() {
        write("segment", &format!("segment-{i}"), &std::fs::read(segment)?)?;
    }
    for (i, log) in files(&data_dir.join("wal"), "log")?.iter().take(2).enumerate() {
        let bytes = std::fs::read(log)?;
        let used = bytes.iter().rposition(|b| *b != 0).map_or(0, |p| p + 1);
        write("wal_record", &format!("wal-{i}"), &bytes[..used.min(8192)])?;
    }
    Ok(())
}

fn files(dir: &Path, extension: &str) -> std::io::Result<Vec<PathBuf>> {
    Ok(std::fs::read_dir(dir)?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|e| e == extension)).collect())
}

/// A WAL segment of three small intact records (a server's segments are cut at
/// [`SEED_BYTES_MAX`] mid-record, so their records fail the CRC), and one record's bare
/// payload.
fn wal_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use lookback_wal::format::{encode_record, SegmentHeader};
    let payloads: Vec<Vec<u8>> = (1..=3u64)
        .map(|lsn| lookback_storage::wal_record::encode("events", 7, lsn, 1_700_000_000_000, &events_batch(lsn as usize)))
        .collect();
    let mut segment = Vec::new();
    SegmentHeader { index: 1, start_lsn: 1 }.encode(&mut segment);
    for (lsn, payload) in (1..).zip(&payloads) {
        encode_record(&mut segment, lsn, 1, payload);
    }
    let last = payloads.last().cloned().unwrap_or_default();
    vec![("wal-records", segment), ("payload", last)]
}

/// A batch of `rows` events with the columns the dedup window and queries use.
fn events_batch(rows: usize) -> lookback_common::Batch {
    let schema = Schema::events();
    let mut builder = BatchBuilder::new(&schema, rows);
    for i in 0..rows {
        let mut row = vec![Value::Null; schema.columns.len()];
        row[0] = Value::Uuid([i as u8; 16]);
        row[1] = Value::Text("app".into());
        row[2] = Value::Timestamp(1_700_000_000_000_000 + i as i64);
        row[3] = Value::Text("click".into());
        row[11] = Value::Float64(1.5);
        builder.push_row(&row).expect("seed row fits the schema");
    }
    builder.finish().expect("seed batch")
}

/// One frame body of each type (what `decode_body` takes: the frame without its header).
fn frame_bodies() -> Vec<Vec<u8>> {
    let mut batch = Vec::new();
    lookback_common::encode_batch(&events_batch(2), &mut batch);
    let frames = [
        Frame::Hello(Hello { version: frame::PROTOCOL_VERSION, producer_id: 7, api_key: "key" }),
        Frame::Welcome(Welcome { version: 1, producer_last_seq: 3, frame_bytes_max: 1 << 20, batch_events_max: 1000 }),
        Frame::Batch(BatchFrame { seq: 4, table: "events", batch: &batch }),
        Frame::Ack(AckFrame { seq: 4, lsn: 9, events_accepted: 2, events_deduplicated: 0, flags: 0 }),
        Frame::Error(ErrorFrame { seq: 4, code: 11, message: "disk full" }),
    ];
    frames
        .iter()
        .map(|f| {
            let mut out = Vec::new();
            frame::encode_frame(f, &mut out);
            out[FRAME_HEADER_BYTES..].to_vec()
        })
        .collect()
}
