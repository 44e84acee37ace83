//! `COPY table [(columns)] FROM STDIN` and `COPY {table | (query)} TO STDOUT`, in PostgreSQL's
//! text and CSV formats (what psql's `\copy` and drivers' copy APIs speak).
//!
//! Why here and not in the wire crate: COPY is a statement over Lookback tables; the wire
//! crate only moves its bytes. COPY FROM parses records as bytes arrive, casts each batch of
//! [`COPY_BATCH_ROWS`] rows to the table's types with Arrow's casts (the same conversions an
//! INSERT gets), and admits it through the write path like an INSERT: durable, and for
//! `events` deduplicated. So memory stays bounded whatever the input size, at a price that
//! differs from PostgreSQL: a COPY is applied batch by batch, and an error stops it with the
//! batches before the failing one already stored (the error says how many rows were).

use crate::arrow::arrow_schema;
use crate::error::SqlError;
use crate::insert::{admit_durable, storage_batch};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use datafusion::arrow::compute::{cast_with_options, CastOptions};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::error::{DataFusionError, Result};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{CopyLegacyCsvOption, CopyLegacyOption, CopyOption, CopySource, CopyTarget, Statement};
use futures::stream::{BoxStream, StreamExt};
use lookback_common::Schema;
use lookback_storage::Db;
use std::sync::Arc;

