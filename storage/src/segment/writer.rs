//! Writing a segment file: build and write the segment dictionaries, encode and compress every
//! column block, append the bitmaps, the footer and the trailer, fsync.
//!
//! A text column gets a segment dictionary when its values repeat enough
//! ([`dictionary::pays`]); its codes for every non-null row are computed once, up front, and
//! each of its blocks stores only its slice of them. The file is created with `O_EXCL` and
//! written front to back, one column block at a time, so memory holds one block's candidates
//! (plus the dictionaries' codes), not the whole file. Every create/write/sync first asks
//! [`Faults::check`]. On error the partial file is left for the caller's commit protocol to
//! remove (it never got a final name). Renaming into place and directory fsync are the caller's.

use super::bitmap::ColumnBitmaps;
use super::dictionary;
use super::encoding::{encode_candidates, BlockSlice, DenseValues, COMPRESSION_NONE, COMPRESSION_ZSTD};
use super::rows::SegmentRows;
use super::fingerprint::FingerprintIndex;
use super::footer::{BitmapEntry, BitmapIndex, BlockMeta, ColumnBlockMeta, DictionaryMeta, FingerprintMeta, Footer, Section};
use super::{
    SegmentInfo, SegmentSummary, SegmentWriteOptions, ZoneMap, BLOCK_ROWS_MAX,
    COLUMN_BLOCK_RAW_BYTES_MAX, FOOTER_BYTES_MAX, HEADER_BYTES, SEGMENT_FORMAT_VERSION,
    SEGMENT_MAGIC, SEGMENT_ROWS_MAX, TRAILER_BYTES,
};
use crate::sort::is_sorted;
use crate::StorageError;
use lookback_common::{crc32, Batch, ColumnType, FaultOp, Faults, Schema};
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::Path;

/// Above this zstd level, candidates are compared at [`PROBE_LEVEL`] and only the winner is
/// compressed at the requested level (high levels are too slow to run on every candidate).
const PROBE_LEVEL_ABOVE: i32 = 3;
const PROBE_LEVEL: i32 = 1;
/// Writes reach the file in chunks of this size (column blocks are often a few KiB).
const OUTPUT_BUFFER_BYTES: usize = 1 << 20;
/// Writeback of a segment file is started every this many bytes ([`Output::start_writeback`]).
const WRITEBACK_CHUNK_BYTES: u64 = 4 << 20;

/// Writes `batch` (sorted by `schema.sort_key`, at least one row) as a new segment at `path`.
pub fn write_segment(
    path: &Path,
    schema: &Schema,
    batch: &Batch,
    info: &SegmentInfo,
    options: &SegmentWriteOptions,
    faults: &Faults,
) -> Result<SegmentSummary, StorageError> {
    check_inputs(schema, batch, info, options);
    assert!(is_sorted(schema, batch), "write_segment: batch is not sorted by the sort key");
    write_rows(path, schema, &SegmentRows::sorted(schema, batch), info, options, faults)
}

/// Writes the rows of `parts` (batches of `schema` in any order, at least one row in all),
/// sorted by `schema.sort_key` (ties in input order), as a new segment at `path`.
pub fn write_segment_sorting(
    path: &Path,
    schema: &Schema,
    parts: &[&Batch],
    info: &SegmentInfo,
    options: &SegmentWriteOptions,
    faults: &Faults,
) -> Result<SegmentSummary, StorageError> {
    for part in parts {
        check_inputs(schema, part, info, options);
    }
    let parts: Vec<&Batch> = parts.iter().copied().filter(|p| p.rows() > 0).collect();
    assert!(!parts.is_empty(), "write_segment_sorting: a segment holds at least one row");
    write_rows(path, schema, &SegmentRows::sorting(schema, &parts, options.threads), info, options, faults)
}

