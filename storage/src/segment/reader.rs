//! Reading a segment file through a read-only mmap.
//!
//! `open` checks the header, the trailer, the footer checksum, decodes the footer and proves the
//! data layout (every byte between header and footer is in one checksummed column block or
//! bitmap); it decodes no column data. `read_block` verifies each column block's crc32 before
//! decompressing it, so a flipped bit is reported as corruption with path and offset, never
//! decoded into wrong values. A column's segment dictionary is verified, decoded and cached the
//! first time a block of that column needs it (once per `Segment`, shared by all threads);
//! a corrupt dictionary fails every read that needs it. Nothing here panics on file contents.

use super::bitmap;
use super::dictionary;
use super::dictionary::TextDictionary;
use super::encoding::{decode_block, decode_block_codes, uses_segment_dictionary, COMPRESSION_ZSTD};
use super::fingerprint::FingerprintIndex;
use super::footer::{ColumnBlockMeta, DictionaryMeta, Footer, Section};
use super::{
    SegmentInfo, ZoneMap, FOOTER_BYTES_MAX, HEADER_BYTES, SEGMENT_FORMAT_VERSION, SEGMENT_FORMAT_VERSION_MIN,
    SEGMENT_MAGIC, TRAILER_BYTES,
};
use crate::StorageError;
use lookback_common::{crc32, Batch, ByteReader, Column, ColumnValues, Schema, TextValues};
use memmap2::Mmap;
use roaring::RoaringBitmap;
use std::borrow::Cow;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::cell::RefCell;
use std::sync::OnceLock;

thread_local! {
    /// One zstd decompression context per thread, kept: creating one for every block read
    /// (an allocation of its whole state) showed in the profile of point lookups.
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// A decoded segment dictionary, or why it does not decode.
type CachedDictionary = OnceLock<Result<TextDictionary, String>>;

/// One column of a block as [`Segment::read_block_coded`] gives it.
#[derive(Debug)]
pub enum BlockColumn<'s> {
    /// Decoded values, as [`Segment::read_block`] gives them.
    Values(Column),
    /// A text column kept as codes into its segment dictionary: one code per row, each below
    /// `dictionary.len()` (code 0 in null rows). `validity`, when the block has nulls, is one
    /// bit per row, LSB first, set when the row is not null (Arrow's layout too).
    Codes { codes: Vec<u32>, validity: Option<Vec<u8>>, dictionary: &'s TextDictionary },
}

impl BlockColumn<'_> {
    /// The decoded column (codes expanded to text; null rows empty).
    pub fn into_column(self) -> Column {
        match self {
            BlockColumn::Values(column) => column,
            BlockColumn::Codes { codes, validity, dictionary } => {
                let validity: Option<Vec<bool>> = validity.map(|bits| (0..codes.len()).map(|i| bits[i / 8] >> (i % 8) & 1 == 1).collect());
                let valid = |row: usize| validity.as_ref().is_none_or(|v| v[row]);
                let bytes: usize = codes.iter().enumerate().filter(|&(row, _)| valid(row)).map(|(_, &c)| dictionary.entry(c as usize).len()).sum();
                let mut text = TextValues::with_capacity(codes.len(), bytes);
                for (row, &code) in codes.iter().enumerate() {
                    if valid(row) {
                        text.data.extend_from_slice(dictionary.entry(code as usize));
                    }
                    text.offsets.push(text.data.len() as u32);
                }
                Column::new(ColumnValues::Text(text), validity)
            }
        }
    }
}

/// An open, verified segment. `Send + Sync`: the mapping is read-only and the file immutable.
pub struct Segment {
    path: PathBuf,
    map: Mmap,
    footer: Footer,
    /// Parallel to `footer.dictionaries`, filled on first use.
    dictionaries: Vec<CachedDictionary>,
    /// The fingerprint index, decoded on first use.
    fingerprint: OnceLock<Result<FingerprintIndex, String>>,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment").field("path", &self.path).field("rows", &self.footer.rows).finish()
    }
}

