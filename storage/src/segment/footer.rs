//! The segment footer: everything a reader needs to find, check and decode the data.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! u64 segment_id, u64 min_lsn, u64 max_lsn
//! u32 schema_len, schema_len bytes (Schema::encode)
//! u64 rows
//! u32 block_count
//! block_count × (u64 first_row, u32 rows)
//! u16 dictionary_count (<= column_count)
//! dictionary_count × (u16 column (text, strictly increasing), u32 entry_count, u64 offset,
//!     u32 stored_len, u32 raw_len, u8 compression, u32 crc32)
//! block_count × column_count × column block meta (block-major):
//!     u64 offset, u32 stored_len, u32 raw_len, u8 encoding, u8 compression, u32 crc32,
//!     zone map (u64 null_count, u8 flags, [min], [max])
//! u16 bitmap_column_count (== schema.bitmap_columns.len(), same order)
//! bitmap_column_count × (u16 column, u32 entry_count,
//!     entry_count × (u32 value_len, value bytes, u64 offset, u32 stored_len, u32 raw_len,
//!                    u8 compression, u32 crc32))
//! version >= 2 only:
//! u8 fingerprint_count (0 or 1)
//! fingerprint_count × (u16 app_column, u16 ip_column, u16 user_agent_column (distinct text
//!     columns), u32 entry_count, u64 offset, u32 stored_len, u32 raw_len, u8 compression,
//!     u32 crc32)
//! ```
//!
//! Decoding checks every count against the bytes left and every field against the schema, so a
//! decoded footer can be trusted for indexing; a column block uses a segment-code encoding only
//! if its column has a segment dictionary. [`Footer::check_layout`] then proves that
//! dictionaries, column blocks, bitmaps and the fingerprint index tile the file between the header and the footer with
//! no gap or overlap.

use super::encoding::{
    encoding_supported, uses_segment_dictionary, COMPRESSION_NONE, COMPRESSION_ZSTD,
};
use super::{
    SegmentInfo, ZoneMap, BLOCK_ROWS_MAX, COLUMN_BLOCK_RAW_BYTES_MAX,
    SEGMENT_DICTIONARY_ENTRIES_MAX, SEGMENT_ROWS_MAX,
};
use lookback_common::{ByteReader, ColumnType, Schema};

/// Fixed bytes of one block entry and the smallest column block meta (no zone bounds).
const BLOCK_ENTRY_BYTES: usize = 12;
const COLUMN_BLOCK_META_BYTES_MIN: usize = 31;
const BITMAP_ENTRY_BYTES_MIN: usize = 25;
const DICTIONARY_ENTRY_BYTES: usize = 27;

/// Where a stored section (a dictionary, a bitmap, the fingerprint index) lies and how to
/// check and expand it. On disk: `u64 offset, u32 stored_len, u32 raw_len, u8 compression,
/// u32 crc32` (of the stored bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Section {
    pub offset: u64,
    pub stored_len: u32,
    pub raw_len: u32,
    pub compression: u8,
    pub crc32: u32,
}

impl Section {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.stored_len.to_le_bytes());
        out.extend_from_slice(&self.raw_len.to_le_bytes());
        out.push(self.compression);
        out.extend_from_slice(&self.crc32.to_le_bytes());
    }

    fn decode(r: &mut ByteReader<'_>) -> Result<Section> {
        let section = Section {
            offset: read(r.u64())?,
            stored_len: read(r.u32())?,
            raw_len: read(r.u32())?,
            compression: read(r.u8())?,
            crc32: read(r.u32())?,
        };
        check_compression(section.compression, section.stored_len, section.raw_len)?;
        Ok(section)
    }
}

/// Where one column's segment dictionary lies (see `dictionary.rs` for its bytes).
#[derive(Clone, Debug)]
pub(crate) struct DictionaryMeta {
    pub column: usize,
    pub entries: u32,
    pub section: Section,
}