fn write_rows(
    path: &Path,
    schema: &Schema,
    rows: &SegmentRows<'_>,
    info: &SegmentInfo,
    options: &SegmentWriteOptions,
    faults: &Faults,
) -> Result<SegmentSummary, StorageError> {
    assert!(rows.rows() > 0, "write_segment: a segment holds at least one row");
    assert!(rows.rows() as u64 <= SEGMENT_ROWS_MAX, "write_segment: too many rows");
    let context = |what: &str| format!("write segment {}: {what}", path.display());
    faults.check(FaultOp::Create, path).map_err(|e| StorageError::io(context("create"), e))?;
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| StorageError::io(context("create"), e))?;
    let mut out = Output::new(file, path, faults);
    out.write(&header(), "write header")?;
    let mut compressors = Compressors::new(options.zstd_level)
        .map_err(|e| StorageError::io(context("start zstd"), e))?;
    let (dictionaries, with_codes) = write_dictionaries(&mut out, schema, rows, &mut compressors)?;
    let (blocks, column_blocks) =
        write_column_blocks(&mut out, schema, rows, options, &with_codes)?;
    let index_start = out.written;
    let bitmaps = write_bitmaps(&mut out, rows.bitmaps(schema), &mut compressors)?;
    let fingerprint = match rows.fingerprint(schema, options.block_rows) {
        Some((columns, index)) => Some(write_fingerprint(&mut out, columns, &index, &mut compressors)?),
        None => None,
    };
    let index_bytes = out.written - index_start;
    let footer = Footer {
        info: info.clone(),
        schema: schema.clone(),
        rows: rows.rows() as u64,
        blocks,
        dictionaries,
        column_blocks,
        bitmaps,
        fingerprint,
    };
    let footer_offset = out.written;
    let footer_bytes = encode_footer(&footer, &context)?;
    out.write(&footer_bytes, "write footer")?;
    out.write(&trailer(footer_offset, &footer_bytes), "write trailer")?;
    out.sync()?;
    let summary = SegmentSummary {
        rows: footer.rows,
        file_bytes: out.written,
        column_bytes: footer.column_bytes(),
        index_bytes,
    };
    assert_eq!(summary.file_bytes, footer_offset + footer_bytes.len() as u64 + TRAILER_BYTES);
    Ok(summary)
}

/// Programmer errors: the caller hands us a sorted, non-empty batch of this schema.
fn check_inputs(schema: &Schema, batch: &Batch, info: &SegmentInfo, options: &SegmentWriteOptions) {
    assert!((1..=BLOCK_ROWS_MAX).contains(&options.block_rows), "write_segment: bad block_rows");
    assert!(info.min_lsn <= info.max_lsn, "write_segment: min_lsn > max_lsn");
    assert_eq!(batch.columns().len(), schema.len(), "write_segment: batch does not match schema");
    for (def, col) in schema.columns.iter().zip(batch.columns()) {
        assert_eq!(def.ty, col.values.column_type(), "write_segment: column {} type", def.name);
    }
}

fn header() -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_BYTES as usize);
    h.extend_from_slice(&SEGMENT_MAGIC);
    h.extend_from_slice(&SEGMENT_FORMAT_VERSION.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    assert_eq!(h.len() as u64, HEADER_BYTES);
    h
}

fn trailer(footer_offset: u64, footer: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(TRAILER_BYTES as usize);
    t.extend_from_slice(&footer_offset.to_le_bytes());
    t.extend_from_slice(&(footer.len() as u32).to_le_bytes());
    t.extend_from_slice(&crc32(footer).to_le_bytes());
    t.extend_from_slice(&SEGMENT_FORMAT_VERSION.to_le_bytes());
    t.extend_from_slice(&SEGMENT_MAGIC);
    assert_eq!(t.len() as u64, TRAILER_BYTES);
    t
}

fn encode_footer(footer: &Footer, context: &dyn Fn(&str) -> String) -> Result<Vec<u8>, StorageError> {
    let bytes = footer.encode();
    if bytes.len() > FOOTER_BYTES_MAX {
        let e = io::Error::new(io::ErrorKind::InvalidInput, format!("{} bytes", bytes.len()));
        return Err(StorageError::io(context("footer exceeds its limit"), e));
    }
    // Pair assertion: what we write decodes to what we meant.
    if cfg!(debug_assertions) {
        let decoded = Footer::decode(&bytes, SEGMENT_FORMAT_VERSION).unwrap_or_else(|e| panic!("footer re-decode: {e}"));
        assert_eq!(decoded.encode(), bytes, "footer re-encode differs");
    }
    Ok(bytes)
}

/// The file being written, with the running offset.
struct Output<'a> {
    file: BufWriter<File>,
    path: &'a Path,
    faults: &'a Faults,
    written: u64,
    /// Writeback was started for bytes below this offset, and waited for below `settled`.
    writeback_started: u64,
    settled: u64,
}

