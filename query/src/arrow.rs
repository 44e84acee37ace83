//! Lookback's columns as Arrow arrays, for DataFusion.
//!
//! Why a conversion and not Arrow storage: segments and memtables keep columns in the forms
//! that make ingest and compression cheap (dictionary codes, bool vectors); queries need Arrow.
//! Converting at the scan boundary, one block at a time and only for the projected columns,
//! keeps both sides simple. Types (docs/format.md has the storage side):
//!
//! | Lookback  | Arrow                                  | Postgres (pgwire) |
//! |-----------|----------------------------------------|-------------------|
//! | bool      | Boolean                                | bool              |
//! | int64     | Int64                                  | int8              |
//! | float64   | Float64                                | float8            |
//! | timestamp | Timestamp(Microsecond, "UTC")          | timestamptz       |
//! | text      | Utf8View (views over dictionary bytes) | text              |
//! | uuid      | Utf8, canonical text, field metadata `lookback.type = uuid` | text (for now) |
//!
//! Text is `Utf8View` because segments keep text as codes into a per-segment dictionary: a
//! block's views are a gather of 16-byte views over the dictionary's shared bytes (no string
//! copied), and strings of at most 12 bytes (channels, event types, countries) live inside the
//! view itself, so grouping and hashing on them never touch string bytes.
//!
//! Uuids travel as canonical text (`8-4-4-4-12` lowercase hex) because the Postgres front end
//! encodes no fixed-size binary type; the metadata marks them for a uuid type OID later.