#[derive(Clone, Debug)]
pub(crate) struct BlockMeta {
    pub first_row: u64,
    pub rows: u32,
}

#[derive(Clone, Debug)]
pub(crate) struct ColumnBlockMeta {
    pub offset: u64,
    pub stored_len: u32,
    pub raw_len: u32,
    pub encoding: u8,
    pub compression: u8,
    pub crc32: u32,
    pub zone: ZoneMap,
}

#[derive(Clone, Debug)]
pub(crate) struct BitmapEntry {
    pub value: String,
    pub section: Section,
}

/// Where the fingerprint index lies (see `fingerprint.rs` for its bytes).
#[derive(Clone, Debug)]
pub(crate) struct FingerprintMeta {
    /// (app_id, ip, user_agent) columns.
    pub columns: [usize; 3],
    /// (hash, block) entries.
    pub entries: u32,
    pub section: Section,
}

/// The bitmaps of one column, entries sorted by value (byte-wise), values distinct.
#[derive(Clone, Debug)]
pub(crate) struct BitmapIndex {
    pub column: usize,
    pub entries: Vec<BitmapEntry>,
}

#[derive(Clone, Debug)]
pub(crate) struct Footer {
    pub info: SegmentInfo,
    pub schema: Schema,
    pub rows: u64,
    pub blocks: Vec<BlockMeta>,
    /// Segment dictionaries, by increasing column.
    pub dictionaries: Vec<DictionaryMeta>,
    /// `blocks.len() × schema.len()`, block-major.
    pub column_blocks: Vec<ColumnBlockMeta>,
    pub bitmaps: Vec<BitmapIndex>,
    /// Written from format version 2 on, for tables with [`super::fingerprint_columns`].
    pub fingerprint: Option<FingerprintMeta>,
}

type Result<T> = std::result::Result<T, String>;

fn read<T>(r: std::result::Result<T, lookback_common::ReadError>) -> Result<T> {
    r.map_err(|e| e.to_string())
}

impl Footer {
    pub(crate) fn column_block(&self, block: usize, column: usize) -> &ColumnBlockMeta {
        &self.column_blocks[block * self.schema.len() + column]
    }

    /// Stored bytes per schema column: its column blocks and its segment dictionary.
    pub(crate) fn column_bytes(&self) -> Vec<u64> {
        let columns = self.schema.len();
        let mut bytes = vec![0u64; columns];
        for (i, m) in self.column_blocks.iter().enumerate() {
            bytes[i % columns] += m.stored_len as u64;
        }
        for d in &self.dictionaries {
            bytes[d.column] += d.section.stored_len as u64;
        }
        bytes
    }

    /// Index into `dictionaries` of `column`'s segment dictionary.
    pub(crate) fn dictionary_of(&self, column: usize) -> Option<usize> {
        self.dictionaries.iter().position(|d| d.column == column)
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for x in [self.info.segment_id, self.info.min_lsn, self.info.max_lsn] {
            out.extend_from_slice(&x.to_le_bytes());
        }
        let mut schema = Vec::new();
        self.schema.encode(&mut schema);
        out.extend_from_slice(&(schema.len() as u32).to_le_bytes());
        out.extend_from_slice(&schema);
        out.extend_from_slice(&self.rows.to_le_bytes());
        out.extend_from_slice(&(self.blocks.len() as u32).to_le_bytes());
        for b in &self.blocks {
            out.extend_from_slice(&b.first_row.to_le_bytes());
            out.extend_from_slice(&b.rows.to_le_bytes());
        }
        out.extend_from_slice(&(self.dictionaries.len() as u16).to_le_bytes());
        for d in &self.dictionaries {
            encode_dictionary(&mut out, d);
        }
        for m in &self.column_blocks {
            encode_column_block(&mut out, m);
        }
        out.extend_from_slice(&(self.bitmaps.len() as u16).to_le_bytes());
        for index in &self.bitmaps {
            encode_bitmap_index(&mut out, index);
        }
        out.push(self.fingerprint.is_some() as u8);
        if let Some(f) = &self.fingerprint {
            for c in f.columns {
                out.extend_from_slice(&(c as u16).to_le_bytes());
            }
            out.extend_from_slice(&f.entries.to_le_bytes());
            f.section.encode(&mut out);
        }
        out
    }