impl Output<'_> {
    fn new<'a>(file: File, path: &'a Path, faults: &'a Faults) -> Output<'a> {
        Output {
            file: BufWriter::with_capacity(OUTPUT_BUFFER_BYTES, file),
            path,
            faults,
            written: 0,
            writeback_started: 0,
            settled: 0,
        }
    }

    fn write(&mut self, bytes: &[u8], what: &str) -> Result<(), StorageError> {
        let context = || format!("write segment {}: {what}", self.path.display());
        self.faults.check(FaultOp::Write, self.path).map_err(|e| StorageError::io(context(), e))?;
        self.file.write_all(bytes).map_err(|e| StorageError::io(context(), e))?;
        self.written += bytes.len() as u64;
        if self.written - self.writeback_started >= WRITEBACK_CHUNK_BYTES {
            self.file.flush().map_err(|e| StorageError::io(context(), e))?;
            self.start_writeback();
        }
        Ok(())
    }

    /// Starts writeback of what was written since the last call, after waiting for the chunk
    /// before it: the file's dirty pages never pile up. Why: a segment is tens of MB, and
    /// written all at once at fsync it queued ahead of the WAL's fdatasync in the device,
    /// which then took 10-25 ms instead of under 1 ms (the ack latency tail). Failures are
    /// ignored here; the final fsync reports real ones.
    fn start_writeback(&mut self) {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let fd = self.file.get_ref().as_raw_fd();
            let wait = libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WRITE | libc::SYNC_FILE_RANGE_WAIT_AFTER;
            // A length of 0 would mean "to the end of the file".
            let ranges = [(self.settled, self.writeback_started, wait), (self.writeback_started, self.written, libc::SYNC_FILE_RANGE_WRITE)];
            for (start, end, flags) in ranges.into_iter().filter(|(start, end, _)| end > start) {
                // SAFETY: a plain syscall on a file descriptor this Output owns.
                unsafe { libc::sync_file_range(fd, start as i64, (end - start) as i64, flags) };
            }
        }
        self.settled = self.writeback_started;
        self.writeback_started = self.written;
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        let context = || format!("write segment {}: fsync", self.path.display());
        self.faults.check(FaultOp::Sync, self.path).map_err(|e| StorageError::io(context(), e))?;
        self.file.flush().map_err(|e| StorageError::io(context(), e))?;
        self.file.get_ref().sync_all().map_err(|e| StorageError::io(context(), e))?;
        self.faults.synced_file(self.path, None);
        let len = self.file.get_ref().metadata().map_err(|e| StorageError::io(context(), e))?.len();
        assert_eq!(len, self.written, "segment file size differs from bytes written");
        Ok(())
    }
}

/// Builds, writes and describes the segment dictionary of every text column where one pays.
/// Returns the directory and, per schema column, whether its blocks store dictionary codes.
fn write_dictionaries(
    out: &mut Output<'_>,
    schema: &Schema,
    rows: &SegmentRows<'_>,
    compressors: &mut Compressors,
) -> Result<(Vec<DictionaryMeta>, Vec<bool>), StorageError> {
    let mut metas = Vec::new();
    let mut with_codes = vec![false; schema.len()];
    for (c, def) in schema.columns.iter().enumerate() {
        let Some(ranking) = rows.ranking(c) else { continue };
        let entries = &ranking.entries;
        if !dictionary::pays(entries.len(), ranking.non_null)
            || dictionary::expanded_bytes(entries) > COLUMN_BLOCK_RAW_BYTES_MAX
        {
            continue;
        }
        let what = format!("write dictionary of column {}", def.name);
        let raw = dictionary::encode(entries);
        if cfg!(debug_assertions) {
            // Pair assertion: the dictionary decodes to exactly the entries.
            let back = dictionary::decode(&raw, entries.len()).unwrap_or_else(|e| panic!("{what}: {}", e.0));
            assert!((0..back.len()).map(|i| back.get_bytes(i)).eq(entries.iter().copied()), "{what}");
        }
        if raw.len() > COLUMN_BLOCK_RAW_BYTES_MAX {
            continue;
        }
        let section = write_section(out, &raw, compressors, &what)?;
        metas.push(DictionaryMeta { column: c, entries: entries.len() as u32, section });
        with_codes[c] = true;
    }
    Ok((metas, with_codes))
}

fn write_column_blocks(
    out: &mut Output<'_>,
    schema: &Schema,
    rows: &SegmentRows<'_>,
    options: &SegmentWriteOptions,
    with_codes: &[bool],
) -> Result<(Vec<BlockMeta>, Vec<ColumnBlockMeta>), StorageError> {
    let total = rows.rows();
    let ranges: Vec<std::ops::Range<usize>> =
        (0..total).step_by(options.block_rows).map(|start| start..(start + options.block_rows).min(total)).collect();
    let encoded = encode_columns(out.path, schema, rows, options, with_codes, &ranges)?;
    let mut blocks = Vec::with_capacity(ranges.len());
    let mut metas = Vec::with_capacity(ranges.len() * schema.len());
    for (b, range) in ranges.iter().enumerate() {
        blocks.push(BlockMeta { first_row: range.start as u64, rows: range.len() as u32 });
        for (c, def) in schema.columns.iter().enumerate() {
            let (meta, stored) = &encoded[c][b];
            let what = || format!("{}: write block {b} column {}", out.path.display(), def.name);
            let meta = ColumnBlockMeta { offset: out.written, ..meta.clone() };
            out.write(stored, &what())?;
            metas.push(meta);
        }
    }
    Ok((blocks, metas))
}

