//! `INSERT` into a Lookback table: rows DataFusion produced, admitted like ingested events.
//!
//! Why through `Db::admit`: a row written by SQL must be exactly as durable and deduplicated
//! as an event from the ingest protocol (one write path, one WAL, the same `(app_id,
//! event_id)` window), so the sink converts each Arrow batch to a storage batch, admits it as
//! an anonymous producer and waits for its fdatasync before the statement completes. The count
//! returned is the rows stored (duplicates of events already seen are dropped, not counted).

use crate::arrow::TIMESTAMP_TZ;
use crate::error::storage_error;
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type, SchemaRef, TimeUnit, TimestampMicrosecondType};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::sink::DataSink;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType};
use futures::StreamExt;
use lookback_common::batch::parse_uuid;
use lookback_common::{Batch, BatchBuilder, ColumnType, Schema, Value};
use lookback_storage::Db;
use std::fmt;
use std::sync::Arc;

/// Writes an INSERT's rows into one table of a [`Db`].
pub struct LookbackSink {
    pub(crate) db: Arc<Db>,
    pub(crate) table: String,
    pub(crate) schema: Arc<Schema>,
    pub(crate) arrow: SchemaRef,
}

impl fmt::Debug for LookbackSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LookbackSink({})", self.table)
    }
}

impl DisplayAs for LookbackSink {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LookbackSink: table={}", self.table)
    }
}

#[async_trait::async_trait]
impl DataSink for LookbackSink {
    fn schema(&self) -> &SchemaRef {
        &self.arrow
    }

    async fn write_all(&self, mut data: SendableRecordBatchStream, _context: &Arc<TaskContext>) -> Result<u64> {
        let mut stored = 0u64;
        while let Some(batch) = data.next().await {
            let batch = storage_batch(&self.schema, &batch?)?;
            if batch.rows() == 0 {
                continue;
            }
            stored += self.admit(batch).await?;
        }
        Ok(stored)
    }
}

impl LookbackSink {
    async fn admit(&self, batch: Batch) -> Result<u64> {
        admit_durable(&self.db, &self.table, batch).await
    }
}

/// Admits one batch as the anonymous producer (SQL writes have no producer sequence) and waits
/// until it is durable; returns the rows stored (after deduplication).
pub async fn admit_durable(db: &Db, table: &str, batch: Batch) -> Result<u64> {
    let (tx, rx) = futures::channel::oneshot::channel();
    let outcome = db
        .admit(table, 0, 0, batch, Box::new(move |r| drop(tx.send(r))))
        .map_err(|e| DataFusionError::from(storage_error(e)))?;
    match rx.await {
        Ok(Ok(_)) => Ok(u64::from(outcome.accepted)),
        Ok(Err(e)) => Err(storage_error(e).into()),
        Err(_) => Err(DataFusionError::Execution("the write path shut down before the rows were durable".into())),
    }
}

/// An Arrow batch in the table's column order (as DataFusion plans an INSERT: every column,
/// cast to the table's types) as a storage batch. Uuids arrive as text and are parsed here.
pub fn storage_batch(schema: &Schema, batch: &RecordBatch) -> Result<Batch> {
    if batch.num_columns() != schema.len() {
        return Err(DataFusionError::Internal(format!(
            "insert produced {} columns for a table of {}",
            batch.num_columns(),
            schema.len()
        )));
    }
    let mut builder = BatchBuilder::new(schema, batch.num_rows());
    for (i, def) in schema.columns.iter().enumerate() {
        let array = batch.column(i);
        for row in 0..batch.num_rows() {
            let value = value_at(array.as_ref(), row, def.ty).map_err(|reason| {
                DataFusionError::Execution(format!("column {}: {reason}", def.name))
            })?;
            builder.push(i, &value).map_err(DataFusionError::Execution)?;
        }
    }
    builder.finish().map_err(DataFusionError::Execution)
}

fn value_at(array: &dyn Array, row: usize, ty: ColumnType) -> Result<Value, String> {
    if array.is_null(row) {
        return Ok(Value::Null);
    }
    let unexpected = || format!("got {} where {} was planned", array.data_type(), ty.name());
    Ok(match (ty, array.data_type()) {
        (ColumnType::Bool, DataType::Boolean) => Value::Bool(array.as_boolean().value(row)),
        (ColumnType::Int64, DataType::Int64) => Value::Int64(array.as_primitive::<Int64Type>().value(row)),
        (ColumnType::Float64, DataType::Float64) => Value::Float64(array.as_primitive::<Float64Type>().value(row)),
        (ColumnType::Timestamp, DataType::Timestamp(TimeUnit::Microsecond, tz))
            if tz.as_deref().is_none_or(|tz| tz == TIMESTAMP_TZ || tz == "+00:00") =>
        {
            Value::Timestamp(array.as_primitive::<TimestampMicrosecondType>().value(row))
        }
        (ColumnType::Text, DataType::Utf8View) => Value::Text(array.as_string_view().value(row).to_string()),
        (ColumnType::Text, DataType::Utf8) => Value::Text(array.as_string::<i32>().value(row).to_string()),
        (ColumnType::Uuid, DataType::Utf8) => {
            let text = array.as_string::<i32>().value(row);
            Value::Uuid(parse_uuid(text).ok_or_else(|| format!("invalid input syntax for type uuid: \"{text}\""))?)
        }
        _ => return Err(unexpected()),
    })
}