impl Segment {
    pub fn open(path: &Path) -> Result<Segment, StorageError> {
        let context = || format!("open segment {}", path.display());
        let file = File::open(path).map_err(|e| StorageError::io(context(), e))?;
        let len = file.metadata().map_err(|e| StorageError::io(context(), e))?.len();
        if len < HEADER_BYTES + TRAILER_BYTES {
            return Err(StorageError::corrupt(path, 0, format!("file of {len} bytes is too short")));
        }
        // SAFETY: segment files are immutable once written (never opened for writing again,
        // only removed after every reader is gone), so the mapped bytes do not change under us.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| StorageError::io(context(), e))?;
        let footer = read_footer(path, &map)?;
        let dictionaries = footer.dictionaries.iter().map(|_| OnceLock::new()).collect();
        Ok(Segment { path: path.to_path_buf(), map, footer, dictionaries, fingerprint: OnceLock::new() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn info(&self) -> &SegmentInfo {
        &self.footer.info
    }

    pub fn schema(&self) -> &Schema {
        &self.footer.schema
    }

    pub fn rows(&self) -> u64 {
        self.footer.rows
    }

    pub fn file_bytes(&self) -> u64 {
        self.map.len() as u64
    }

    /// Stored bytes per schema column, validity and segment dictionary included.
    pub fn column_bytes(&self) -> Vec<u64> {
        self.footer.column_bytes()
    }

    /// Bytes of the index sections (bitmaps and the fingerprint index).
    pub fn index_bytes(&self) -> u64 {
        let bitmaps: u64 = self.footer.bitmaps.iter().flat_map(|b| &b.entries).map(|e| e.section.stored_len as u64).sum();
        bitmaps + self.footer.fingerprint.as_ref().map_or(0, |f| f.section.stored_len as u64)
    }

    pub fn block_count(&self) -> usize {
        self.footer.blocks.len()
    }

    /// Panics if `block >= block_count()` (a caller bug).
    pub fn block_first_row(&self, block: usize) -> u64 {
        self.footer.blocks[block].first_row
    }

    pub fn block_rows(&self, block: usize) -> usize {
        self.footer.blocks[block].rows as usize
    }

    pub fn zone_map(&self, block: usize, column: usize) -> &ZoneMap {
        assert!(column < self.footer.schema.len(), "zone_map: column {column} out of range");
        &self.footer.column_block(block, column).zone
    }

    /// Decodes `columns` of `block` (each a full column of `block_rows(block)` rows, in the
    /// order asked). Panics on an out-of-range block or column (a caller bug).
    pub fn read_block(&self, block: usize, columns: &[usize]) -> Result<Vec<Column>, StorageError> {
        let read = self.read_block_as(block, columns, false)?;
        Ok(read.into_iter().map(BlockColumn::into_column).collect())
    }

    /// As [`Self::read_block`], but text columns stored as segment-dictionary codes come back
    /// as the codes (and a reference to the dictionary), not expanded: a query turns them into
    /// Arrow arrays over the dictionary's bytes, or aggregates on the codes.
    pub fn read_block_coded(&self, block: usize, columns: &[usize]) -> Result<Vec<BlockColumn<'_>>, StorageError> {
        self.read_block_as(block, columns, true)
    }

    fn read_block_as(&self, block: usize, columns: &[usize], coded: bool) -> Result<Vec<BlockColumn<'_>>, StorageError> {
        assert!(block < self.block_count(), "read_block: block {block} out of range");
        let rows = self.block_rows(block);
        DECOMPRESSOR.with(|slot| {
            let mut slot = slot.borrow_mut();
            let decompressor = match slot.as_mut() {
                Some(decompressor) => decompressor,
                None => slot.insert(
                    zstd::bulk::Decompressor::new()
                        .map_err(|e| StorageError::io(format!("read segment {}: start zstd", self.path.display()), e))?,
                ),
            };
            columns
                .iter()
                .map(|&column| {
                    assert!(column < self.footer.schema.len(), "read_block: column {column} out of range");
                    self.read_column_block(block, column, rows, decompressor, coded)
                })
                .collect()
        })
    }

    fn read_column_block(
        &self,
        block: usize,
        column: usize,
        rows: usize,
        decompressor: &mut zstd::bulk::Decompressor<'_>,
        coded: bool,
    ) -> Result<BlockColumn<'_>, StorageError> {
        let meta = self.footer.column_block(block, column);
        let def = &self.footer.schema.columns[column];
        let corrupt = |reason: String| {
            let reason = format!("block {block} column {}: {reason}", def.name);
            StorageError::corrupt(&self.path, meta.offset, reason)
        };
        let stored = self.stored_bytes(meta).ok_or_else(|| corrupt("outside the file".into()))?;
        let actual = crc32(stored);
        if actual != meta.crc32 {
            return Err(corrupt(format!("crc32 {actual:#010x}, footer says {:#010x}", meta.crc32)));
        }
        let raw_owned;
        let raw = if meta.compression == COMPRESSION_ZSTD {
            raw_owned = decompressor
                .decompress(stored, meta.raw_len as usize)
                .map_err(|e| corrupt(format!("zstd: {e}")))?;
            raw_owned.as_slice()
        } else {
            stored
        };
        if raw.len() != meta.raw_len as usize {
            return Err(corrupt(format!("{} raw bytes, footer says {}", raw.len(), meta.raw_len)));
        }
        let null_count = meta.zone.null_count as usize;
        let dictionary = match uses_segment_dictionary(meta.encoding) {
            true => Some(self.segment_dictionary(column)?),
            false => None,
        };
        match dictionary {
            Some(dictionary) if coded => {
                let (codes, validity) = decode_block_codes(meta.encoding, raw, rows, null_count, dictionary.len())
                    .map_err(|e| corrupt(e.0))?;
                Ok(BlockColumn::Codes { codes, validity, dictionary })
            }
            _ => decode_block(def.ty, meta.encoding, raw, rows, null_count, dictionary)
                .map(BlockColumn::Values)
                .map_err(|e| corrupt(e.0)),
        }
    }