/// One column's blocks: meta (offset unset) and stored bytes.
type EncodedColumn = Vec<(ColumnBlockMeta, Vec<u8>)>;
/// Per column, per block: meta (offset unset) and stored bytes.
type EncodedColumns = Vec<EncodedColumn>;

/// Encodes every block of every column, on up to `options.threads` threads, each with its own
/// zstd contexts (columns are independent; the file is then written in order). Why: encoding
/// and compressing is most of a flush, and a flush that keeps one core busy for seconds while
/// the other idles makes the last producers wait for the memtable backlog.
fn encode_columns(
    path: &Path,
    schema: &Schema,
    rows: &SegmentRows<'_>,
    options: &SegmentWriteOptions,
    with_codes: &[bool],
    ranges: &[std::ops::Range<usize>],
) -> Result<EncodedColumns, StorageError> {
    let start_zstd = || Compressors::new(options.zstd_level);
    let encode_column = |compressors: &mut io::Result<Compressors>, c: usize| -> Result<EncodedColumn, StorageError> {
        let compressors = compressors.as_mut().map_err(|e| {
            StorageError::io(format!("{}: start zstd", path.display()), io::Error::new(e.kind(), e.to_string()))
        })?;
        let def = &schema.columns[c];
        let mut column = Vec::with_capacity(ranges.len());
        for (b, range) in ranges.iter().enumerate() {
            let (slice, codes) = rows.block(c, range.clone(), with_codes[c]);
            let encoded = encode_column_block(&slice, def.ty, options, codes.as_deref(), compressors)
                .map_err(|e| StorageError::io(format!("{}: write block {b} column {}", path.display(), def.name), e))?;
            column.push(encoded);
        }
        Ok(column)
    };
    super::parallel::map_with(schema.len(), options.threads, start_zstd, encode_column).into_iter().collect()
}

/// Encodes one column block; returns its meta (offset unset) and its stored bytes.
/// `segment_codes` are the codes of its non-null values when the column has a dictionary.
fn encode_column_block(
    slice: &BlockSlice<'_>,
    ty: ColumnType,
    options: &SegmentWriteOptions,
    segment_codes: Option<&[u32]>,
    compressors: &mut Compressors,
) -> io::Result<(ColumnBlockMeta, Vec<u8>)> {
    check_text_size(slice)?;
    let candidates = encode_candidates(slice, options.dictionary_values_max, segment_codes);
    let (encoding, raw, compressed) = compressors.smallest(candidates)?;
    if raw.len() > COLUMN_BLOCK_RAW_BYTES_MAX {
        return Err(too_large(raw.len()));
    }
    let (compression, stored) = stored_form(&raw, compressed);
    let meta = ColumnBlockMeta {
        offset: 0,
        stored_len: stored.len() as u32,
        raw_len: raw.len() as u32,
        encoding,
        compression,
        crc32: crc32(&stored),
        zone: match segment_codes {
            Some(codes) => ZoneMap::of_codes(slice, codes),
            None => ZoneMap::of(slice, ty),
        },
    };
    Ok((meta, stored))
}

/// zstd output when it is smaller, else the raw bytes.
fn stored_form(raw: &[u8], compressed: Option<Vec<u8>>) -> (u8, Vec<u8>) {
    match compressed {
        Some(c) if c.len() < raw.len() => (COMPRESSION_ZSTD, c),
        _ => (COMPRESSION_NONE, raw.to_vec()),
    }
}

/// Readers refuse text blocks that expand past the limit, so the writer must too.
fn check_text_size(slice: &BlockSlice<'_>) -> io::Result<()> {
    if let DenseValues::Text(values) = &slice.values {
        let bytes: usize = values.iter().map(|v| v.len()).sum();
        if bytes > COLUMN_BLOCK_RAW_BYTES_MAX {
            return Err(too_large(bytes));
        }
    }
    Ok(())
}

fn too_large(bytes: usize) -> io::Error {
    let limit = COLUMN_BLOCK_RAW_BYTES_MAX;
    io::Error::new(io::ErrorKind::InvalidInput, format!("column block of {bytes} bytes exceeds {limit}"))
}

