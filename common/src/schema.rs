//! Typed table schemas.
//!
//! Storage is generic over a [`Schema`]: an ordered list of typed columns, a sort key (the order
//! rows take inside a segment) and the columns that get per-value roaring bitmaps. The built-in
//! `events` table is one such schema ([`Schema::events`]). Schemas are encoded into segment
//! footers and the manifest so files describe themselves; the byte layout is in docs/format.md.

use crate::bytes::{put_bytes_u16_len, ByteReader, ReadError};
use thiserror::Error;

/// Column types. The discriminant is the on-disk and on-wire type code; never renumber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ColumnType {
    Bool = 1,
    Int64 = 2,
    Float64 = 3,
    /// Microseconds since the Unix epoch, UTC.
    Timestamp = 4,
    /// UTF-8 text.
    Text = 5,
    /// 16 bytes, big-endian as printed (RFC 9562 byte order).
    Uuid = 6,
}

impl ColumnType {
    pub fn from_code(code: u8) -> Option<ColumnType> {
        Some(match code {
            1 => ColumnType::Bool,
            2 => ColumnType::Int64,
            3 => ColumnType::Float64,
            4 => ColumnType::Timestamp,
            5 => ColumnType::Text,
            6 => ColumnType::Uuid,
            _ => return None,
        })
    }

    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn name(self) -> &'static str {
        match self {
            ColumnType::Bool => "bool",
            ColumnType::Int64 => "int64",
            ColumnType::Float64 => "float64",
            ColumnType::Timestamp => "timestamp",
            ColumnType::Text => "text",
            ColumnType::Uuid => "uuid",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDef {
    pub name: String,
    pub ty: ColumnType,
    pub nullable: bool,
}

impl ColumnDef {
    pub fn new(name: &str, ty: ColumnType, nullable: bool) -> Self {
        ColumnDef {
            name: name.to_string(),
            ty,
            nullable,
        }
    }
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SchemaError {
    #[error("decode schema: {0}")]
    Truncated(#[from] ReadError),
    #[error("decode schema: {0}")]
    Invalid(String),
}

/// A table schema. Invariants (checked by [`Schema::new`]): at least one column, unique names,
/// sort key and bitmap columns index existing columns, bitmap columns are text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schema {
    pub name: String,
    pub columns: Vec<ColumnDef>,
    /// Column indexes rows are sorted by inside a segment (lexicographic, nulls first).
    pub sort_key: Vec<usize>,
    /// Text columns that get one roaring bitmap of row ids per distinct value in each segment.
    pub bitmap_columns: Vec<usize>,
}

/// Limits on schemas, so a decoded schema cannot ask for absurd allocations.
pub const SCHEMA_COLUMNS_MAX: usize = 1024;
pub const SCHEMA_NAME_BYTES_MAX: usize = 255;

/// Column positions of the built-in `events` table.
pub mod events {
    pub const EVENT_ID: usize = 0;
    pub const APP_ID: usize = 1;
    pub const TS: usize = 2;
    pub const EVENT_TYPE: usize = 3;
    pub const DEVICE_ID: usize = 4;
    pub const USER_ID: usize = 5;
    pub const IP: usize = 6;
    pub const USER_AGENT: usize = 7;
    pub const PLATFORM: usize = 8;
    pub const CHANNEL: usize = 9;
    pub const CAMPAIGN: usize = 10;
    pub const REVENUE: usize = 11;
    pub const CURRENCY: usize = 12;
    pub const PROPERTIES: usize = 13;
    pub const COLUMN_COUNT: usize = 14;
    pub const TABLE_NAME: &str = "events";
}

impl Schema {
    pub fn new(
        name: &str,
        columns: Vec<ColumnDef>,
        sort_key: Vec<usize>,
        bitmap_columns: Vec<usize>,
    ) -> Result<Schema, SchemaError> {
        let schema = Schema {
            name: name.to_string(),
            columns,
            sort_key,
            bitmap_columns,
        };
        schema.validate()?;
        Ok(schema)
    }

    fn validate(&self) -> Result<(), SchemaError> {
        let invalid = |m: String| Err(SchemaError::Invalid(m));
        if self.columns.is_empty() || self.columns.len() > SCHEMA_COLUMNS_MAX {
            return invalid(format!("column count {} out of range", self.columns.len()));
        }
        if self.name.is_empty() || self.name.len() > SCHEMA_NAME_BYTES_MAX {
            return invalid("table name empty or too long".into());
        }
        for (i, c) in self.columns.iter().enumerate() {
            if c.name.is_empty() || c.name.len() > SCHEMA_NAME_BYTES_MAX {
                return invalid(format!("column {i}: name empty or too long"));
            }
            if self.columns[..i].iter().any(|o| o.name == c.name) {
                return invalid(format!("duplicate column name {:?}", c.name));
            }
        }
        for &k in &self.sort_key {
            if k >= self.columns.len() {
                return invalid(format!("sort key column {k} does not exist"));
            }
        }
        for &b in &self.bitmap_columns {
            if b >= self.columns.len() || self.columns[b].ty != ColumnType::Text {
                return invalid(format!("bitmap column {b} is not a text column"));
            }
        }
        Ok(())
    }

    /// The built-in `events` table, sorted by (app_id, device_id, ts) with event_type bitmaps.
    pub fn events() -> Schema {
        use ColumnType::*;
        let c = ColumnDef::new;
        let columns = vec![
            c("event_id", Uuid, false),
            c("app_id", Text, false),
            c("ts", Timestamp, false),
            c("event_type", Text, false),
            c("device_id", Text, true),
            c("user_id", Text, true),
            c("ip", Text, true),
            c("user_agent", Text, true),
            c("platform", Text, true),
            c("channel", Text, true),
            c("campaign", Text, true),
            c("revenue", Float64, true),
            c("currency", Text, true),
            c("properties", Text, true),
        ];
        let sort_key = vec![events::APP_ID, events::DEVICE_ID, events::TS];
        Schema::new(
            events::TABLE_NAME,
            columns,
            sort_key,
            vec![events::EVENT_TYPE],
        )
        .expect("built-in events schema is valid")
    }

    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    pub fn len(&self) -> usize {
        self.columns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// Layout: `u16 name_len, name, u16 column_count, column_count × (u8 type, u8 nullable,
    /// u16 name_len, name), u16 sort_len, sort_len × u16, u16 bitmap_len, bitmap_len × u16`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_bytes_u16_len(out, self.name.as_bytes());
        out.extend_from_slice(&(self.columns.len() as u16).to_le_bytes());
        for c in &self.columns {
            out.push(c.ty.code());
            out.push(c.nullable as u8);
            put_bytes_u16_len(out, c.name.as_bytes());
        }
        for list in [&self.sort_key, &self.bitmap_columns] {
            out.extend_from_slice(&(list.len() as u16).to_le_bytes());
            for &i in list.iter() {
                out.extend_from_slice(&(i as u16).to_le_bytes());
            }
        }
    }

    pub fn decode(r: &mut ByteReader<'_>) -> Result<Schema, SchemaError> {
        let name = decode_name(r)?;
        let count = r.u16()? as usize;
        if count > SCHEMA_COLUMNS_MAX {
            return Err(SchemaError::Invalid(format!(
                "column count {count} exceeds limit"
            )));
        }
        let mut columns = Vec::with_capacity(count);
        for _ in 0..count {
            let code = r.u8()?;
            let ty = ColumnType::from_code(code)
                .ok_or_else(|| SchemaError::Invalid(format!("unknown column type code {code}")))?;
            let nullable = match r.u8()? {
                0 => false,
                1 => true,
                other => return Err(SchemaError::Invalid(format!("bad nullable flag {other}"))),
            };
            columns.push(ColumnDef {
                name: decode_name(r)?,
                ty,
                nullable,
            });
        }
        let sort_key = decode_index_list(r)?;
        let bitmap_columns = decode_index_list(r)?;
        Schema::new(&name, columns, sort_key, bitmap_columns)
    }
}

fn decode_name(r: &mut ByteReader<'_>) -> Result<String, SchemaError> {
    let bytes = r.bytes_u16_len()?;
    String::from_utf8(bytes.to_vec()).map_err(|_| SchemaError::Invalid("name is not UTF-8".into()))
}

fn decode_index_list(r: &mut ByteReader<'_>) -> Result<Vec<usize>, SchemaError> {
    let len = r.u16()? as usize;
    if len > SCHEMA_COLUMNS_MAX {
        return Err(SchemaError::Invalid(format!(
            "index list length {len} exceeds limit"
        )));
    }
    (0..len).map(|_| Ok(r.u16()? as usize)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_schema_roundtrips() {
        let s = Schema::events();
        let mut buf = Vec::new();
        s.encode(&mut buf);
        let back = Schema::decode(&mut ByteReader::new(&buf)).unwrap();
        assert_eq!(s, back);
        assert_eq!(s.len(), events::COLUMN_COUNT);
        assert_eq!(s.column_index("device_id"), Some(events::DEVICE_ID));
    }

    #[test]
    fn truncated_schema_is_an_error_at_every_length() {
        let mut buf = Vec::new();
        Schema::events().encode(&mut buf);
        for len in 0..buf.len() {
            assert!(
                Schema::decode(&mut ByteReader::new(&buf[..len])).is_err(),
                "len {len}"
            );
        }
    }

    #[test]
    fn invalid_schemas_are_rejected() {
        let c = ColumnDef::new("a", ColumnType::Int64, false);
        assert!(Schema::new("t", vec![c.clone(), c.clone()], vec![], vec![]).is_err());
        assert!(Schema::new("t", vec![c.clone()], vec![3], vec![]).is_err());
        assert!(Schema::new("t", vec![c], vec![], vec![0]).is_err());
    }
}
