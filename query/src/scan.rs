//! A Lookback table as a DataFusion `TableProvider`.
//!
//! A scan reads one snapshot of the table (`Db::snapshot`): the memtable batches visible at the
//! durable LSN and the live segments, so a query sees exactly the acknowledged events, each
//! once, even while flushes and compactions swap segments underneath (a snapshot holds its
//! segments' maps open). The work is cut into units (one memtable batch, or one segment block),
//! dealt round-robin to [`SCAN_PARTITIONS_MAX`] partitions that DataFusion runs in parallel;
//! each unit decodes only the projected columns, and stops early once `limit` rows came out.
//! Blocks whose zone maps exclude the query's filters are never read ([`crate::prune`]);
//! equality on a bitmap-indexed column (`event_type`) is applied by the scan from the
//! segments' roaring bitmaps, skipping blocks it does not touch ([`crate::bitmap_filter`]).

use crate::arrow::{arrow_schema, block_record_batch, dictionary_views, record_batch, ENTRY_VIEWS_CACHED_MAX};
use lookback_storage::segment::{BlockColumn, TextDictionary};
use std::sync::OnceLock;
use crate::bitmap_filter::{block_mask, BitmapFilter};
use crate::error::storage_error;
use datafusion::arrow::compute::{and, filter_record_batch};
use roaring::RoaringBitmap;
use crate::insert::LookbackSink;
use crate::prune::{self, Bound};
use datafusion::datasource::sink::DataSinkExec;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::Session;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties};
use futures::StreamExt;
use lookback_common::Schema;
use lookback_storage::{Db, TableSnapshot};
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// Partitions a scan is split into at most (the engine targets small machines: two cores).
pub const SCAN_PARTITIONS_MAX: usize = 2;

/// One table of a [`Db`], read at a fresh snapshot by every scan.
pub struct LookbackTable {
    db: Arc<Db>,
    name: String,
    schema: Arc<Schema>,
    arrow: SchemaRef,
    stats: Arc<ScanStats>,
}

/// Segment blocks planned for reading and skipped by zone maps, over every scan of a table.
#[derive(Debug, Default)]
pub struct ScanStats {
    pub blocks_planned: AtomicU64,
    pub blocks_pruned: AtomicU64,
}

impl LookbackTable {
    pub fn new(db: Arc<Db>, name: &str, schema: Arc<Schema>) -> LookbackTable {
        let arrow = arrow_schema(&schema);
        LookbackTable { db, name: name.to_string(), schema, arrow, stats: Arc::default() }
    }

    pub fn stats(&self) -> &Arc<ScanStats> {
        &self.stats
    }
}

impl fmt::Debug for LookbackTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LookbackTable({})", self.name)
    }
}

#[async_trait::async_trait]
impl TableProvider for LookbackTable {
    fn schema(&self) -> SchemaRef {
        self.arrow.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    /// INSERT: the rows are admitted through the write path (see [`crate::insert`]).
    async fn insert_into(
        &self,
        _state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if insert_op != InsertOp::Append {
            return Err(DataFusionError::NotImplemented(format!("{insert_op} into {}: tables are append-only", self.name)));
        }
        let sink = LookbackSink { db: self.db.clone(), table: self.name.clone(), schema: self.schema.clone(), arrow: self.arrow.clone() };
        Ok(Arc::new(DataSinkExec::new(input, Arc::new(sink), None)))
    }

    /// Every filter is offered to the scan as inexact (DataFusion still applies it): the
    /// ones [`prune`] understands skip blocks, the rest prune nothing.
    /// Equality on a bitmap-indexed column is exact: the scan applies it ([`BitmapFilter`]).
    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| match BitmapFilter::of(f, &self.schema) {
                Some(_) => TableProviderFilterPushDown::Exact,
                None => TableProviderFilterPushDown::Inexact,
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let snapshot = self.db.snapshot(&self.name).map_err(|e| DataFusionError::from(storage_error(e)))?;
        let columns: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.schema.len()).collect(),
        };
        let projected = Arc::new(self.arrow.project(&columns)?);
        let bitmap_filters: Vec<BitmapFilter> = filters.iter().filter_map(|f| BitmapFilter::of(f, &self.schema)).collect();
        let selections = selections(&snapshot, &bitmap_filters)?;
        let (snapshot_segments, columns_len) = (snapshot.segments.len(), columns.len());
        let scan = Arc::new(Scan {
            snapshot,
            columns,
            schema: projected.clone(),
            limit,
            emitted: AtomicUsize::new(0),
            bitmap_filters,
            selections,
            entry_views: (0..snapshot_segments).map(|_| (0..columns_len).map(|_| OnceLock::new()).collect()).collect(),
        });
        let units = scan.units(&prune::bounds(filters, &self.schema), &self.stats);
        Ok(Arc::new(LookbackScanExec::new(self.name.clone(), scan, units)))
    }
}

