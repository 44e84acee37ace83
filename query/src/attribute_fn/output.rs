//! The output of the attribution functions as Arrow: the row schema of `attribute(...)` (only
//! the projected columns are built) and the channel schema of `attribute_channels(...)`.

use crate::arrow::arrow_schema;
use datafusion::arrow::array::{ArrayRef, Float64Builder, StringBuilder, StringViewBuilder, TimestampMicrosecondBuilder};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::Result;
use lookback_common::batch::format_uuid;
use lookback_common::{ColumnDef, ColumnType, Schema};
use std::sync::Arc;

/// Rows per output batch.
pub const BATCH_ROWS: usize = 8_192;

/// Positions of the columns whose source is optional to read.
pub const CHANNEL: usize = 8;
pub const CAMPAIGN: usize = 9;
pub const REVENUE: usize = 13;

/// `attribute(...)`'s columns, in order.
pub fn attribute_schema() -> SchemaRef {
    use ColumnType::*;
    let c = ColumnDef::new;
    let columns = vec![
        c("app_id", Text, false),
        c("conversion_id", Uuid, false),
        c("conversion_time", Timestamp, false),
        c("conversion_type", Text, false),
        c("device_id", Text, true),
        c("touch_id", Uuid, true),
        c("touch_time", Timestamp, true),
        c("touch_type", Text, true),
        c("channel", Text, true),
        c("campaign", Text, true),
        c("match_type", Text, false),
        c("confidence", Float64, true),
        c("credit", Float64, false),
        c("revenue", Float64, false),
    ];
    arrow_schema(&Schema::new("attribute", columns, Vec::new(), Vec::new()).expect("the attribute schema is valid"))
}

/// `attribute_channels(...)`'s columns.
pub fn channel_schema() -> SchemaRef {
    use ColumnType::*;
    let c = ColumnDef::new;
    let columns = vec![c("channel", Text, true), c("conversions", Float64, false), c("revenue", Float64, false)];
    arrow_schema(&Schema::new("attribute_channels", columns, Vec::new(), Vec::new()).expect("the channel schema is valid"))
}

/// One output row of `attribute(...)`.
pub struct Row<'a> {
    pub app: &'a [u8],
    pub conversion_id: [u8; 16],
    pub conversion_time: i64,
    pub conversion_type: &'a [u8],
    pub device: Option<&'a [u8]>,
    /// touch_id, touch_time, touch_type.
    pub touch: Option<([u8; 16], i64, &'static str)>,
    pub channel: Option<&'a [u8]>,
    pub campaign: Option<&'a [u8]>,
    pub match_type: &'static str,
    pub confidence: Option<f64>,
    pub credit: f64,
    pub revenue: f64,
}

enum Builder {
    Text(StringViewBuilder),
    Uuid(StringBuilder),
    Time(TimestampMicrosecondBuilder),
    Float(Float64Builder),
}

/// Builds batches of the projected columns of `attribute(...)`.
pub struct OutputBuilder {
    schema: SchemaRef,
    /// (output column, builder) in projection order.
    builders: Vec<(usize, Builder)>,
    rows: usize,
}

impl OutputBuilder {
    pub fn new(projection: &[usize]) -> Result<OutputBuilder> {
        let full = attribute_schema();
        let schema = Arc::new(full.project(projection)?);
        let builders = projection
            .iter()
            .map(|&c| {
                let builder = match c {
                    1 | 5 => Builder::Uuid(StringBuilder::new()),
                    2 | 6 => Builder::Time(TimestampMicrosecondBuilder::new().with_timezone(crate::arrow::TIMESTAMP_TZ)),
                    11..=13 => Builder::Float(Float64Builder::new()),
                    _ => Builder::Text(StringViewBuilder::new()),
                };
                (c, builder)
            })
            .collect();
        Ok(OutputBuilder { schema, builders, rows: 0 })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn push(&mut self, row: &Row<'_>) {
        self.rows += 1;
        for (column, builder) in &mut self.builders {
            match (builder, *column) {
                (Builder::Text(b), c) => {
                    let value: Option<&[u8]> = match c {
                        0 => Some(row.app),
                        3 => Some(row.conversion_type),
                        4 => row.device,
                        7 => row.touch.map(|t| t.2.as_bytes()),
                        8 => row.channel,
                        9 => row.campaign,
                        _ => Some(row.match_type.as_bytes()),
                    };
                    // Storage holds UTF-8 text only (checked on admission and on read).
                    b.append_option(value.map(|v| std::str::from_utf8(v).unwrap_or_default()));
                }
                (Builder::Uuid(b), 1) => b.append_value(format_uuid(&row.conversion_id)),
                (Builder::Uuid(b), _) => b.append_option(row.touch.map(|t| format_uuid(&t.0))),
                (Builder::Time(b), 2) => b.append_value(row.conversion_time),
                (Builder::Time(b), _) => b.append_option(row.touch.map(|t| t.1)),
                (Builder::Float(b), 11) => b.append_option(row.confidence),
                (Builder::Float(b), 12) => b.append_value(row.credit),
                (Builder::Float(b), _) => b.append_value(row.revenue),
            }
        }
    }

    /// The rows pushed since the last call, as one batch.
    pub fn finish(&mut self) -> Result<RecordBatch> {
        let columns: Vec<ArrayRef> = self
            .builders
            .iter_mut()
            .map(|(_, b)| -> ArrayRef {
                match b {
                    Builder::Text(b) => Arc::new(b.finish()),
                    Builder::Uuid(b) => Arc::new(b.finish()),
                    Builder::Time(b) => Arc::new(b.finish()),
                    Builder::Float(b) => Arc::new(b.finish()),
                }
            })
            .collect();
        let options = datafusion::arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(self.rows));
        self.rows = 0;
        Ok(RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)?)
    }
}

/// One row of `attribute_channels(...)`.
pub struct ChannelRow {
    pub channel: Option<Vec<u8>>,
    pub conversions: f64,
    pub revenue: f64,
}

/// The channel rows as one batch (projected later by DataFusion).
pub fn channel_batch(rows: &[ChannelRow]) -> Result<RecordBatch> {
    let mut channel = StringViewBuilder::new();
    let (mut conversions, mut revenue) = (Float64Builder::new(), Float64Builder::new());
    for row in rows {
        channel.append_option(row.channel.as_deref().map(|v| std::str::from_utf8(v).unwrap_or_default()));
        conversions.append_value(row.conversions);
        revenue.append_value(row.revenue);
    }
    let columns: Vec<ArrayRef> = vec![Arc::new(channel.finish()), Arc::new(conversions.finish()), Arc::new(revenue.finish())];
    Ok(RecordBatch::try_new(channel_schema(), columns)?)
}