    /// `column`'s segment dictionary, decoded on first use. The footer guarantees that a
    /// column block with segment codes has one.
    fn segment_dictionary(&self, column: usize) -> Result<&TextDictionary, StorageError> {
        let name = &self.footer.schema.columns[column].name;
        let Some(i) = self.footer.dictionary_of(column) else {
            unreachable!("footer decode checks segment codes have a dictionary");
        };
        let meta = &self.footer.dictionaries[i];
        let decoded = self.dictionaries[i].get_or_init(|| self.decode_dictionary(meta));
        decoded.as_ref().map_err(|reason| {
            StorageError::corrupt(&self.path, meta.section.offset, format!("dictionary of column {name}: {reason}"))
        })
    }

    fn decode_dictionary(&self, meta: &DictionaryMeta) -> Result<TextDictionary, String> {
        let raw = self.checked_raw(&meta.section)?;
        let text = dictionary::decode(&raw, meta.entries as usize).map_err(|e| e.0)?;
        if text.len() != meta.entries as usize {
            return Err(format!("{} entries, footer says {}", text.len(), meta.entries));
        }
        Ok(TextDictionary::new(text))
    }

    /// The raw bytes of a stored section: crc32 verified, decompressed, length checked.
    fn checked_raw(&self, section: &Section) -> Result<Cow<'_, [u8]>, String> {
        let Section { offset, stored_len, raw_len, compression, crc32: crc } = *section;
        let stored = span(&self.map, offset, stored_len).ok_or("outside the file")?;
        let actual = crc32(stored);
        if actual != crc {
            return Err(format!("crc32 {actual:#010x}, footer says {crc:#010x}"));
        }
        let raw = if compression == COMPRESSION_ZSTD {
            Cow::Owned(zstd::bulk::decompress(stored, raw_len as usize).map_err(|e| format!("zstd: {e}"))?)
        } else {
            Cow::Borrowed(stored)
        };
        if raw.len() != raw_len as usize {
            return Err(format!("{} raw bytes, footer says {raw_len}", raw.len()));
        }
        Ok(raw)
    }

    /// The (app_id, ip, user_agent) columns of the fingerprint index, when the segment has one
    /// (format version 2 files of the events table).
    pub fn fingerprint_columns(&self) -> Option<[usize; 3]> {
        self.footer.fingerprint.as_ref().map(|f| f.columns)
    }

    /// The fingerprint index (decoded and cached on first use); `None` when the segment has
    /// none. A row listed for a key hash may hold another key with the same hash: callers
    /// compare values.
    pub fn fingerprint_index(&self) -> Result<Option<&FingerprintIndex>, StorageError> {
        let Some(meta) = &self.footer.fingerprint else { return Ok(None) };
        let decoded = self.fingerprint.get_or_init(|| {
            let raw = self.checked_raw(&meta.section)?;
            FingerprintIndex::decode(&raw, meta.entries, self.footer.blocks.len()).map_err(|e| e.0)
        });
        match decoded {
            Ok(index) => Ok(Some(index)),
            Err(reason) => Err(StorageError::corrupt(&self.path, meta.section.offset, format!("fingerprint index: {reason}"))),
        }
    }

    fn stored_bytes(&self, meta: &ColumnBlockMeta) -> Option<&[u8]> {
        span(&self.map, meta.offset, meta.stored_len)
    }

    /// Every block, every column, concatenated.
    pub fn read_all(&self) -> Result<Batch, StorageError> {
        let schema = &self.footer.schema;
        let all: Vec<usize> = (0..schema.len()).collect();
        let mut blocks = Vec::with_capacity(self.block_count());
        for block in 0..self.block_count() {
            let columns = self.read_block(block, &all)?;
            let batch = Batch::try_new(schema, columns).map_err(|reason| {
                StorageError::corrupt(&self.path, self.footer.column_block(block, 0).offset, reason)
            })?;
            blocks.push(batch);
        }
        let refs: Vec<&Batch> = blocks.iter().collect();
        Ok(Batch::concat(schema, &refs))
    }

    /// Row ids whose `column` equals `value`; `None` if `column` has no bitmap index.
    pub fn bitmap(&self, column: usize, value: &str) -> Result<Option<RoaringBitmap>, StorageError> {
        let Some(index) = self.footer.bitmaps.iter().find(|b| b.column == column) else {
            return Ok(None);
        };
        let found = index.entries.binary_search_by(|e| e.value.as_bytes().cmp(value.as_bytes()));
        let Ok(i) = found else { return Ok(Some(RoaringBitmap::new())) };
        let entry = &index.entries[i];
        let corrupt = |reason: String| {
            StorageError::corrupt(&self.path, entry.section.offset, format!("bitmap {value:?}: {reason}"))
        };
        let raw = self.checked_raw(&entry.section).map_err(corrupt)?;
        bitmap::decode(&raw, self.footer.rows).map(Some).map_err(|e| corrupt(e.0))
    }

    /// The indexed values of `column`, sorted byte-wise; empty if `column` has no bitmap index.
    pub fn bitmap_values(&self, column: usize) -> Result<Vec<String>, StorageError> {
        let index = self.footer.bitmaps.iter().find(|b| b.column == column);
        Ok(index.map_or_else(Vec::new, |b| b.entries.iter().map(|e| e.value.clone()).collect()))
    }
}

