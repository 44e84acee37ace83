//! The manifest: the one file that says which tables exist, which segments are live, up to
//! which LSN the WAL has been checkpointed, and the producers' last applied sequence numbers.
//!
//! Tables are created and dropped by replacing the manifest (not by a WAL record), so the WAL
//! can hold records of a table that no longer exists, or of an earlier table of the same name.
//! Replay tells them apart by LSN: a table's `created_lsn` is the last LSN assigned before it
//! existed, and a dropped table is remembered with its `drop_lsn` until the checkpoint passes
//! it (every record of it is then behind the checkpoint and never replayed).
//!
//! It is replaced atomically: write `MANIFEST.tmp`, fsync it, rename over `MANIFEST`, fsync the
//! directory. A reader therefore sees either the old or the new manifest, never a mix. An empty,
//! short or checksum-failing manifest is an error, never "no data": a missing manifest is only
//! acceptable in a data directory that holds nothing else (checked by the caller). Layout in
//! docs/format.md.

use crate::error::StorageError;
use crate::fsutil;
use lookback_common::{crc32, ByteReader, Faults, Lsn, ReadError, Schema};
use std::path::{Path, PathBuf};

pub const MANIFEST_FILE: &str = "MANIFEST";
const MANIFEST_TMP_FILE: &str = "MANIFEST.tmp";
const MAGIC: &[u8; 8] = b"LBMANIF1";
/// Version 2 added `created_lsn` per table and the dropped-table list; version 1 is still read.
pub const MANIFEST_VERSION: u32 = 2;
const MANIFEST_VERSION_V1: u32 = 1;
const HEADER_BYTES: usize = 8 + 4 + 4 + 4;
/// Limits on a decoded manifest, so a corrupt length cannot ask for absurd allocations.
pub const MANIFEST_BYTES_MAX: usize = 256 << 20;
const TABLES_MAX: usize = 4096;
const DROPPED_TABLES_MAX: usize = 65_536;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentEntry {
    pub id: u64,
    pub rows: u64,
    pub file_bytes: u64,
    pub min_lsn: Lsn,
    pub max_lsn: Lsn,
    /// Wall-clock ingest time range (Unix ms) of the rows: drives the dedup-window rebuild.
    pub min_ingest_ms: u64,
    pub max_ingest_ms: u64,
    /// Compaction level: 0 for flushed segments, +1 for each merge generation.
    pub level: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableEntry {
    pub schema: Schema,
    /// WAL records of this table have LSNs above this (0 for tables as old as the directory).
    pub created_lsn: Lsn,
    pub segments: Vec<SegmentEntry>,
}

/// A dropped table whose WAL records may still be after the checkpoint: replay skips records
/// of `name` at or below `drop_lsn`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedTable {
    pub name: String,
    pub drop_lsn: Lsn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerEntry {
    pub producer_id: u64,
    pub last_seq: u64,
    pub last_lsn: Lsn,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Manifest {
    /// Incremented on every replacement.
    pub generation: u64,
    /// Every WAL record with an LSN at or below this is in a live segment (or was empty).
    pub checkpoint_lsn: Lsn,
    pub next_segment_id: u64,
    pub tables: Vec<TableEntry>,
    pub producers: Vec<ProducerEntry>,
    pub dropped: Vec<DroppedTable>,
}

pub fn manifest_path(dir: &Path) -> PathBuf {
    dir.join(MANIFEST_FILE)
}

impl Manifest {
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(4096);
        for v in [self.generation, self.checkpoint_lsn, self.next_segment_id] {
            body.extend_from_slice(&v.to_le_bytes());
        }
        body.extend_from_slice(&(self.tables.len() as u32).to_le_bytes());
        for t in &self.tables {
            let mut schema = Vec::new();
            t.schema.encode(&mut schema);
            lookback_common::bytes::put_bytes_u32_len(&mut body, &schema);
            body.extend_from_slice(&t.created_lsn.to_le_bytes());
            body.extend_from_slice(&(t.segments.len() as u32).to_le_bytes());
            for s in &t.segments {
                let fields = [s.id, s.rows, s.file_bytes, s.min_lsn, s.max_lsn, s.min_ingest_ms, s.max_ingest_ms];
                fields.iter().for_each(|v| body.extend_from_slice(&v.to_le_bytes()));
                body.push(s.level);
            }
        }
        body.extend_from_slice(&(self.producers.len() as u32).to_le_bytes());
        for p in &self.producers {
            for v in [p.producer_id, p.last_seq, p.last_lsn] {
                body.extend_from_slice(&v.to_le_bytes());
            }
        }
        body.extend_from_slice(&(self.dropped.len() as u32).to_le_bytes());
        for d in &self.dropped {
            lookback_common::bytes::put_bytes_u16_len(&mut body, d.name.as_bytes());
            body.extend_from_slice(&d.drop_lsn.to_le_bytes());
        }
        let mut out = Vec::with_capacity(HEADER_BYTES + body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&MANIFEST_VERSION.to_le_bytes());
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32(&body).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    pub fn decode(bytes: &[u8], path: &Path) -> Result<Manifest, StorageError> {
        let corrupt = |offset: usize, reason: String| StorageError::corrupt(path, offset as u64, reason);
        if bytes.len() < HEADER_BYTES {
            return Err(corrupt(0, format!("manifest is {} bytes, shorter than its header", bytes.len())));
        }
        let mut r = ByteReader::new(bytes);
        let header = (|| -> Result<([u8; 8], u32, u32, u32), ReadError> {
            Ok((r.array()?, r.u32()?, r.u32()?, r.u32()?))
        })()
        .map_err(|e| corrupt(0, e.to_string()))?;
        let (magic, version, body_len, body_crc) = header;
        if &magic != MAGIC {
            return Err(corrupt(0, "bad magic: not a lookback manifest".into()));
        }
        if version != MANIFEST_VERSION && version != MANIFEST_VERSION_V1 {
            return Err(corrupt(8, format!("manifest version {version} is not supported (this build reads {MANIFEST_VERSION})")));
        }
        if body_len as usize != r.remaining() {
            return Err(corrupt(12, format!("body length {body_len} but {} bytes follow the header", r.remaining())));
        }
        let body = &bytes[HEADER_BYTES..];
        if crc32(body) != body_crc {
            return Err(corrupt(16, "checksum mismatch".into()));
        }
        decode_body(body, version).map_err(|(offset, reason)| corrupt(HEADER_BYTES + offset, reason))
    }
}

fn decode_body(body: &[u8], version: u32) -> Result<Manifest, (usize, String)> {
    let mut r = ByteReader::new(body);
    let at = |r: &ByteReader<'_>, e: String| (r.position(), e);
    let read = |r: &mut ByteReader<'_>| -> Result<Manifest, Bad> {
        let (generation, checkpoint_lsn, next_segment_id) = (r.u64()?, r.u64()?, r.u64()?);
        let table_count = r.u32()? as usize;
        if table_count > TABLES_MAX {
            return Err(Bad(format!("table count {table_count} exceeds {TABLES_MAX}")));
        }
        let mut tables = Vec::with_capacity(table_count);
        for _ in 0..table_count {
            let schema_bytes = r.bytes_u32_len()?;
            let schema = Schema::decode(&mut ByteReader::new(schema_bytes)).map_err(|e| Bad(e.to_string()))?;
            let created_lsn = if version == MANIFEST_VERSION_V1 { 0 } else { r.u64()? };
            let count = r.u32()? as usize;
            bound_count(count, 57, r.remaining())?;
            let mut segments = Vec::with_capacity(count);
            for _ in 0..count {
                let mut f = [0u64; 7];
                for v in f.iter_mut() {
                    *v = r.u64()?;
                }
                let [id, rows, file_bytes, min_lsn, max_lsn, min_ingest_ms, max_ingest_ms] = f;
                segments.push(SegmentEntry { id, rows, file_bytes, min_lsn, max_lsn, min_ingest_ms, max_ingest_ms, level: r.u8()? });
            }
            tables.push(TableEntry { schema, created_lsn, segments });
        }
        let count = r.u32()? as usize;
        bound_count(count, 24, r.remaining())?;
        let mut producers = Vec::with_capacity(count);
        for _ in 0..count {
            producers.push(ProducerEntry { producer_id: r.u64()?, last_seq: r.u64()?, last_lsn: r.u64()? });
        }
        let mut dropped = Vec::new();
        if version != MANIFEST_VERSION_V1 {
            let count = r.u32()? as usize;
            if count > DROPPED_TABLES_MAX {
                return Err(Bad(format!("dropped-table count {count} exceeds {DROPPED_TABLES_MAX}")));
            }
            bound_count(count, 10, r.remaining())?;
            for _ in 0..count {
                let name = std::str::from_utf8(r.bytes_u16_len()?).map_err(|_| Bad("dropped table name is not UTF-8".into()))?;
                dropped.push(DroppedTable { name: name.to_string(), drop_lsn: r.u64()? });
            }
        }
        if !r.is_empty() {
            return Err(Bad(format!("{} trailing bytes", r.remaining())));
        }
        Ok(Manifest { generation, checkpoint_lsn, next_segment_id, tables, producers, dropped })
    };
    read(&mut r).map_err(|e| at(&r, e.0))
}

fn bound_count(count: usize, entry_bytes: usize, remaining: usize) -> Result<(), Bad> {
    if count.saturating_mul(entry_bytes) > remaining {
        return Err(Bad(format!("count {count} needs more bytes than the {remaining} remaining")));
    }
    Ok(())
}

/// A decode failure message; exists so `?` works on [`ReadError`] inside the body decoder.
struct Bad(String);

impl From<ReadError> for Bad {
    fn from(e: ReadError) -> Bad {
        Bad(e.to_string())
    }
}

/// Reads the manifest. `Ok(None)` only when the file does not exist.
pub fn read_manifest(dir: &Path) -> Result<Option<Manifest>, StorageError> {
    let path = manifest_path(dir);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StorageError::io(format!("read {}", path.display()), e)),
    };
    if bytes.len() > MANIFEST_BYTES_MAX {
        return Err(StorageError::corrupt(&path, 0, format!("manifest of {} bytes exceeds the limit", bytes.len())));
    }
    Manifest::decode(&bytes, &path).map(Some)
}

