//! Columnar batches: the unit of ingest, WAL logging and memtable storage.
//!
//! A [`Batch`] holds one [`Column`] per schema column, all with the same row count. Null rows
//! keep a slot in the value vector (zero / empty string) so row `i` is always at index `i`;
//! validity says which slots are real. Batches are immutable once built and shared by `Arc`.

use crate::schema::{ColumnType, Schema};
use std::fmt;

/// UTF-8 strings stored Arrow-style: `offsets[i]..offsets[i + 1]` is entry `i` in `data`.
/// Invariant: `offsets.len() == entries + 1`, offsets non-decreasing, on char boundaries.
///
/// Plain form (`codes` is `None`): entry `i` is row `i`. Dictionary form: the entries are
/// distinct values and row `i` is entry `codes[i]` (every code below the entry count). Batches
/// arrive from producers in dictionary form when a column repeats values (most do), so
/// decoding, logging and flushing touch each distinct value of a batch once, not every row.
#[derive(Debug, Clone, Default)]
pub struct TextValues {
    pub offsets: Vec<u32>,
    pub data: Vec<u8>,
    pub codes: Option<Vec<u32>>,
}

/// A text column becomes a dictionary when it has at most this share (in halves) of distinct
/// values among its non-null rows: below that the codes cost more than the repeats save.
const DICTIONARY_DISTINCT_HALVES_MAX: usize = 1;

impl TextValues {
    pub fn with_capacity(rows: usize, bytes: usize) -> Self {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        TextValues {
            offsets,
            data: Vec::with_capacity(bytes),
            codes: None,
        }
    }