/// zstd contexts, reused across column blocks.
struct Compressors {
    level: zstd::bulk::Compressor<'static>,
    probe: Option<zstd::bulk::Compressor<'static>>,
}

impl Compressors {
    fn new(level: i32) -> io::Result<Compressors> {
        let probe = if level > PROBE_LEVEL_ABOVE {
            Some(zstd::bulk::Compressor::new(PROBE_LEVEL)?)
        } else {
            None
        };
        Ok(Compressors { level: zstd::bulk::Compressor::new(level)?, probe })
    }

    /// `raw` compressed at the requested level.
    fn compress(&mut self, raw: &[u8]) -> io::Result<Vec<u8>> {
        self.level.compress(raw)
    }

    /// The candidate smallest after compression: (encoding, raw, compressed at the level).
    fn smallest(&mut self, candidates: Vec<(u8, Vec<u8>)>) -> io::Result<(u8, Vec<u8>, Option<Vec<u8>>)> {
        assert!(!candidates.is_empty(), "every column type has an encoding");
        if let (Some(probe), true) = (self.probe.as_mut(), candidates.len() > 1) {
            let mut best: Option<(usize, (u8, Vec<u8>))> = None;
            for candidate in candidates {
                let size = probe.compress(&candidate.1)?.len().min(candidate.1.len());
                if best.as_ref().is_none_or(|(s, _)| size < *s) {
                    best = Some((size, candidate));
                }
            }
            let Some((_, (encoding, raw))) = best else { unreachable!("candidates not empty") };
            let compressed = self.level.compress(&raw)?;
            return Ok((encoding, raw, Some(compressed)));
        }
        let mut best: Option<(u8, Vec<u8>, Vec<u8>)> = None;
        for (encoding, raw) in candidates {
            let compressed = self.level.compress(&raw)?;
            let size = |raw: &Vec<u8>, c: &Vec<u8>| c.len().min(raw.len());
            if best.as_ref().is_none_or(|(_, r, c)| size(&raw, &compressed) < size(r, c)) {
                best = Some((encoding, raw, compressed));
            }
        }
        let Some((encoding, raw, compressed)) = best else { unreachable!("candidates not empty") };
        Ok((encoding, raw, Some(compressed)))
    }
}

/// Appends every bitmap; returns the footer directory.
fn write_bitmaps(
    out: &mut Output<'_>,
    columns: Vec<ColumnBitmaps>,
    compressors: &mut Compressors,
) -> Result<Vec<BitmapIndex>, StorageError> {
    let mut indexes = Vec::with_capacity(columns.len());
    for ColumnBitmaps { column, bitmaps } in columns {
        let what = format!("write bitmap column {column}");
        let mut entries = Vec::with_capacity(bitmaps.len());
        for (value, raw) in bitmaps {
            let section = write_section(out, &raw, compressors, &what)?;
            entries.push(BitmapEntry { value, section });
        }
        indexes.push(BitmapIndex { column, entries });
    }
    Ok(indexes)
}

/// Appends the fingerprint index; returns its footer entry.
fn write_fingerprint(
    out: &mut Output<'_>,
    columns: [usize; 3],
    index: &FingerprintIndex,
    compressors: &mut Compressors,
) -> Result<FingerprintMeta, StorageError> {
    let what = "write fingerprint index";
    let raw = index.encode();
    if cfg!(debug_assertions) {
        // Pair assertion: the bytes decode to the index.
        let back = FingerprintIndex::decode(&raw, index.len() as u32, usize::MAX).unwrap_or_else(|e| panic!("{what}: {}", e.0));
        assert!(back == *index, "{what}: decode differs");
    }
    if raw.len() > COLUMN_BLOCK_RAW_BYTES_MAX {
        return Err(StorageError::io(format!("{}: {what}", out.path.display()), too_large(raw.len())));
    }
    let section = write_section(out, &raw, compressors, what)?;
    Ok(FingerprintMeta { columns, entries: index.len() as u32, section })
}

/// Compresses `raw` (kept raw when zstd does not shrink it), appends it and returns where it
/// lies: a dictionary, a bitmap or the fingerprint index.
fn write_section(out: &mut Output<'_>, raw: &[u8], compressors: &mut Compressors, what: &str) -> Result<Section, StorageError> {
    let compressed = compressors.compress(raw).map_err(|e| StorageError::io(format!("{}: {what}", out.path.display()), e))?;
    let (compression, stored) = stored_form(raw, Some(compressed));
    let section = Section { offset: out.written, stored_len: stored.len() as u32, raw_len: raw.len() as u32, compression, crc32: crc32(&stored) };
    out.write(&stored, what)?;
    Ok(section)
}