/// Rows parsed before they are cast and admitted as one batch.
pub const COPY_BATCH_ROWS: usize = 65_536;
/// Bytes of one record (a line, or a CSV record with quoted newlines) at most.
pub const COPY_RECORD_BYTES_MAX: usize = 16 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyFormat {
    Text,
    Csv,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyOptions {
    pub format: CopyFormat,
    pub delimiter: u8,
    /// The text that stands for NULL: `\N` in text format, the empty (unquoted) field in CSV.
    pub null: String,
    pub header: bool,
    pub quote: u8,
    pub escape: u8,
}

impl CopyOptions {
    fn defaults(format: CopyFormat) -> CopyOptions {
        match format {
            CopyFormat::Text => CopyOptions { format, delimiter: b'\t', null: "\\N".into(), header: false, quote: b'"', escape: b'"' },
            CopyFormat::Csv => CopyOptions { format, delimiter: b',', null: String::new(), header: false, quote: b'"', escape: b'"' },
        }
    }

    /// The options of a COPY statement, in either syntax (`WITH (FORMAT csv, HEADER)` or the
    /// pre-9.0 `CSV HEADER` that psql's `\copy` passes through).
    pub fn parse(options: &[CopyOption], legacy: &[CopyLegacyOption]) -> Result<CopyOptions> {
        let format = options.iter().find_map(|o| match o {
            CopyOption::Format(f) => Some(f.value.to_lowercase()),
            _ => None,
        });
        let legacy_csv = legacy.iter().any(|o| matches!(o, CopyLegacyOption::Csv(_)));
        let format = match format.as_deref() {
            Some("csv") => CopyFormat::Csv,
            Some("text") => CopyFormat::Text,
            None if legacy_csv => CopyFormat::Csv,
            None => CopyFormat::Text,
            Some(other) => return Err(unsupported(&format!("COPY format \"{other}\" (text and csv are)"))),
        };
        let mut o = CopyOptions::defaults(format);
        for option in options {
            match option {
                CopyOption::Format(_) | CopyOption::Freeze(_) => {}
                CopyOption::Delimiter(c) => o.delimiter = single_byte(*c, "DELIMITER")?,
                CopyOption::Null(s) => o.null = s.clone(),
                CopyOption::Header(h) => o.header = *h,
                CopyOption::Quote(c) => o.quote = single_byte(*c, "QUOTE")?,
                CopyOption::Escape(c) => o.escape = single_byte(*c, "ESCAPE")?,
                CopyOption::Encoding(e) if e.eq_ignore_ascii_case("utf8") || e.eq_ignore_ascii_case("utf-8") => {}
                other => return Err(unsupported(&format!("COPY option {other}"))),
            }
        }
        for option in legacy {
            match option {
                CopyLegacyOption::Delimiter(c) => o.delimiter = single_byte(*c, "DELIMITER")?,
                CopyLegacyOption::Null(s) => o.null = s.clone(),
                CopyLegacyOption::Header => o.header = true,
                CopyLegacyOption::Csv(csv) => {
                    for c in csv {
                        match c {
                            CopyLegacyCsvOption::Header => o.header = true,
                            CopyLegacyCsvOption::Quote(q) => o.quote = single_byte(*q, "QUOTE")?,
                            CopyLegacyCsvOption::Escape(e) => o.escape = single_byte(*e, "ESCAPE")?,
                            other => return Err(unsupported(&format!("COPY option {other}"))),
                        }
                    }
                }
                CopyLegacyOption::Binary => return Err(unsupported("COPY format \"binary\" (text and csv are)")),
                other => return Err(unsupported(&format!("COPY option {other}"))),
            }
        }
        if [b'\r', b'\n'].contains(&o.delimiter) || (o.format == CopyFormat::Text && o.delimiter == b'\\') {
            return Err(SqlError::new("22023", "COPY delimiter cannot be newline, carriage return or (in text format) backslash").into());
        }
        if o.format == CopyFormat::Csv && o.delimiter == o.quote {
            return Err(SqlError::new("22023", "COPY delimiter and quote must be different").into());
        }
        Ok(o)
    }
}

fn single_byte(c: char, what: &str) -> Result<u8> {
    u8::try_from(c).ok().filter(u8::is_ascii).ok_or_else(|| SqlError::new("22023", format!("COPY {what} must be a single one-byte character")).into())
}

fn unsupported(what: &str) -> DataFusionError {
    SqlError::new("0A000", format!("{what} is not supported")).into()
}

/// What a COPY statement is, once checked against the catalog.
pub enum CopyPlan {
    /// FROM STDIN: feed it the client's bytes.
    In(CopyIn),
    /// TO STDOUT: the query whose rows to send, and how.
    Out { query: String, options: CopyOptions },
}

/// Whether `statement` is a COPY this module handles (STDIN / STDOUT).
pub fn handles(statement: &Statement) -> bool {
    matches!(statement, Statement::Copy { .. })
}

pub fn plan(db: &Arc<Db>, statement: &Statement) -> Result<CopyPlan> {
    let Statement::Copy { source, to, target, options, legacy_options, values } = statement else {
        return Err(DataFusionError::Internal(format!("not a COPY statement: {statement}")));
    };
    if !values.is_empty() {
        return Err(unsupported("COPY with inline values"));
    }
    let options = CopyOptions::parse(options, legacy_options)?;
    match (to, target, source) {
        (false, CopyTarget::Stdin, CopySource::Table { table_name, columns }) => {
            let name = crate::ddl::table_name(table_name)?;
            let schema = db.schema(&name).ok_or_else(|| SqlError::new("42P01", format!("relation \"{name}\" does not exist")))?;
            let names: Vec<String> = columns.iter().map(|c| crate::ddl::fold_ident(c)).collect();
            Ok(CopyPlan::In(CopyIn::new(db.clone(), name, schema, &names, options)?))
        }
        (false, _, CopySource::Query(_)) => Err(SqlError::new("42601", "COPY FROM takes a table, not a query").into()),
        (true, CopyTarget::Stdout, CopySource::Table { table_name, columns }) => {
            let name = crate::ddl::table_name(table_name)?;
            let list = if columns.is_empty() { "*".to_string() } else { columns.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", ") };
            Ok(CopyPlan::Out { query: format!("SELECT {list} FROM {}", crate::ddl::quote_ident(&name)), options })
        }
        (true, CopyTarget::Stdout, CopySource::Query(query)) => Ok(CopyPlan::Out { query: query.to_string(), options }),
        _ => Err(SqlError::new("42501", "COPY to or from a file or program is not allowed; use STDIN/STDOUT (psql: \\copy)").into()),
    }
}

/// A COPY FROM STDIN in progress.
pub struct CopyIn {
    db: Arc<Db>,
    table: String,
    schema: Arc<Schema>,
    arrow: SchemaRef,
    /// The table column each field of a record goes to, in order.
    targets: Vec<usize>,
    options: CopyOptions,
    /// Bytes received that do not yet make a whole record.
    pending: Vec<u8>,
    /// Per target, the values of the records parsed since the last admitted batch.
    fields: Vec<Vec<Option<String>>>,
    rows: usize,
    /// 1-based number of the last record parsed (the header counts), for error messages.
    line: u64,
    header_pending: bool,
    /// A `\.` line was seen: the rest of the input is ignored, as PostgreSQL does.
    ended: bool,
    stored: u64,
}