    /// Decodes a footer of a file of format `version` (1 or 2; version 1 has no fingerprint
    /// section).
    pub(crate) fn decode(bytes: &[u8], version: u32) -> Result<Footer> {
        let mut r = ByteReader::new(bytes);
        let info = SegmentInfo {
            segment_id: read(r.u64())?,
            min_lsn: read(r.u64())?,
            max_lsn: read(r.u64())?,
        };
        let schema = decode_schema(&mut r)?;
        let rows = read(r.u64())?;
        if rows == 0 || rows > SEGMENT_ROWS_MAX {
            return Err(format!("row count {rows} out of range"));
        }
        let blocks = decode_blocks(&mut r, rows)?;
        let dictionaries = decode_dictionaries(&mut r, &schema, rows)?;
        let has_dictionary: Vec<bool> =
            (0..schema.len()).map(|c| dictionaries.iter().any(|d| d.column == c)).collect();
        let count = blocks.len() * schema.len();
        if count.saturating_mul(COLUMN_BLOCK_META_BYTES_MIN) > r.remaining() {
            return Err(format!("{count} column block entries exceed the footer"));
        }
        let mut column_blocks = Vec::with_capacity(count);
        for block in &blocks {
            for (column, &has_dictionary) in has_dictionary.iter().enumerate() {
                let meta = decode_column_block(&mut r, &schema, column, block.rows)?;
                if uses_segment_dictionary(meta.encoding) && !has_dictionary {
                    let name = &schema.columns[column].name;
                    return Err(format!("column {name}: segment codes without a segment dictionary"));
                }
                column_blocks.push(meta);
            }
        }
        let bitmaps = decode_bitmaps(&mut r, &schema)?;
        let fingerprint = if version >= 2 { decode_fingerprint(&mut r, &schema, rows)? } else { None };
        if !r.is_empty() {
            return Err(format!("{} trailing footer bytes", r.remaining()));
        }
        Ok(Footer { info, schema, rows, blocks, dictionaries, column_blocks, bitmaps, fingerprint })
    }

    /// Checks that dictionaries, then column blocks (block-major), then bitmaps (directory
    /// order), then the fingerprint index exactly tile `[data_start, footer_offset)`: every data byte is covered by one
    /// checksum.
    pub(crate) fn check_layout(&self, data_start: u64, footer_offset: u64) -> Result<()> {
        let dictionary_spans = self.dictionaries.iter().map(|d| (d.section.offset, d.section.stored_len));
        let column_spans = self.column_blocks.iter().map(|m| (m.offset, m.stored_len));
        let bitmap_spans =
            self.bitmaps.iter().flat_map(|b| b.entries.iter()).map(|e| (e.section.offset, e.section.stored_len));
        let mut cursor = data_start;
        let fingerprint_span = self.fingerprint.iter().map(|f| (f.section.offset, f.section.stored_len));
        for (offset, len) in dictionary_spans.chain(column_spans).chain(bitmap_spans).chain(fingerprint_span) {
            if offset != cursor {
                return Err(format!("data at offset {offset}, expected {cursor}"));
            }
            cursor = cursor.saturating_add(len as u64);
        }
        if cursor != footer_offset {
            return Err(format!("data ends at {cursor}, footer starts at {footer_offset}"));
        }
        Ok(())
    }
}