/// Per segment, the rows every bitmap filter passes (`None`: no bitmap filter).
fn selections(snapshot: &TableSnapshot, filters: &[BitmapFilter]) -> Result<Vec<Option<RoaringBitmap>>> {
    snapshot
        .segments
        .iter()
        .map(|segment| {
            let mut selection: Option<RoaringBitmap> = None;
            for filter in filters {
                let rows = filter.segment_rows(segment)?;
                selection = Some(match selection {
                    Some(s) => s & rows,
                    None => rows,
                });
            }
            Ok(selection)
        })
        .collect()
}

/// What every partition of one scan shares.
pub(crate) struct Scan {
    snapshot: TableSnapshot,
    /// Schema columns to read, in output order.
    columns: Vec<usize>,
    schema: SchemaRef,
    limit: Option<usize>,
    /// Rows produced so far by all partitions (for `limit`).
    emitted: AtomicUsize,
    /// Filters the scan applies itself (exact pushdown).
    bitmap_filters: Vec<BitmapFilter>,
    /// Per segment, the rows those filters pass.
    selections: Vec<Option<RoaringBitmap>>,
    /// Per segment and output column, the Arrow views of the column's segment dictionary
    /// entries (built on first use when small enough; see [`ENTRY_VIEWS_CACHED_MAX`]).
    entry_views: Vec<Vec<OnceLock<Vec<u128>>>>,
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Unit {
    Memtable(usize),
    Block { segment: usize, block: usize },
}

impl Scan {
    /// The blocks whose zone maps allow a match for `bounds`, then the memtable batches (which
    /// have no zone maps).
    fn units(&self, bounds: &[Bound], stats: &ScanStats) -> Vec<Unit> {
        let mut units = Vec::new();
        let mut pruned = 0u64;
        for (s, segment) in self.snapshot.segments.iter().enumerate() {
            let selection = self.selections[s].as_ref();
            for b in 0..segment.block_count() {
                let first = segment.block_first_row(b);
                let selected = selection.is_none_or(|sel| sel.range_cardinality(first as u32..(first as u32).saturating_add(segment.block_rows(b) as u32)) > 0);
                if selected && prune::may_match(bounds, |column| segment.zone_map(b, column)) {
                    units.push(Unit::Block { segment: s, block: b });
                } else {
                    pruned += 1;
                }
            }
        }
        stats.blocks_planned.fetch_add(units.len() as u64, Ordering::Relaxed);
        stats.blocks_pruned.fetch_add(pruned, Ordering::Relaxed);
        units.extend((0..self.snapshot.memtable.len()).map(Unit::Memtable));
        units
    }

    pub(crate) fn has_limit(&self) -> bool {
        self.limit.is_some()
    }

    fn limit_reached(&self) -> bool {
        self.limit.is_some_and(|l| self.emitted.load(Ordering::Relaxed) >= l)
    }

    pub(crate) fn read(&self, unit: Unit) -> Result<RecordBatch> {
        Ok(self.read_keyed(unit, None)?.0)
    }

    /// A unit's rows; and when output column `group` of a segment block is stored as codes
    /// into its segment dictionary, those codes too (one per output row, after the bitmap
    /// selection; a null row's code is meaningless).
    pub(crate) fn read_keyed(&self, unit: Unit, group: Option<usize>) -> Result<(RecordBatch, Option<SegmentCodes<'_>>)> {
        let (batch, codes) = match unit {
            Unit::Memtable(i) => {
                let batch = &self.snapshot.memtable[i];
                let out = record_batch(&self.schema, self.columns.iter().map(|&c| batch.column(c)), batch.rows())?;
                match self.bitmap_filters.split_first() {
                    None => (out, None),
                    Some((first, rest)) => {
                        let mut mask = first.mask(batch.column(first.column));
                        for f in rest {
                            mask = and(&mask, &f.mask(batch.column(f.column)))?;
                        }
                        (filter_record_batch(&out, &mask)?, None)
                    }
                }
            }
            Unit::Block { segment: s, block } => self.read_block(s, block, group)?,
        };
        self.emitted.fetch_add(batch.num_rows(), Ordering::Relaxed);
        Ok((batch, codes))
    }