/// `len` bytes at `offset` of `map`, if they lie inside it.
fn span(map: &[u8], offset: u64, len: u32) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    map.get(start..start.checked_add(len as usize)?)
}

/// Checks header and trailer, verifies and decodes the footer, checks the data layout.
fn read_footer(path: &Path, map: &[u8]) -> Result<Footer, StorageError> {
    let corrupt = |offset: u64, reason: String| StorageError::corrupt(path, offset, reason);
    let mut header = ByteReader::new(map);
    let magic: [u8; 8] = header.array().map_err(|e| corrupt(0, e.to_string()))?;
    if magic != SEGMENT_MAGIC {
        return Err(corrupt(0, "not a segment file (bad magic)".into()));
    }
    let version = header.u32().map_err(|e| corrupt(8, e.to_string()))?;
    check_version(version).map_err(|r| corrupt(8, r))?;
    if header.u32().map_err(|e| corrupt(12, e.to_string()))? != 0 {
        return Err(corrupt(12, "unknown header flags".into()));
    }
    let trailer_at = map.len() as u64 - TRAILER_BYTES;
    let (footer_offset, footer_len, footer_crc, trailer_version) =
        read_trailer(&map[trailer_at as usize..]).map_err(|r| corrupt(trailer_at, r))?;
    if trailer_version != version {
        return Err(corrupt(trailer_at, format!("trailer says format version {trailer_version}, header {version}")));
    }
    let footer_end = footer_offset.checked_add(footer_len as u64);
    if footer_offset < HEADER_BYTES || footer_end != Some(trailer_at) {
        return Err(corrupt(trailer_at, format!("footer at {footer_offset} len {footer_len}")));
    }
    let footer_bytes = &map[footer_offset as usize..trailer_at as usize];
    if crc32(footer_bytes) != footer_crc {
        return Err(corrupt(footer_offset, "footer crc32 mismatch".into()));
    }
    let footer = Footer::decode(footer_bytes, version).map_err(|r| corrupt(footer_offset, r))?;
    footer.check_layout(HEADER_BYTES, footer_offset).map_err(|r| corrupt(HEADER_BYTES, r))?;
    Ok(footer)
}

fn check_version(version: u32) -> Result<(), String> {
    if !(SEGMENT_FORMAT_VERSION_MIN..=SEGMENT_FORMAT_VERSION).contains(&version) {
        return Err(format!(
            "segment format version {version} is not supported (this build reads versions \
             {SEGMENT_FORMAT_VERSION_MIN} to {SEGMENT_FORMAT_VERSION})"
        ));
    }
    Ok(())
}

/// Returns (footer_offset, footer_len, footer_crc32, version) from the 28-byte trailer.
fn read_trailer(bytes: &[u8]) -> Result<(u64, u32, u32, u32), String> {
    let mut r = ByteReader::new(bytes);
    let e = |e: lookback_common::ReadError| e.to_string();
    let (offset, len, crc) = (r.u64().map_err(e)?, r.u32().map_err(e)?, r.u32().map_err(e)?);
    let version = r.u32().map_err(e)?;
    check_version(version)?;
    if r.array::<8>().map_err(e)? != SEGMENT_MAGIC {
        return Err("bad trailer magic (truncated or not a segment)".into());
    }
    if len as usize > FOOTER_BYTES_MAX {
        return Err(format!("footer length {len} exceeds limit"));
    }
    Ok((offset, len, crc, version))
}
