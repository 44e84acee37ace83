//! Text export of generated batches: CSV (RFC 4180) or TSV (PostgreSQL/ClickHouse text format),
//! with a header line, columns in schema order.
//!
//! NULL conventions, chosen so PostgreSQL `COPY ... (FORMAT csv, HEADER)` and ClickHouse
//! `FORMAT CSVWithNames` both load the file unchanged:
//! - CSV: NULL is an empty *unquoted* field; an empty string is written `""`. Fields containing
//!   `,`, `"`, CR or LF are quoted with `"` doubled. (ClickHouse reads the empty unquoted field
//!   of a `Nullable` column as NULL with its default `input_format_csv_empty_as_default=1`.)
//! - TSV: NULL is `\N`; backslash, tab, CR and LF are escaped as `\\`, `\t`, `\r`, `\n`.
//!
//! Timestamps: [`TsFormat::Iso`] writes `2026-11-01 00:00:00.123456+00` (PostgreSQL
//! `timestamptz` input; ClickHouse needs `date_time_input_format='best_effort'`);
//! [`TsFormat::Micros`] writes the integer microseconds since the Unix epoch.
//! UUIDs are canonical lower-case text; float64 uses Rust's shortest round-trip form.

use lookback_common::{Batch, Column, ColumnValues, Schema};
use std::io::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delimited {
    Csv,
    Tsv,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TsFormat {
    Iso,
    Micros,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportFormat {
    pub delimited: Delimited,
    pub ts: TsFormat,
}

impl ExportFormat {
    fn separator(&self) -> u8 {
        match self.delimited {
            Delimited::Csv => b',',
            Delimited::Tsv => b'\t',
        }
    }
}

/// Appends the header line (column names) to `out`.
pub fn write_header(schema: &Schema, format: ExportFormat, out: &mut Vec<u8>) {
    for (i, c) in schema.columns.iter().enumerate() {
        if i > 0 {
            out.push(format.separator());
        }
        write_text(&c.name, format.delimited, out);
    }
    out.push(b'\n');
}

/// Appends every row of `batch` to `out`, one line per row.
pub fn write_batch(batch: &Batch, format: ExportFormat, out: &mut Vec<u8>) {
    for row in 0..batch.rows() {
        for (i, col) in batch.columns().iter().enumerate() {
            if i > 0 {
                out.push(format.separator());
            }
            write_cell(col, row, format, out);
        }
        out.push(b'\n');
    }
}

fn write_cell(col: &Column, row: usize, format: ExportFormat, out: &mut Vec<u8>) {
    if col.is_null(row) {
        if format.delimited == Delimited::Tsv {
            out.extend_from_slice(b"\\N");
        }
        return;
    }
    // Writing to a Vec<u8> cannot fail.
    let _ = match &col.values {
        ColumnValues::Bool(v) => write!(out, "{}", v[row]),
        ColumnValues::Int64(v) => write!(out, "{}", v[row]),
        ColumnValues::Float64(v) => write!(out, "{}", v[row]),
        ColumnValues::Timestamp(v) => match format.ts {
            TsFormat::Iso => write_iso_timestamp(v[row], out),
            TsFormat::Micros => write!(out, "{}", v[row]),
        },
        ColumnValues::Uuid(v) => {
            write_uuid(&v[row], out);
            Ok(())
        }
        ColumnValues::Text(v) => {
            write_text(v.get(row), format.delimited, out);
            Ok(())
        }
    };
}

fn write_text(s: &str, delimited: Delimited, out: &mut Vec<u8>) {
    match delimited {
        Delimited::Csv => {
            let needs_quotes =
                s.is_empty() || s.bytes().any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r'));
            if !needs_quotes {
                out.extend_from_slice(s.as_bytes());
                return;
            }
            out.push(b'"');
            for b in s.bytes() {
                if b == b'"' {
                    out.push(b'"');
                }
                out.push(b);
            }
            out.push(b'"');
        }
        Delimited::Tsv => {
            for b in s.bytes() {
                match b {
                    b'\\' => out.extend_from_slice(b"\\\\"),
                    b'\t' => out.extend_from_slice(b"\\t"),
                    b'\n' => out.extend_from_slice(b"\\n"),
                    b'\r' => out.extend_from_slice(b"\\r"),
                    _ => out.push(b),
                }
            }
        }
    }
}

/// Canonical lower-case hyphenated UUID, without allocating.
fn write_uuid(u: &[u8; 16], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in u.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push(b'-');
        }
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 0x0f)]);
    }
}

/// `YYYY-MM-DD HH:MM:SS.ffffff+00` for µs since the Unix epoch (proleptic Gregorian, UTC).
pub fn write_iso_timestamp(micros: i64, out: &mut Vec<u8>) -> std::io::Result<()> {
    let (y, m, d, hh, mm, ss, frac) = lookback_common::time::utc_parts(micros);
    write!(out, "{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02}.{frac:06}+00")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests panic with the error
mod tests {
    use super::*;

    fn iso(micros: i64) -> String {
        let mut out = Vec::new();
        write_iso_timestamp(micros, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn iso_timestamps() {
        assert_eq!(iso(0), "1970-01-01 00:00:00.000000+00");
        assert_eq!(iso(1_793_491_200_123_456), "2026-11-01 00:00:00.123456+00");
        assert_eq!(
            iso(951_782_400_000_000 - 1),
            "2000-02-28 23:59:59.999999+00"
        );
        assert_eq!(iso(951_868_800_000_000), "2000-03-01 00:00:00.000000+00");
        assert_eq!(iso(-1), "1969-12-31 23:59:59.999999+00");
    }

    #[test]
    fn csv_quoting_and_tsv_escaping() {
        let mut out = Vec::new();
        write_text(r#"{"a":1,"b":2}"#, Delimited::Csv, &mut out);
        write_text("", Delimited::Csv, &mut out);
        write_text("plain", Delimited::Csv, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#""{""a"":1,""b"":2}"""plain"#
        );
        let mut out = Vec::new();
        write_text("a\tb\\c\nd", Delimited::Tsv, &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), "a\\tb\\\\c\\nd");
    }

    #[test]
    fn uuid_text_matches_common() {
        let u = [
            0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 1, 2, 3, 4, 5, 6, 7, 8,
        ];
        let mut out = Vec::new();
        write_uuid(&u, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            lookback_common::batch::format_uuid(&u)
        );
    }
}