    fn read_block(&self, s: usize, block: usize, group: Option<usize>) -> Result<(RecordBatch, Option<SegmentCodes<'_>>)> {
        let segment = &self.snapshot.segments[s];
        let rows = segment.block_rows(block);
        let mut columns = segment.read_block_coded(block, &self.columns).map_err(|e| DataFusionError::from(storage_error(e.into())))?;
        let views = |i: usize, dictionary: &TextDictionary| {
            let cached = dictionary.len() <= ENTRY_VIEWS_CACHED_MAX;
            cached.then(|| self.entry_views[s][i].get_or_init(|| dictionary_views(dictionary)).as_slice())
        };
        let out = block_record_batch(&self.schema, &mut columns, rows, views)?;
        let codes = match group {
            Some(g) => match columns.swap_remove(g) {
                BlockColumn::Codes { codes, dictionary, .. } => Some(SegmentCodes { segment: s, codes, dictionary }),
                BlockColumn::Values(_) => None,
            },
            None => None,
        };
        let Some(selection) = &self.selections[s] else { return Ok((out, codes)) };
        let first = u32::try_from(segment.block_first_row(block))
            .map_err(|_| DataFusionError::Internal("segment row id over u32".into()))?;
        let mask = block_mask(selection, first, rows);
        let codes = codes.map(|c| SegmentCodes {
            codes: c.codes.iter().zip(mask.values().iter()).filter_map(|(&code, keep)| keep.then_some(code)).collect(),
            ..c
        });
        Ok((filter_record_batch(&out, &mask)?, codes))
    }
}

/// Codes of one block's text column into its segment's dictionary.
pub(crate) struct SegmentCodes<'s> {
    /// Index of the segment in the scan's snapshot (codes of different segments differ).
    pub segment: usize,
    pub codes: Vec<u32>,
    pub dictionary: &'s TextDictionary,
}

/// The scan as a DataFusion leaf: [`SCAN_PARTITIONS_MAX`] partitions, each a share of the
/// units. Its own plan node (not a `StreamingTableExec`) so that physical optimizer rules can
/// see a Lookback scan and read it differently ([`crate::code_aggregate`]).
pub struct LookbackScanExec {
    table: String,
    scan: Arc<Scan>,
    /// Units of each partition, dealt round-robin.
    partitions: Vec<Vec<Unit>>,
    properties: Arc<PlanProperties>,
}

impl LookbackScanExec {
    fn new(table: String, scan: Arc<Scan>, units: Vec<Unit>) -> LookbackScanExec {
        let count = SCAN_PARTITIONS_MAX.min(units.len()).max(1);
        let partitions = (0..count).map(|p| units.iter().copied().skip(p).step_by(count).collect()).collect();
        let properties = PlanProperties::new(
            EquivalenceProperties::new(scan.schema.clone()),
            Partitioning::UnknownPartitioning(count),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        LookbackScanExec { table, scan, partitions, properties: Arc::new(properties) }
    }

    pub(crate) fn scan(&self) -> &Arc<Scan> {
        &self.scan
    }

    pub(crate) fn partition_units(&self, partition: usize) -> &[Unit] {
        &self.partitions[partition]
    }
}

impl fmt::Debug for LookbackScanExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LookbackScanExec({})", self.table)
    }
}

impl DisplayAs for LookbackScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let units: usize = self.partitions.iter().map(Vec::len).sum();
        let columns: Vec<&str> = self.scan.schema.fields().iter().map(|field| field.name().as_str()).collect();
        write!(f, "LookbackScanExec: table={}, partitions={}, units={units}, projection=[{}]", self.table, self.partitions.len(), columns.join(", "))?;
        if !self.scan.bitmap_filters.is_empty() {
            write!(f, ", bitmap_filters={}", self.scan.bitmap_filters.len())?;
        }
        if let Some(limit) = self.scan.limit {
            write!(f, ", limit={limit}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for LookbackScanExec {
    fn name(&self) -> &str {
        "LookbackScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        match children.is_empty() {
            true => Ok(self),
            false => Err(DataFusionError::Internal("LookbackScanExec has no children".into())),
        }
    }

    fn execute(&self, partition: usize, _ctx: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let units = self
            .partitions
            .get(partition)
            .ok_or_else(|| DataFusionError::Internal(format!("LookbackScanExec has no partition {partition}")))?
            .clone()
            .into_iter();
        let scan = self.scan.clone();
        let mut left = scan.limit;
        let stream = futures::stream::iter(units)
            .take_while({
                let scan = scan.clone();
                move |_| futures::future::ready(!scan.limit_reached())
            })
            .map(move |unit| {
                // At most `limit` rows per partition, as DataFusion's own sources give.
                let batch = scan.read(unit)?;
                Ok(match left.as_mut() {
                    None => batch,
                    Some(left) => {
                        let rows = batch.num_rows().min(*left);
                        *left -= rows;
                        batch.slice(0, rows)
                    }
                })
            });
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.scan.schema.clone(), stream)))
    }
}