impl CopyIn {
    fn new(db: Arc<Db>, table: String, schema: Arc<Schema>, columns: &[String], options: CopyOptions) -> Result<CopyIn> {
        let targets: Vec<usize> = if columns.is_empty() {
            (0..schema.columns.len()).collect()
        } else {
            let mut targets = Vec::with_capacity(columns.len());
            for c in columns {
                let i = schema.column_index(c).ok_or_else(|| {
                    SqlError::new("42703", format!("column \"{c}\" of relation \"{table}\" does not exist"))
                })?;
                if targets.contains(&i) {
                    return Err(SqlError::new("42701", format!("column \"{c}\" specified more than once")).into());
                }
                targets.push(i);
            }
            targets
        };
        let arrow = arrow_schema(&schema);
        let header_pending = options.header;
        let fields = vec![Vec::new(); targets.len()];
        Ok(CopyIn { db, table, schema, arrow, targets, options, pending: Vec::new(), fields, rows: 0, line: 0, header_pending, ended: false, stored: 0 })
    }

    /// Fields per record the client must send.
    pub fn columns(&self) -> usize {
        self.targets.len()
    }

    pub fn format(&self) -> CopyFormat {
        self.options.format
    }

    /// Takes the next chunk of the client's data (chunks split records anywhere).
    pub async fn data(&mut self, bytes: &[u8]) -> Result<()> {
        if self.ended {
            return Ok(());
        }
        self.pending.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(end) = record_end(&self.pending[start..], &self.options) {
            let record = strip_newline(&self.pending[start..start + end]).to_vec();
            start += end + 1;
            self.record(&record)?;
            if self.ended {
                break;
            }
            if self.rows >= COPY_BATCH_ROWS {
                self.pending.drain(..start);
                start = 0;
                self.admit_batch().await?;
            }
        }
        self.pending.drain(..start);
        if self.pending.len() > COPY_RECORD_BYTES_MAX {
            return Err(self.error("54000", format!("a COPY record is longer than {COPY_RECORD_BYTES_MAX} bytes")));
        }
        Ok(())
    }

    /// The client sent CopyDone: the last record (which may lack its newline) and the last
    /// batch are applied; returns the rows stored.
    pub async fn finish(mut self) -> Result<u64> {
        if !self.ended && !self.pending.is_empty() {
            let record = strip_newline(&std::mem::take(&mut self.pending)).to_vec();
            if self.options.format == CopyFormat::Csv && record_end(&[record.as_slice(), b"\n"].concat(), &self.options).is_none() {
                return Err(self.error("22P04", "unterminated CSV quoted field".into()));
            }
            self.record(&record)?;
        }
        self.admit_batch().await?;
        Ok(self.stored)
    }

    fn record(&mut self, record: &[u8]) -> Result<()> {
        self.line += 1;
        if record == b"\\." {
            self.ended = true;
            return Ok(());
        }
        if std::mem::take(&mut self.header_pending) {
            return Ok(());
        }
        let fields = match self.options.format {
            CopyFormat::Text => text_fields(record, &self.options),
            CopyFormat::Csv => csv_fields(record, &self.options),
        }
        .map_err(|m| self.error("22P04", m))?;
        if fields.len() < self.targets.len() {
            let missing = &self.schema.columns[self.targets[fields.len()]].name;
            return Err(self.error("22P04", format!("missing data for column \"{missing}\"")));
        }
        if fields.len() > self.targets.len() {
            return Err(self.error("22P04", "extra data after last expected column".into()));
        }
        for (slot, value) in self.fields.iter_mut().zip(fields) {
            slot.push(value);
        }
        self.rows += 1;
        Ok(())
    }

    fn error(&self, code: &'static str, message: String) -> DataFusionError {
        let stored = match self.stored {
            0 => String::new(),
            n => format!("; {n} rows before it were stored"),
        };
        SqlError::new(code, format!("{message} (COPY {}, line {}{stored})", self.table, self.line)).into()
    }