/// Atomically replaces the manifest: temp file, fsync, rename, fsync directory.
pub fn write_manifest(dir: &Path, manifest: &Manifest, faults: &Faults) -> Result<(), StorageError> {
    let tmp = dir.join(MANIFEST_TMP_FILE);
    fsutil::remove_file(&tmp, faults)?;
    let bytes = manifest.encode();
    fsutil::write_new_file_synced(&tmp, &bytes, faults)?;
    fsutil::rename(&tmp, &manifest_path(dir), faults)?;
    fsutil::sync_dir(dir, faults)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            generation: 7,
            checkpoint_lsn: 42,
            next_segment_id: 9,
            tables: vec![TableEntry {
                schema: Schema::events(),
                created_lsn: 0,
                segments: vec![SegmentEntry { id: 3, rows: 10, file_bytes: 999, min_lsn: 1, max_lsn: 40, min_ingest_ms: 5, max_ingest_ms: 6, level: 1 }],
            }],
            producers: vec![ProducerEntry { producer_id: 11, last_seq: 12, last_lsn: 40 }],
            dropped: vec![DroppedTable { name: "campaign_costs".into(), drop_lsn: 41 }],
        }
    }

    /// The version-1 layout: no `created_lsn`, no dropped-table list.
    fn encode_v1(m: &Manifest) -> Vec<u8> {
        let mut body = Vec::new();
        for v in [m.generation, m.checkpoint_lsn, m.next_segment_id] {
            body.extend_from_slice(&v.to_le_bytes());
        }
        body.extend_from_slice(&(m.tables.len() as u32).to_le_bytes());
        for t in &m.tables {
            let mut schema = Vec::new();
            t.schema.encode(&mut schema);
            lookback_common::bytes::put_bytes_u32_len(&mut body, &schema);
            body.extend_from_slice(&(t.segments.len() as u32).to_le_bytes());
            for s in &t.segments {
                for v in [s.id, s.rows, s.file_bytes, s.min_lsn, s.max_lsn, s.min_ingest_ms, s.max_ingest_ms] {
                    body.extend_from_slice(&v.to_le_bytes());
                }
                body.push(s.level);
            }
        }
        body.extend_from_slice(&(m.producers.len() as u32).to_le_bytes());
        for p in &m.producers {
            for v in [p.producer_id, p.last_seq, p.last_lsn] {
                body.extend_from_slice(&v.to_le_bytes());
            }
        }
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&MANIFEST_VERSION_V1.to_le_bytes());
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32(&body).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn version_1_manifests_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let v1 = Manifest { dropped: Vec::new(), ..sample() };
        std::fs::write(manifest_path(dir.path()), encode_v1(&v1)).unwrap();
        assert_eq!(read_manifest(dir.path()).unwrap(), Some(v1));
    }

    #[test]
    fn roundtrip_through_disk() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_manifest(dir.path()).unwrap(), None);
        write_manifest(dir.path(), &sample(), &Faults::none()).unwrap();
        write_manifest(dir.path(), &sample(), &Faults::none()).unwrap();
        assert_eq!(read_manifest(dir.path()).unwrap(), Some(sample()));
    }

    #[test]
    fn empty_short_and_flipped_manifests_are_errors_not_empty() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = sample().encode();
        for len in 0..bytes.len() {
            std::fs::write(manifest_path(dir.path()), &bytes[..len]).unwrap();
            assert!(read_manifest(dir.path()).is_err(), "truncated to {len} must be an error");
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            std::fs::write(manifest_path(dir.path()), &b).unwrap();
            assert!(read_manifest(dir.path()).is_err(), "flip at {i} must be an error");
        }
    }
}