fn decode_schema(r: &mut ByteReader<'_>) -> Result<Schema> {
    let bytes = read(r.bytes_u32_len())?;
    let mut sr = ByteReader::new(bytes);
    let schema = Schema::decode(&mut sr).map_err(|e| e.to_string())?;
    if !sr.is_empty() {
        return Err("trailing bytes after the schema".into());
    }
    Ok(schema)
}

fn decode_blocks(r: &mut ByteReader<'_>, rows: u64) -> Result<Vec<BlockMeta>> {
    let count = read(r.u32())? as usize;
    if count == 0 || count.saturating_mul(BLOCK_ENTRY_BYTES) > r.remaining() {
        return Err(format!("block count {count} out of range"));
    }
    let mut blocks = Vec::with_capacity(count);
    let mut next_row = 0u64;
    for i in 0..count {
        let block = BlockMeta { first_row: read(r.u64())?, rows: read(r.u32())? };
        if block.first_row != next_row || block.rows == 0 || block.rows as usize > BLOCK_ROWS_MAX {
            return Err(format!("block {i}: first row {} rows {}", block.first_row, block.rows));
        }
        next_row += block.rows as u64;
        blocks.push(block);
    }
    if next_row != rows {
        return Err(format!("blocks hold {next_row} rows, footer says {rows}"));
    }
    Ok(blocks)
}

fn encode_dictionary(out: &mut Vec<u8>, d: &DictionaryMeta) {
    out.extend_from_slice(&(d.column as u16).to_le_bytes());
    out.extend_from_slice(&d.entries.to_le_bytes());
    d.section.encode(out);
}

fn decode_dictionaries(r: &mut ByteReader<'_>, schema: &Schema, rows: u64) -> Result<Vec<DictionaryMeta>> {
    let count = read(r.u16())? as usize;
    if count > schema.len() || count.saturating_mul(DICTIONARY_ENTRY_BYTES) > r.remaining() {
        return Err(format!("dictionary count {count} out of range"));
    }
    let entries_max = (rows as usize).min(SEGMENT_DICTIONARY_ENTRIES_MAX) as u64;
    let mut dictionaries: Vec<DictionaryMeta> = Vec::with_capacity(count);
    for _ in 0..count {
        let d = DictionaryMeta { column: read(r.u16())? as usize, entries: read(r.u32())?, section: Section::decode(r)? };
        let text = schema.columns.get(d.column).is_some_and(|c| c.ty == ColumnType::Text);
        let increasing = dictionaries.last().is_none_or(|last| last.column < d.column);
        if !text || !increasing || d.entries == 0 || d.entries as u64 > entries_max {
            return Err(format!("dictionary of column {} with {} entries", d.column, d.entries));
        }
        dictionaries.push(d);
    }
    Ok(dictionaries)
}

fn encode_column_block(out: &mut Vec<u8>, m: &ColumnBlockMeta) {
    out.extend_from_slice(&m.offset.to_le_bytes());
    out.extend_from_slice(&m.stored_len.to_le_bytes());
    out.extend_from_slice(&m.raw_len.to_le_bytes());
    out.push(m.encoding);
    out.push(m.compression);
    out.extend_from_slice(&m.crc32.to_le_bytes());
    m.zone.encode(out);
}

fn decode_column_block(
    r: &mut ByteReader<'_>,
    schema: &Schema,
    column: usize,
    block_rows: u32,
) -> Result<ColumnBlockMeta> {
    let def = &schema.columns[column];
    let meta = ColumnBlockMeta {
        offset: read(r.u64())?,
        stored_len: read(r.u32())?,
        raw_len: read(r.u32())?,
        encoding: read(r.u8())?,
        compression: read(r.u8())?,
        crc32: read(r.u32())?,
        zone: ZoneMap::decode(r, def.ty)?,
    };
    let at = || format!("column {}", def.name);
    if !encoding_supported(def.ty, meta.encoding) {
        return Err(format!("{}: encoding {} invalid for {}", at(), meta.encoding, def.ty.name()));
    }
    check_compression(meta.compression, meta.stored_len, meta.raw_len).map_err(|e| format!("{}: {e}", at()))?;
    let nulls = meta.zone.null_count;
    if nulls > block_rows as u64 || (!def.nullable && nulls > 0) {
        return Err(format!("{}: null count {nulls} invalid", at()));
    }
    Ok(meta)
}