    /// Casts the parsed records to the table's types and admits them; waits until durable.
    async fn admit_batch(&mut self) -> Result<()> {
        if self.rows == 0 {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.rows);
        let first_line = self.line + 1 - rows as u64;
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.columns.len());
        for (i, field) in self.arrow.fields().iter().enumerate() {
            let array = match self.targets.iter().position(|&t| t == i) {
                Some(slot) => {
                    let text = StringArray::from(std::mem::take(&mut self.fields[slot]));
                    cast_field(&text, field.data_type(), &self.schema.columns[i].name, &self.table, first_line)?
                }
                None => datafusion::arrow::array::new_null_array(field.data_type(), rows),
            };
            columns.push(array);
        }
        for (i, column) in columns.iter().enumerate() {
            if !self.schema.columns[i].nullable && column.null_count() > 0 {
                let row = (0..rows).find(|&r| column.is_null(r)).unwrap_or(0);
                let name = &self.schema.columns[i].name;
                return Err(SqlError::new(
                    "23502",
                    format!("null value in column \"{name}\" of relation \"{}\" violates not-null constraint (COPY, line {})", self.table, first_line + row as u64),
                )
                .into());
            }
        }
        let batch = RecordBatch::try_new_with_options(
            self.arrow.clone(),
            columns,
            &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(rows)),
        )?;
        let batch = storage_batch(&self.schema, &batch).map_err(|e| SqlError::new("22P02", format!("{} (COPY {})", e.find_root(), self.table)))?;
        self.stored += admit_durable(&self.db, &self.table, batch).await?;
        Ok(())
    }
}

/// Casts a column of text to `to`, naming the first value that does not convert.
fn cast_field(text: &StringArray, to: &DataType, column: &str, table: &str, first_line: u64) -> Result<ArrayRef> {
    if to == &DataType::Utf8 {
        return Ok(Arc::new(text.clone()));
    }
    let cast = cast_with_options(text, to, &CastOptions { safe: true, ..Default::default() })?;
    if cast.null_count() == text.null_count() {
        return Ok(cast);
    }
    let row = (0..text.len()).find(|&r| cast.is_null(r) && !text.is_null(r)).unwrap_or(0);
    let type_name = match to {
        DataType::Boolean => "boolean",
        DataType::Int64 => "bigint",
        DataType::Float64 => "double precision",
        DataType::Timestamp(..) => "timestamp with time zone",
        _ => "the column's type",
    };
    Err(SqlError::new(
        "22P02",
        format!("invalid input syntax for type {type_name}: \"{}\" (COPY {table}, line {}, column {column})", text.value(row), first_line + row as u64),
    )
    .into())
}

/// Where the first whole record in `bytes` ends (the index of its newline), if it does.
/// In CSV a newline inside a quoted field does not end the record.
fn record_end(bytes: &[u8], o: &CopyOptions) -> Option<usize> {
    if o.format == CopyFormat::Text {
        return memchr_newline(bytes);
    }
    let mut quoted = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if quoted && b == o.escape && o.escape != o.quote && bytes.get(i + 1).is_some_and(|&n| n == o.quote || n == o.escape) {
            i += 2;
            continue;
        }
        if b == o.quote {
            quoted = !quoted; // a doubled quote toggles twice
        } else if b == b'\n' && !quoted {
            return Some(i);
        }
        i += 1;
    }
    None
}

fn memchr_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

fn strip_newline(record: &[u8]) -> &[u8] {
    let record = record.strip_suffix(b"\n").unwrap_or(record);
    record.strip_suffix(b"\r").unwrap_or(record)
}

fn utf8(bytes: Vec<u8>) -> Result<String, String> {
    String::from_utf8(bytes).map_err(|_| "invalid byte sequence for encoding \"UTF8\"".to_string())
}

/// The fields of a text-format record: split at the delimiter, `\N` (the NULL string) as
/// NULL, backslash escapes decoded.
fn text_fields(record: &[u8], o: &CopyOptions) -> Result<Vec<Option<String>>, String> {
    record
        .split(|&b| b == o.delimiter)
        .map(|raw| if raw == o.null.as_bytes() { Ok(None) } else { unescape_text(raw).map(Some) })
        .collect()
}

fn unescape_text(raw: &[u8]) -> Result<String, String> {
    if !raw.contains(&b'\\') {
        return utf8(raw.to_vec());
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] != b'\\' || i + 1 == raw.len() {
            out.push(raw[i]);
            i += 1;
            continue;
        }
        let c = raw[i + 1];
        i += 2;
        match c {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut v = u32::from(c - b'0');
                for _ in 0..2 {
                    match raw.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push((v & 0xff) as u8);
            }
            b'x' if raw.get(i).is_some_and(u8::is_ascii_hexdigit) => {
                let digits = raw[i..].iter().take(2).take_while(|d| d.is_ascii_hexdigit()).count();
                let hex = std::str::from_utf8(&raw[i..i + digits]).map_err(|e| e.to_string())?;
                out.push(u8::from_str_radix(hex, 16).map_err(|e| e.to_string())?);
                i += digits;
            }
            other => out.push(other),
        }
    }
    utf8(out)
}