    /// Rows.
    pub fn len(&self) -> usize {
        match &self.codes {
            Some(codes) => codes.len(),
            None => self.entries(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries: rows in plain form, distinct values in dictionary form.
    pub fn entries(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    pub fn entry_bytes(&self, e: usize) -> &[u8] {
        &self.data[self.offsets[e] as usize..self.offsets[e + 1] as usize]
    }

    /// Appends a row (plain form only: builders build plain columns).
    pub fn push(&mut self, s: &str) {
        assert!(
            self.codes.is_none(),
            "push onto a dictionary-form text column"
        );
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        self.data.extend_from_slice(s.as_bytes());
        let end = u32::try_from(self.data.len()).expect("text column exceeds 4 GiB");
        self.offsets.push(end);
    }

    pub fn get(&self, i: usize) -> &str {
        // Invariant of the type: built from &str, or validated by the codec.
        std::str::from_utf8(self.get_bytes(i)).expect("text column holds valid UTF-8")
    }

    pub fn get_bytes(&self, i: usize) -> &[u8] {
        match &self.codes {
            Some(codes) => self.entry_bytes(codes[i] as usize),
            None => self.entry_bytes(i),
        }
    }

    /// The dictionary form of a plain column (null rows, per `validity`, get code 0), when it
    /// has few enough distinct values to pay; `None` otherwise or when already a dictionary.
    pub fn to_dictionary(&self, validity: Option<&[bool]>) -> Option<TextValues> {
        if self.codes.is_some() {
            return None;
        }
        let rows = self.len();
        let valid = |i: usize| validity.is_none_or(|v| v[i]);
        let non_null = (0..rows).filter(|&i| valid(i)).count();
        let mut ids: std::collections::HashMap<&[u8], u32, ahash::RandomState> = Default::default();
        let mut dictionary = TextValues::with_capacity(0, 0);
        let mut codes = Vec::with_capacity(rows);
        for i in 0..rows {
            if !valid(i) {
                codes.push(0);
                continue;
            }
            let value = self.get_bytes(i);
            let next = ids.len() as u32;
            let code = *ids.entry(value).or_insert_with(|| {
                dictionary.data.extend_from_slice(value);
                dictionary.offsets.push(dictionary.data.len() as u32);
                next
            });
            if ids.len() * 2 > non_null * DICTIONARY_DISTINCT_HALVES_MAX {
                return None;
            }
            codes.push(code);
        }
        (non_null > 0).then_some(TextValues {
            codes: Some(codes),
            ..dictionary
        })
    }
}

impl PartialEq for TextValues {
    /// Equal rows, whatever the form.
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len()
            && (0..self.len()).all(|i| self.get_bytes(i) == other.get_bytes(i))
    }
}

impl Eq for TextValues {}

#[derive(Debug, Clone, PartialEq)]
pub enum ColumnValues {
    Bool(Vec<bool>),
    Int64(Vec<i64>),
    Float64(Vec<f64>),
    Timestamp(Vec<i64>),
    Text(TextValues),
    Uuid(Vec<[u8; 16]>),
}

impl ColumnValues {
    pub fn empty(ty: ColumnType, rows: usize) -> ColumnValues {
        match ty {
            ColumnType::Bool => ColumnValues::Bool(Vec::with_capacity(rows)),
            ColumnType::Int64 => ColumnValues::Int64(Vec::with_capacity(rows)),
            ColumnType::Float64 => ColumnValues::Float64(Vec::with_capacity(rows)),
            ColumnType::Timestamp => ColumnValues::Timestamp(Vec::with_capacity(rows)),
            ColumnType::Text => ColumnValues::Text(TextValues::with_capacity(rows, rows * 8)),
            ColumnType::Uuid => ColumnValues::Uuid(Vec::with_capacity(rows)),
        }
    }

    pub fn column_type(&self) -> ColumnType {
        match self {
            ColumnValues::Bool(_) => ColumnType::Bool,
            ColumnValues::Int64(_) => ColumnType::Int64,
            ColumnValues::Float64(_) => ColumnType::Float64,
            ColumnValues::Timestamp(_) => ColumnType::Timestamp,
            ColumnValues::Text(_) => ColumnType::Text,
            ColumnValues::Uuid(_) => ColumnType::Uuid,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            ColumnValues::Bool(v) => v.len(),
            ColumnValues::Int64(v) | ColumnValues::Timestamp(v) => v.len(),
            ColumnValues::Float64(v) => v.len(),
            ColumnValues::Text(v) => v.len(),
            ColumnValues::Uuid(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Approximate heap bytes, for memtable accounting.
    pub fn heap_bytes(&self) -> usize {
        match self {
            ColumnValues::Bool(v) => v.len(),
            ColumnValues::Int64(v) | ColumnValues::Timestamp(v) => v.len() * 8,
            ColumnValues::Float64(v) => v.len() * 8,
            ColumnValues::Text(v) => {
                v.offsets.len() * 4 + v.data.len() + v.codes.as_ref().map_or(0, |c| c.len() * 4)
            }
            ColumnValues::Uuid(v) => v.len() * 16,
        }
    }
}

/// One column: values plus optional validity (`true` = not null). `None` means no nulls.
#[derive(Debug, Clone)]
pub struct Column {
    pub values: ColumnValues,
    pub validity: Option<Vec<bool>>,
}

impl PartialEq for Column {
    /// Same validity and same values in non-null rows (a null row's text slot is empty in
    /// plain form but any entry in dictionary form).
    fn eq(&self, other: &Self) -> bool {
        if self.validity != other.validity {
            return false;
        }
        match (&self.values, &other.values) {
            (ColumnValues::Text(a), ColumnValues::Text(b)) => {
                a.len() == b.len()
                    && (0..a.len()).all(|i| self.is_null(i) || a.get_bytes(i) == b.get_bytes(i))
            }
            (a, b) => a == b,
        }
    }
}

impl Column {
    pub fn new(values: ColumnValues, validity: Option<Vec<bool>>) -> Column {
        if let Some(v) = &validity {
            assert_eq!(
                v.len(),
                values.len(),
                "validity length must equal value count"
            );
        }
        Column { values, validity }
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_null(&self, i: usize) -> bool {
        self.validity.as_ref().is_some_and(|v| !v[i])
    }

    pub fn null_count(&self) -> usize {
        self.validity
            .as_ref()
            .map_or(0, |v| v.iter().filter(|b| !**b).count())
    }

    pub fn value(&self, i: usize) -> Value {
        if self.is_null(i) {
            return Value::Null;
        }
        match &self.values {
            ColumnValues::Bool(v) => Value::Bool(v[i]),
            ColumnValues::Int64(v) => Value::Int64(v[i]),
            ColumnValues::Float64(v) => Value::Float64(v[i]),
            ColumnValues::Timestamp(v) => Value::Timestamp(v[i]),
            ColumnValues::Text(v) => Value::Text(v.get(i).to_string()),
            ColumnValues::Uuid(v) => Value::Uuid(v[i]),
        }
    }

    /// The text at row `i`, or `None` when null. Panics if the column is not text.
    pub fn text(&self, i: usize) -> Option<&str> {
        match &self.values {
            ColumnValues::Text(v) if !self.is_null(i) => Some(v.get(i)),
            ColumnValues::Text(_) => None,
            other => panic!("text() on a {:?} column", other.column_type()),
        }
    }

    pub fn heap_bytes(&self) -> usize {
        self.values.heap_bytes() + self.validity.as_ref().map_or(0, |v| v.len())
    }
}

/// An owned cell value, for row-at-a-time building, dumps and tests.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int64(i64),
    Float64(f64),
    Timestamp(i64),
    Text(String),
    Uuid([u8; 16]),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => write!(f, "NULL"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int64(v) | Value::Timestamp(v) => write!(f, "{v}"),
            Value::Float64(v) => write!(f, "{v}"),
            Value::Text(s) => write!(f, "{s}"),
            Value::Uuid(u) => write!(f, "{}", format_uuid(u)),
        }
    }
}

/// Formats 16 bytes as the canonical hyphenated lowercase UUID.
/// Parses a uuid as PostgreSQL's input accepts it: 32 hex digits, either case, optionally in
/// braces, with a hyphen allowed after any group of 4 digits (canonical `8-4-4-4-12` included).
pub fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let inner = text
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .unwrap_or(text);
    let mut out = [0u8; 16];
    let mut digits = 0usize;
    let mut previous_hyphen = true;
    for c in inner.chars() {
        if c == '-' {
            if previous_hyphen || digits % 4 != 0 || digits == 32 {
                return None;
            }
            previous_hyphen = true;
            continue;
        }
        let value = c.to_digit(16)? as u8;
        if digits == 32 {
            return None;
        }
        out[digits / 2] |= value << if digits % 2 == 0 { 4 } else { 0 };
        digits += 1;
        previous_hyphen = false;
    }
    (digits == 32 && !previous_hyphen).then_some(out)
}

pub fn format_uuid(u: &[u8; 16]) -> String {
    let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A columnar batch. Invariant: every column has `rows` values.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    columns: Vec<Column>,
    rows: usize,
}

impl Batch {
    /// Builds a batch and checks it against `schema`: column count, types, equal lengths and no
    /// nulls in non-nullable columns. Errors are descriptive strings for the caller to wrap.
    pub fn try_new(schema: &Schema, columns: Vec<Column>) -> Result<Batch, String> {
        if columns.len() != schema.columns.len() {
            return Err(format!(
                "table {} has {} columns, batch has {}",
                schema.name,
                schema.columns.len(),
                columns.len()
            ));
        }
        let rows = columns.first().map_or(0, Column::len);
        for (def, col) in schema.columns.iter().zip(&columns) {
            if col.values.column_type() != def.ty {
                return Err(format!(
                    "column {} is {}, batch has {}",
                    def.name,
                    def.ty.name(),
                    col.values.column_type().name()
                ));
            }
            if col.len() != rows {
                return Err(format!(
                    "column {} has {} rows, expected {rows}",
                    def.name,
                    col.len()
                ));
            }
            if !def.nullable && col.null_count() > 0 {
                return Err(format!("column {} is not nullable but has nulls", def.name));
            }
        }
        Ok(Batch { columns, rows })
    }

    pub fn empty(schema: &Schema) -> Batch {
        let columns = schema
            .columns
            .iter()
            .map(|c| Column::new(ColumnValues::empty(c.ty, 0), None))
            .collect();
        Batch { columns, rows: 0 }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    pub fn column(&self, i: usize) -> &Column {
        &self.columns[i]
    }

    pub fn into_columns(self) -> Vec<Column> {
        self.columns
    }

    pub fn row(&self, i: usize) -> Vec<Value> {
        self.columns.iter().map(|c| c.value(i)).collect()
    }

    pub fn heap_bytes(&self) -> usize {
        self.columns.iter().map(Column::heap_bytes).sum()
    }

    /// A new batch holding the given rows of `self`, in the given order.
    pub fn take(&self, indices: &[u32]) -> Batch {
        let columns = self
            .columns
            .iter()
            .map(|c| {
                let validity = c
                    .validity
                    .as_ref()
                    .map(|v| {
                        indices
                            .iter()
                            .map(|&i| v[i as usize])
                            .collect::<Vec<bool>>()
                    })
                    .filter(|v| v.iter().any(|b| !b));
                Column::new(take_values(&c.values, indices), validity)
            })
            .collect();
        Batch {
            columns,
            rows: indices.len(),
        }
    }

    /// Concatenates batches of one schema. Panics if they disagree: callers only concatenate
    /// batches validated against the same schema.
    pub fn concat(schema: &Schema, batches: &[&Batch]) -> Batch {
        let rows: usize = batches.iter().map(|b| b.rows).sum();
        let columns = schema
            .columns
            .iter()
            .enumerate()
            .map(|(ci, def)| {
                let parts: Vec<&Column> = batches.iter().map(|b| &b.columns[ci]).collect();
                Column::concat(def.ty, &parts)
            })
            .collect();
        Batch { columns, rows }
    }
}

impl Column {
    /// Concatenates columns of type `ty`.
    /// Text parts with a dictionary give plain text, built in one pass.
    pub fn concat(ty: ColumnType, parts: &[&Column]) -> Column {
        let rows: usize = parts.iter().map(|c| c.len()).sum();
        let coded = |c: &&Column| matches!(&c.values, ColumnValues::Text(t) if t.codes.is_some());
        let filled = ty == ColumnType::Text && parts.iter().any(coded);
        let mut values = match ty {
            ColumnType::Text if filled => ColumnValues::Text(plain_text(parts, rows)),
            ColumnType::Text => {
                let bytes = parts.iter().map(|c| c.values.heap_bytes()).sum();
                ColumnValues::Text(TextValues::with_capacity(rows, bytes))
            }
            ty => ColumnValues::empty(ty, rows),
        };
        let any_nulls = parts.iter().any(|c| c.validity.is_some());
        let mut validity = any_nulls.then(|| Vec::with_capacity(rows));
        for src in parts {
            if !filled {
                append_values(&mut values, &src.values);
            }
            if let Some(v) = validity.as_mut() {
                match &src.validity {
                    Some(sv) => v.extend_from_slice(sv),
                    None => v.resize(v.len() + src.len(), true),
                }
            }
        }
        Column::new(values, validity)
    }
}

/// The text of `parts` (text columns, some with a dictionary) as one plain column of `rows`
/// values: every value copied once (appending part by part would re-expand the growing result
/// for every part).
fn plain_text(parts: &[&Column], rows: usize) -> TextValues {
    // Null rows stay empty (a dictionary column's null rows point at code 0).
    let value = |c: &'_ Column, t: &'_ TextValues, i: usize| -> usize {
        if c.is_null(i) {
            0
        } else {
            t.get_bytes(i).len()
        }
    };
    let texts: Vec<(&Column, &TextValues)> = parts
        .iter()
        .map(|c| match &c.values {
            ColumnValues::Text(t) => (*c, t),
            other => panic!("column type mismatch: text vs {:?}", other.column_type()),
        })
        .collect();
    let bytes = texts
        .iter()
        .map(|&(c, t)| (0..t.len()).map(|i| value(c, t, i)).sum::<usize>())
        .sum();
    let mut plain = TextValues::with_capacity(rows, bytes);
    for (c, t) in texts {
        for i in 0..t.len() {
            if !c.is_null(i) {
                plain.data.extend_from_slice(t.get_bytes(i));
            }
            plain.offsets.push(plain.data.len() as u32);
        }
    }
    plain
}

fn take_values(src: &ColumnValues, indices: &[u32]) -> ColumnValues {
    fn gather<T: Copy>(v: &[T], indices: &[u32]) -> Vec<T> {
        indices.iter().map(|&i| v[i as usize]).collect()
    }
    match src {
        ColumnValues::Bool(v) => ColumnValues::Bool(gather(v, indices)),
        ColumnValues::Int64(v) => ColumnValues::Int64(gather(v, indices)),
        ColumnValues::Timestamp(v) => ColumnValues::Timestamp(gather(v, indices)),
        ColumnValues::Float64(v) => ColumnValues::Float64(gather(v, indices)),
        ColumnValues::Uuid(v) => ColumnValues::Uuid(gather(v, indices)),
        ColumnValues::Text(TextValues {
            offsets,
            data,
            codes: Some(codes),
        }) => ColumnValues::Text(TextValues {
            offsets: offsets.clone(),
            data: data.clone(),
            codes: Some(gather(codes, indices)),
        }),
        ColumnValues::Text(t) => {
            let bytes: usize = indices.iter().map(|&i| t.get_bytes(i as usize).len()).sum();
            let mut out = TextValues::with_capacity(indices.len(), bytes);
            for &i in indices {
                out.data.extend_from_slice(t.get_bytes(i as usize));
                out.offsets.push(out.data.len() as u32);
            }
            ColumnValues::Text(out)
        }
    }
}

fn append_values(dst: &mut ColumnValues, src: &ColumnValues) {
    match (dst, src) {
        (ColumnValues::Bool(d), ColumnValues::Bool(s)) => d.extend_from_slice(s),
        (ColumnValues::Int64(d), ColumnValues::Int64(s)) => d.extend_from_slice(s),
        (ColumnValues::Timestamp(d), ColumnValues::Timestamp(s)) => d.extend_from_slice(s),
        (ColumnValues::Float64(d), ColumnValues::Float64(s)) => d.extend_from_slice(s),
        (ColumnValues::Uuid(d), ColumnValues::Uuid(s)) => d.extend_from_slice(s),
        (ColumnValues::Text(d), ColumnValues::Text(s))
            if d.codes.is_none() && s.codes.is_none() =>
        {
            let base = d.data.len() as u32;
            d.data.extend_from_slice(&s.data);
            d.offsets.extend(s.offsets[1..].iter().map(|o| o + base));
        }
        (ColumnValues::Text(d), ColumnValues::Text(s)) => {
            // A dictionary on either side: the result is plain.
            let mut plain = TextValues::with_capacity(d.len() + s.len(), 0);
            for i in 0..d.len() {
                plain.data.extend_from_slice(d.get_bytes(i));
                plain.offsets.push(plain.data.len() as u32);
            }
            for i in 0..s.len() {
                plain.data.extend_from_slice(s.get_bytes(i));
                plain.offsets.push(plain.data.len() as u32);
            }
            *d = plain;
        }
        (d, s) => panic!(
            "column type mismatch: {:?} vs {:?}",
            d.column_type(),
            s.column_type()
        ),
    }
}

/// Builds a batch row by row (tests, demo data, dumps) or column by column (load generator).
pub struct BatchBuilder {
    schema: Schema,
    columns: Vec<(ColumnValues, Vec<bool>)>,
}

impl BatchBuilder {
    pub fn new(schema: &Schema, rows_hint: usize) -> BatchBuilder {
        let columns = schema
            .columns
            .iter()
            .map(|c| {
                (
                    ColumnValues::empty(c.ty, rows_hint),
                    Vec::with_capacity(rows_hint),
                )
            })
            .collect();
        BatchBuilder {
            schema: schema.clone(),
            columns,
        }
    }

    /// Appends one value to column `col`. A value of the wrong type is an error string.
    pub fn push(&mut self, col: usize, value: &Value) -> Result<(), String> {
        let (values, validity) = &mut self.columns[col];
        match (values, value) {
            (ColumnValues::Bool(v), Value::Bool(x)) => v.push(*x),
            (ColumnValues::Int64(v), Value::Int64(x)) => v.push(*x),
            (ColumnValues::Timestamp(v), Value::Timestamp(x)) => v.push(*x),
            (ColumnValues::Float64(v), Value::Float64(x)) => v.push(*x),
            (ColumnValues::Uuid(v), Value::Uuid(x)) => v.push(*x),
            (ColumnValues::Text(v), Value::Text(x)) => v.push(x),
            (values, Value::Null) => push_null(values),
            (values, other) => {
                return Err(format!(
                    "column {} is {}, value {other:?} is not",
                    self.schema.columns[col].name,
                    values.column_type().name()
                ))
            }
        }
        validity.push(!matches!(value, Value::Null));
        Ok(())
    }

    /// Appends text (or null) to column `col` without allocating a [`Value`].
    pub fn push_text(&mut self, col: usize, s: Option<&str>) {
        let (values, validity) = &mut self.columns[col];
        match (values, s) {
            (ColumnValues::Text(v), Some(s)) => v.push(s),
            (ColumnValues::Text(v), None) => v.push(""),
            (other, _) => panic!("push_text on a {:?} column", other.column_type()),
        }
        validity.push(s.is_some());
    }

    pub fn push_row(&mut self, row: &[Value]) -> Result<(), String> {
        if row.len() != self.columns.len() {
            return Err(format!(
                "row has {} values, table has {}",
                row.len(),
                self.columns.len()
            ));
        }
        for (i, v) in row.iter().enumerate() {
            self.push(i, v)?;
        }
        Ok(())
    }

    pub fn finish(self) -> Result<Batch, String> {
        let columns = self
            .columns
            .into_iter()
            .map(|(values, validity)| {
                let validity = validity.iter().any(|b| !b).then_some(validity);
                Column::new(values, validity)
            })
            .collect();
        Batch::try_new(&self.schema, columns)
    }
}

fn push_null(values: &mut ColumnValues) {
    match values {
        ColumnValues::Bool(v) => v.push(false),
        ColumnValues::Int64(v) | ColumnValues::Timestamp(v) => v.push(0),
        ColumnValues::Float64(v) => v.push(0.0),
        ColumnValues::Uuid(v) => v.push([0; 16]),
        ColumnValues::Text(v) => v.push(""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{ColumnDef, ColumnType};

    fn schema() -> Schema {
        Schema::new(
            "t",
            vec![
                ColumnDef::new("id", ColumnType::Int64, false),
                ColumnDef::new("name", ColumnType::Text, true),
            ],
            vec![0],
            vec![1],
        )
        .unwrap()
    }

    fn build(rows: &[(i64, Option<&str>)]) -> Batch {
        let mut b = BatchBuilder::new(&schema(), rows.len());
        for (id, name) in rows {
            let name = name.map_or(Value::Null, |s| Value::Text(s.into()));
            b.push_row(&[Value::Int64(*id), name]).unwrap();
        }
        b.finish().unwrap()
    }

    #[test]
    fn take_and_concat_preserve_values_and_nulls() {
        let a = build(&[(1, Some("x")), (2, None)]);
        let b = build(&[(3, Some("yy"))]);
        let c = Batch::concat(&schema(), &[&a, &b]);
        assert_eq!(c.rows(), 3);
        assert_eq!(c.row(1), vec![Value::Int64(2), Value::Null]);
        assert_eq!(c.row(2), vec![Value::Int64(3), Value::Text("yy".into())]);
        let t = c.take(&[2, 0]);
        assert_eq!(t.row(0), vec![Value::Int64(3), Value::Text("yy".into())]);
        assert_eq!(t.row(1), vec![Value::Int64(1), Value::Text("x".into())]);
        assert!(
            t.column(1).validity.is_none(),
            "no nulls left means no validity vector"
        );
    }

    #[test]
    fn concat_of_dictionary_text_is_plain_and_equal() {
        let a = build(&[(1, Some("x")), (2, None), (3, Some("x"))]);
        let b = build(&[(4, Some("yy"))]);
        let coded = |batch: &Batch| {
            let column = batch.column(1);
            let ColumnValues::Text(t) = &column.values else {
                unreachable!()
            };
            let dictionary = t
                .to_dictionary(column.validity.as_deref())
                .expect("values repeat");
            Batch::try_new(
                &schema(),
                vec![
                    batch.column(0).clone(),
                    Column::new(ColumnValues::Text(dictionary), column.validity.clone()),
                ],
            )
            .expect("valid")
        };
        let (ca, cb) = (coded(&a), coded(&a));
        let c = Batch::concat(&schema(), &[&ca, &b, &cb, &a]);
        let plain = Batch::concat(&schema(), &[&a, &b, &a, &a]);
        assert_eq!(c.rows(), 10);
        for row in 0..10 {
            assert_eq!(c.row(row), plain.row(row), "row {row}");
        }
        let ColumnValues::Text(t) = &c.column(1).values else {
            unreachable!()
        };
        assert!(t.codes.is_none());
        assert_eq!(t.data.len(), 8, "each value copied once, null rows empty");
    }

    #[test]
    fn nulls_in_non_nullable_column_are_rejected() {
        let mut b = BatchBuilder::new(&schema(), 1);
        b.push_row(&[Value::Null, Value::Null]).unwrap();
        assert!(b.finish().unwrap_err().contains("not nullable"));
    }

    #[test]
    fn uuid_parsing_accepts_postgres_forms_only() {
        let canonical = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
        let u = parse_uuid(canonical).unwrap();
        assert_eq!(format_uuid(&u), canonical);
        for ok in [
            "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
            "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
            "a0eebc999c0b4ef8bb6d6bb9bd380a11",
            "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11",
        ] {
            assert_eq!(parse_uuid(ok), Some(u), "{ok}");
        }
        for bad in [
            "",
            "a0eebc99",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a111",
            "-a0eebc999c0b4ef8bb6d6bb9bd380a11",
            "a0eebc99--9c0b4ef8bb6d6bb9bd380a11",
            "a0eebc999c0b4ef8bb6d6bb9bd380a11-",
            "g0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "a0e-ebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        ] {
            assert_eq!(parse_uuid(bad), None, "{bad}");
        }
    }

    #[test]
    fn uuid_formatting() {
        let u = [
            0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 1, 2, 3, 4, 5, 6, 7, 8,
        ];
        assert_eq!(format_uuid(&u), "12345678-9abc-def0-0102-030405060708");
    }
}