use datafusion::arrow::array::builder::make_view;
use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray, StringViewArray,
    TimestampMicrosecondArray, MAX_INLINE_VIEW_LEN,
};
use datafusion::arrow::buffer::{BooleanBuffer, Buffer, NullBuffer, ScalarBuffer};
use datafusion::arrow::datatypes::{DataType, Field, Schema as ArrowSchema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::error::DataFusionError;
use lookback_common::batch::format_uuid;
use lookback_common::{Column, ColumnDef, ColumnType, ColumnValues, Schema, TextValues};
use lookback_storage::segment::{BlockColumn, TextDictionary};
use std::collections::HashMap;
use std::sync::Arc;

/// Time zone of every timestamp column: Lookback stores UTC microseconds.
pub const TIMESTAMP_TZ: &str = "UTC";
/// Field metadata key naming a column's Lookback type where Arrow's type does not say it.
pub const LOOKBACK_TYPE_KEY: &str = "lookback.type";

/// A UTC timestamp in microseconds as PostgreSQL writes a `timestamptz` in text (session time
/// zone UTC): `2026-01-02 03:04:05.678+00`, the fraction without trailing zeros.
pub fn format_timestamp_pg(micros: i64) -> String {
    let (y, m, d, hh, mm, ss, frac) = lookback_common::time::utc_parts(micros);
    let mut out = format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02}");
    if frac != 0 {
        let digits = format!("{frac:06}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
    out.push_str("+00");
    out
}

pub fn arrow_type(ty: ColumnType) -> DataType {
    match ty {
        ColumnType::Bool => DataType::Boolean,
        ColumnType::Int64 => DataType::Int64,
        ColumnType::Float64 => DataType::Float64,
        ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some(TIMESTAMP_TZ.into())),
        ColumnType::Text => DataType::Utf8View,
        ColumnType::Uuid => DataType::Utf8,
    }
}

pub fn arrow_field(def: &ColumnDef) -> Field {
    let field = Field::new(&def.name, arrow_type(def.ty), def.nullable);
    match def.ty {
        ColumnType::Uuid => field.with_metadata(HashMap::from([(LOOKBACK_TYPE_KEY.into(), "uuid".into())])),
        _ => field,
    }
}

pub fn arrow_schema(schema: &Schema) -> SchemaRef {
    Arc::new(ArrowSchema::new(schema.columns.iter().map(arrow_field).collect::<Vec<_>>()))
}

/// One column as an Arrow array of its declared type.
pub fn column_array(column: &Column) -> Result<ArrayRef, DataFusionError> {
    let nulls = column.validity.as_ref().map(|v| NullBuffer::from(v.as_slice()));
    let array: ArrayRef = match &column.values {
        ColumnValues::Bool(v) => Arc::new(BooleanArray::new(BooleanBuffer::from(v.as_slice()), nulls)),
        ColumnValues::Int64(v) => Arc::new(Int64Array::new(ScalarBuffer::from(v.clone()), nulls)),
        ColumnValues::Float64(v) => Arc::new(Float64Array::new(ScalarBuffer::from(v.clone()), nulls)),
        ColumnValues::Timestamp(v) => Arc::new(
            TimestampMicrosecondArray::new(ScalarBuffer::from(v.clone()), nulls).with_timezone(TIMESTAMP_TZ),
        ),
        ColumnValues::Text(t) => Arc::new(string_array(t, nulls)?),
        ColumnValues::Uuid(v) => {
            let text = v.iter().map(|u| Some(format_uuid(u)));
            let array = StringArray::from_iter(text);
            Arc::new(StringArray::try_new(array.offsets().clone(), array.values().clone(), nulls)?)
        }
    };
    Ok(array)
}

/// [`column_array`] for a column the caller gives up: fixed-width values move into the array
/// without a copy.
pub fn column_into_array(column: Column) -> Result<ArrayRef, DataFusionError> {
    let nulls = || column.validity.as_ref().map(|v| NullBuffer::from(v.as_slice()));
    let array: ArrayRef = match column.values {
        ColumnValues::Int64(v) => Arc::new(Int64Array::new(ScalarBuffer::from(v), nulls())),
        ColumnValues::Float64(v) => Arc::new(Float64Array::new(ScalarBuffer::from(v), nulls())),
        ColumnValues::Timestamp(v) => Arc::new(TimestampMicrosecondArray::new(ScalarBuffer::from(v), nulls()).with_timezone(TIMESTAMP_TZ)),
        values => return column_array(&Column::new(values, column.validity)),
    };
    Ok(array)
}

/// A text column as a `StringViewArray`. Storage guarantees valid UTF-8 on character
/// boundaries (checked when the batch was decoded or the block read).
fn string_array(text: &TextValues, nulls: Option<NullBuffer>) -> Result<StringViewArray, DataFusionError> {
    let long = text.offsets.windows(2).any(|w| (w[1] - w[0]) as usize > MAX_INLINE_VIEW_LEN as usize);
    let entry_views = entry_views(&text.offsets, &text.data);
    let views: Vec<u128> = match &text.codes {
        None => entry_views,
        Some(codes) => codes.iter().map(|&c| entry_views[c as usize]).collect(),
    };
    let buffer = long.then(|| Buffer::from(text.data.as_slice()));
    view_array(views, buffer, nulls)
}

/// One view per entry `data[offsets[i]..offsets[i + 1]]`, pointing into buffer 0.
fn entry_views(offsets: &[u32], data: &[u8]) -> Vec<u128> {
    offsets.windows(2).map(|w| make_view(&data[w[0] as usize..w[1] as usize], 0, w[0])).collect()
}

/// Dictionaries with at most this many entries get their entry views built once per scan and
/// gathered per row; bigger ones (device ids) get a view made per row, which costs no more
/// than a block's worth of work.
pub const ENTRY_VIEWS_CACHED_MAX: usize = 65_536;

/// One view per entry of `dictionary`, into buffer 0 = the dictionary's bytes.
pub fn dictionary_views(dictionary: &TextDictionary) -> Vec<u128> {
    entry_views(dictionary.offsets(), dictionary.data())
}

/// A text column kept as codes into a segment dictionary, as views over the dictionary's
/// shared bytes (no copy; no buffer at all when every entry fits in a view). `validity` is one
/// bit per row, LSB first (as stored, and as Arrow lays it out). `views`, when given, are
/// [`dictionary_views`] of `dictionary`.
pub fn coded_array(
    codes: &[u32],
    validity: Option<&[u8]>,
    dictionary: &TextDictionary,
    views: Option<&[u128]>,
) -> Result<ArrayRef, DataFusionError> {
    let views: Vec<u128> = match views {
        Some(views) => {
            assert_eq!(views.len(), dictionary.len(), "entry views of this dictionary");
            codes.iter().map(|&c| views[c as usize]).collect()
        }
        None => {
            let offsets = dictionary.offsets();
            let data = dictionary.data();
            codes
                .iter()
                .map(|&c| {
                    let (start, end) = (offsets[c as usize], offsets[c as usize + 1]);
                    make_view(&data[start as usize..end as usize], 0, start)
                })
                .collect()
        }
    };
    let long = dictionary.entry_bytes_max() > MAX_INLINE_VIEW_LEN as usize;
    let buffer = long.then(|| Buffer::from(dictionary.data().clone()));
    let nulls = validity.map(|bits| NullBuffer::new(BooleanBuffer::new(Buffer::from(bits), 0, codes.len())));
    Ok(Arc::new(view_array(views, buffer, nulls)?))
}

fn view_array(views: Vec<u128>, buffer: Option<Buffer>, nulls: Option<NullBuffer>) -> Result<StringViewArray, DataFusionError> {
    if let Some(n) = &nulls {
        assert_eq!(n.len(), views.len(), "validity and views of one column");
    }
    let buffers: Vec<Buffer> = buffer.into_iter().collect();
    if cfg!(debug_assertions) {
        return Ok(StringViewArray::try_new(ScalarBuffer::from(views), buffers, nulls)?);
    }
    // SAFETY: every view was made by `make_view` from a whole entry of `buffers[0]` (offsets
    // from storage, checked in bounds when decoded; codes checked below the entry count), and
    // every entry is UTF-8 on character boundaries; a view needs a buffer only when its entry
    // is longer than MAX_INLINE_VIEW_LEN, and then `buffer` is present. Debug builds check all
    // of this with `try_new` above.
    Ok(unsafe { StringViewArray::new_unchecked(ScalarBuffer::from(views), buffers, nulls) })
}

/// A block read with [`lookback_storage::segment::Segment::read_block_coded`] as a record batch
/// of `schema` (already projected) with `rows` rows.
/// `views(i, dictionary)` may give the cached [`dictionary_views`] of column `i`'s dictionary.
/// Decoded values move into the arrays (each `Values` column is left empty); codes stay in
/// `columns`, for callers that group on them.
pub fn block_record_batch<'v>(
    schema: &SchemaRef,
    columns: &mut [BlockColumn<'_>],
    rows: usize,
    views: impl Fn(usize, &TextDictionary) -> Option<&'v [u128]>,
) -> Result<RecordBatch, DataFusionError> {
    let arrays = columns
        .iter_mut()
        .enumerate()
        .map(|(i, c)| match c {
            BlockColumn::Values(column) => column_into_array(std::mem::replace(column, Column::new(ColumnValues::Bool(Vec::new()), None))),
            BlockColumn::Codes { codes, validity, dictionary } => coded_array(codes, validity.as_deref(), dictionary, views(i, dictionary)),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let options = RecordBatchOptions::new().with_row_count(Some(rows));
    Ok(RecordBatch::try_new_with_options(schema.clone(), arrays, &options)?)
}

/// `columns` (already projected) as a record batch of `schema` with `rows` rows.
pub fn record_batch<'a>(
    schema: &SchemaRef,
    columns: impl IntoIterator<Item = &'a Column>,
    rows: usize,
) -> Result<RecordBatch, DataFusionError> {
    let arrays = columns.into_iter().map(column_array).collect::<Result<Vec<_>, _>>()?;
    let options = RecordBatchOptions::new().with_row_count(Some(rows));
    Ok(RecordBatch::try_new_with_options(schema.clone(), arrays, &options)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Array;
    use lookback_common::{BatchBuilder, Value};

    #[test]
    fn timestamps_are_written_as_postgres_does() {
        assert_eq!(format_timestamp_pg(0), "1970-01-01 00:00:00+00");
        assert_eq!(format_timestamp_pg(1_767_323_045_678_000), "2026-01-02 03:04:05.678+00");
        assert_eq!(format_timestamp_pg(-1), "1969-12-31 23:59:59.999999+00");
        assert_eq!(format_timestamp_pg(951_782_400_000_000), "2000-02-29 00:00:00+00");
    }

    #[test]
    fn every_type_converts_with_nulls_and_dictionaries() {
        let schema = Schema::events();
        let mut builder = BatchBuilder::new(&schema, 4);
        for i in 0..4i64 {
            let row: Vec<Value> = schema
                .columns
                .iter()
                .map(|c| match (c.ty, c.nullable && i == 3) {
                    (_, true) => Value::Null,
                    (ColumnType::Uuid, _) => Value::Uuid([i as u8; 16]),
                    (ColumnType::Timestamp, _) => Value::Timestamp(1_700_000_000_000_000 + i),
                    (ColumnType::Float64, _) => Value::Float64(i as f64 * 1.5),
                    (ColumnType::Text, _) => Value::Text(format!("{}-{}", c.name, i % 2)),
                    (ColumnType::Int64, _) => Value::Int64(i),
                    (ColumnType::Bool, _) => Value::Bool(i % 2 == 0),
                })
                .collect();
            builder.push_row(&row).unwrap();
        }
        let batch = builder.finish().unwrap();
        let arrow = arrow_schema(&schema);
        let plain = record_batch(&arrow, batch.columns(), batch.rows()).unwrap();
        // The same batch with every text column as a dictionary converts to the same arrays.
        let dictionary_columns: Vec<Column> = batch
            .columns()
            .iter()
            .map(|c| match &c.values {
                ColumnValues::Text(t) => Column::new(ColumnValues::Text(t.to_dictionary(c.validity.as_deref()).unwrap_or_else(|| t.clone())), c.validity.clone()),
                _ => c.clone(),
            })
            .collect();
        let dictionary = record_batch(&arrow, &dictionary_columns, batch.rows()).unwrap();
        assert_eq!(plain, dictionary);
        let app = plain.column_by_name("app_id").unwrap().as_any().downcast_ref::<StringViewArray>().unwrap();
        assert_eq!(app.value(1), "app_id-1");
        let revenue = plain.column_by_name("revenue").unwrap();
        assert!(revenue.is_null(3) && !revenue.is_null(2));
        let ids = plain.column_by_name("event_id").unwrap().as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(ids.value(2), "02020202-0202-0202-0202-020202020202");
        let ts = plain.column_by_name("ts").unwrap().as_any().downcast_ref::<TimestampMicrosecondArray>().unwrap();
        assert_eq!(ts.value(1), 1_700_000_000_000_001);
        assert_eq!(ts.timezone(), Some(TIMESTAMP_TZ));
    }
}