/// The fields of a CSV record: quoted fields may hold delimiters, quotes (doubled, or after
/// the escape character) and newlines; an unquoted field equal to the NULL string is NULL.
fn csv_fields(record: &[u8], o: &CopyOptions) -> Result<Vec<Option<String>>, String> {
    let mut fields = Vec::new();
    let mut i = 0;
    loop {
        let mut value = Vec::new();
        let mut was_quoted = false;
        loop {
            match record.get(i) {
                None => break,
                Some(&b) if b == o.delimiter => break,
                Some(&b) if b == o.quote => {
                    was_quoted = true;
                    i += 1;
                    loop {
                        match record.get(i) {
                            None => return Err("unterminated CSV quoted field".into()),
                            Some(&e) if e == o.escape && record.get(i + 1).is_some_and(|&n| n == o.quote || (n == o.escape && e != o.quote)) => {
                                value.push(record[i + 1]);
                                i += 2;
                            }
                            Some(&q) if q == o.quote => {
                                i += 1;
                                break;
                            }
                            Some(&c) => {
                                value.push(c);
                                i += 1;
                            }
                        }
                    }
                }
                Some(&c) => {
                    value.push(c);
                    i += 1;
                }
            }
        }
        let is_null = !was_quoted && value == o.null.as_bytes();
        fields.push(if is_null { None } else { Some(utf8(value)?) });
        if i >= record.len() {
            return Ok(fields);
        }
        i += 1; // the delimiter
    }
}

/// The rows of `query` as COPY TO STDOUT sends them: one chunk per row (the header, when
/// asked for, is prepended to the first chunk). Returns the column count and the stream.
pub async fn copy_out(ctx: &SessionContext, query: &str, options: &CopyOptions) -> Result<(usize, BoxStream<'static, Result<Vec<u8>>>)> {
    let df = ctx.sql(query).await?;
    let names: Vec<String> = df.schema().fields().iter().map(|f| f.name().clone()).collect();
    let batches = df.execute_stream().await?;
    let options = options.clone();
    let mut header = options.header.then(|| {
        let mut line = Vec::new();
        for (i, n) in names.iter().enumerate() {
            if i > 0 {
                line.push(options.delimiter);
            }
            write_field(&mut line, Some(n), &options);
        }
        line.push(b'\n');
        line
    });
    let columns = names.len();
    let rows = batches.flat_map(move |batch| {
        let lines = match batch.and_then(|b| format_rows(&b, &options)) {
            Ok(lines) => lines.into_iter().map(Ok).collect::<Vec<_>>(),
            Err(e) => vec![Err(e)],
        };
        futures::stream::iter(lines)
    });
    let stream = rows.map(move |line| match (header.take(), line) {
        (Some(mut h), Ok(line)) => {
            h.extend_from_slice(&line);
            Ok(h)
        }
        (_, line) => line,
    });
    Ok((columns, stream.boxed()))
}

/// Formats every row of `batch` as one line.
fn format_rows(batch: &RecordBatch, o: &CopyOptions) -> Result<Vec<Vec<u8>>> {
    let format = FormatOptions::default().with_null("");
    let formatters = batch
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &format))
        .collect::<Result<Vec<_>, _>>()?;
    let mut lines = Vec::with_capacity(batch.num_rows());
    let mut cell = String::new();
    for row in 0..batch.num_rows() {
        let mut line = Vec::new();
        for (i, column) in batch.columns().iter().enumerate() {
            if i > 0 {
                line.push(o.delimiter);
            }
            if column.is_null(row) {
                write_field(&mut line, None, o);
                continue;
            }
            cell.clear();
            format_value(column.as_ref(), row, &formatters[i], &mut cell)?;
            write_field(&mut line, Some(&cell), o);
        }
        line.push(b'\n');
        lines.push(line);
    }
    Ok(lines)
}

/// One value as PostgreSQL's text output writes it: booleans `t`/`f`, timestamps
/// `2026-01-02 03:04:05.678+00`; other types as Arrow displays them.
fn format_value(array: &dyn Array, row: usize, formatter: &ArrayFormatter<'_>, out: &mut String) -> Result<()> {
    use std::fmt::Write;
    match array.data_type() {
        DataType::Boolean => out.push(if array.as_boolean().value(row) { 't' } else { 'f' }),
        DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => {
            let micros = array.as_primitive::<datafusion::arrow::datatypes::TimestampMicrosecondType>().value(row);
            out.push_str(&crate::arrow::format_timestamp_pg(micros));
        }
        _ => write!(out, "{}", formatter.value(row)).map_err(|e| DataFusionError::Execution(e.to_string()))?,
    }
    Ok(())
}