fn encode_bitmap_index(out: &mut Vec<u8>, index: &BitmapIndex) {
    out.extend_from_slice(&(index.column as u16).to_le_bytes());
    out.extend_from_slice(&(index.entries.len() as u32).to_le_bytes());
    for e in &index.entries {
        out.extend_from_slice(&(e.value.len() as u32).to_le_bytes());
        out.extend_from_slice(e.value.as_bytes());
        e.section.encode(out);
    }
}

fn decode_bitmaps(r: &mut ByteReader<'_>, schema: &Schema) -> Result<Vec<BitmapIndex>> {
    let count = read(r.u16())? as usize;
    if count != schema.bitmap_columns.len() {
        return Err(format!("{count} bitmap columns, schema has {}", schema.bitmap_columns.len()));
    }
    let mut indexes = Vec::with_capacity(count);
    for &expected in &schema.bitmap_columns {
        let column = read(r.u16())? as usize;
        if column != expected {
            return Err(format!("bitmap column {column}, schema says {expected}"));
        }
        indexes.push(BitmapIndex { column, entries: decode_bitmap_entries(r)? });
    }
    Ok(indexes)
}

fn decode_bitmap_entries(r: &mut ByteReader<'_>) -> Result<Vec<BitmapEntry>> {
    let count = read(r.u32())? as usize;
    if count.saturating_mul(BITMAP_ENTRY_BYTES_MIN) > r.remaining() {
        return Err(format!("{count} bitmap entries exceed the footer"));
    }
    let mut entries: Vec<BitmapEntry> = Vec::with_capacity(count);
    for _ in 0..count {
        let value = std::str::from_utf8(read(r.bytes_u32_len())?)
            .map_err(|_| "bitmap value is not UTF-8".to_string())?
            .to_string();
        if entries.last().is_some_and(|last| last.value.as_bytes() >= value.as_bytes()) {
            return Err(format!("bitmap value {value:?} out of order"));
        }
        entries.push(BitmapEntry { value, section: Section::decode(r)? });
    }
    Ok(entries)
}

fn decode_fingerprint(r: &mut ByteReader<'_>, schema: &Schema, rows: u64) -> Result<Option<FingerprintMeta>> {
    match read(r.u8())? {
        0 => return Ok(None),
        1 => {}
        other => return Err(format!("fingerprint count {other}")),
    }
    let columns = [read(r.u16())? as usize, read(r.u16())? as usize, read(r.u16())? as usize];
    let text = |c: usize| schema.columns.get(c).is_some_and(|d| d.ty == ColumnType::Text);
    let distinct = columns[0] != columns[1] && columns[1] != columns[2] && columns[0] != columns[2];
    if !columns.iter().all(|&c| text(c)) || !distinct {
        return Err(format!("fingerprint columns {columns:?}"));
    }
    let meta = FingerprintMeta { columns, entries: read(r.u32())?, section: Section::decode(r)? };
    if meta.entries as u64 > rows {
        return Err(format!("fingerprint index of {} entries in {rows} rows", meta.entries));
    }
    Ok(Some(meta))
}

fn check_compression(compression: u8, stored_len: u32, raw_len: u32) -> Result<()> {
    let lengths_ok = match compression {
        COMPRESSION_NONE => raw_len == stored_len,
        COMPRESSION_ZSTD => true,
        _ => false,
    };
    if !lengths_ok || raw_len as usize > COLUMN_BLOCK_RAW_BYTES_MAX {
        return Err(format!("compression {compression} raw length {raw_len}"));
    }
    Ok(())
}