fn write_field(line: &mut Vec<u8>, value: Option<&str>, o: &CopyOptions) {
    let Some(value) = value else {
        line.extend_from_slice(o.null.as_bytes());
        return;
    };
    match o.format {
        CopyFormat::Text => {
            for &b in value.as_bytes() {
                match b {
                    b'\\' => line.extend_from_slice(b"\\\\"),
                    b'\n' => line.extend_from_slice(b"\\n"),
                    b'\r' => line.extend_from_slice(b"\\r"),
                    b'\t' if o.delimiter == b'\t' => line.extend_from_slice(b"\\t"),
                    b if b == o.delimiter => {
                        line.push(b'\\');
                        line.push(b);
                    }
                    b => line.push(b),
                }
            }
        }
        CopyFormat::Csv => {
            let bytes = value.as_bytes();
            let needs_quotes = bytes.is_empty() && o.null.is_empty()
                || value == o.null
                || bytes.iter().any(|&b| b == o.delimiter || b == o.quote || b == b'\n' || b == b'\r' || b == o.escape);
            if !needs_quotes {
                line.extend_from_slice(bytes);
                return;
            }
            line.push(o.quote);
            for &b in bytes {
                if b == o.quote || b == o.escape {
                    line.push(o.escape);
                }
                line.push(b);
            }
            line.push(o.quote);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv() -> CopyOptions {
        CopyOptions::defaults(CopyFormat::Csv)
    }

    fn text() -> CopyOptions {
        CopyOptions::defaults(CopyFormat::Text)
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    #[test]
    fn csv_fields_follow_postgres_rules() {
        assert_eq!(csv_fields(b"a,,\"\",\"x,y\"", &csv()).unwrap(), vec![s("a"), None, s(""), s("x,y")]);
        assert_eq!(csv_fields(b"\"say \"\"hi\"\"\",2", &csv()).unwrap(), vec![s("say \"hi\""), s("2")]);
        assert_eq!(csv_fields(b"\"multi\nline\"", &csv()).unwrap(), vec![s("multi\nline")]);
        assert_eq!(csv_fields(b"", &csv()).unwrap(), vec![None]);
        assert!(csv_fields(b"\"open", &csv()).is_err());
        let escaped = CopyOptions { escape: b'\\', ..csv() };
        assert_eq!(csv_fields(b"\"a\\\"b\"", &escaped).unwrap(), vec![s("a\"b")]);
    }

    #[test]
    fn csv_records_end_only_outside_quotes() {
        assert_eq!(record_end(b"a,\"b\nc\"\nnext", &csv()), Some(7));
        assert_eq!(record_end(b"a,\"b\nc", &csv()), None);
        assert_eq!(record_end(b"\"\"\"\"\n", &csv()), Some(4));
    }

    #[test]
    fn text_fields_decode_escapes_and_nulls() {
        assert_eq!(text_fields(b"a\t\\N\tb\\tc\\\\d\\n\t\\101\\x41", &text()).unwrap(), vec![s("a"), None, s("b\tc\\d\n"), s("AA")]);
        assert_eq!(text_fields(b"", &text()).unwrap(), vec![s("")]);
    }

    #[test]
    fn written_fields_read_back() {
        for o in [csv(), text()] {
            let values = [None, s(""), s("plain"), s("with,comma"), s("tab\there"), s("quote\"d"), s("new\nline"), s("back\\slash"), s("\\N")];
            let mut line = Vec::new();
            for (i, v) in values.iter().enumerate() {
                if i > 0 {
                    line.push(o.delimiter);
                }
                write_field(&mut line, v.as_deref(), &o);
            }
            let end = record_end(&[line.as_slice(), b"\n"].concat(), &o).unwrap();
            assert_eq!(end, line.len(), "{:?}: one record", o.format);
            let parsed = match o.format {
                CopyFormat::Csv => csv_fields(&line, &o).unwrap(),
                CopyFormat::Text => text_fields(&line, &o).unwrap(),
            };
            assert_eq!(parsed, values.to_vec(), "{:?}", o.format);
        }
    }
}
