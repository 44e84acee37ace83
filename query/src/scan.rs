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
use lookback_storage::segment::TextDictionary;
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
use datafusion::catalog::streaming::StreamingTable;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::physical_plan::ExecutionPlan;
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
        state: &dyn Session,
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
        let partitions = SCAN_PARTITIONS_MAX.min(units.len()).max(1);
        let streams: Vec<Arc<dyn PartitionStream>> = (0..partitions)
            .map(|p| {
                let mine = units.iter().copied().skip(p).step_by(partitions).collect();
                Arc::new(ScanPartition { scan: scan.clone(), units: mine }) as Arc<dyn PartitionStream>
            })
            .collect();
        let table = StreamingTable::try_new(projected, streams)?;
        table.scan(state, None, &[], limit).await
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
struct Scan {
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
enum Unit {
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

    fn limit_reached(&self) -> bool {
        self.limit.is_some_and(|l| self.emitted.load(Ordering::Relaxed) >= l)
    }

    fn read(&self, unit: Unit) -> Result<RecordBatch> {
        let batch = match unit {
            Unit::Memtable(i) => {
                let batch = &self.snapshot.memtable[i];
                let out = record_batch(&self.schema, self.columns.iter().map(|&c| batch.column(c)), batch.rows())?;
                match self.bitmap_filters.split_first() {
                    None => out,
                    Some((first, rest)) => {
                        let mut mask = first.mask(batch.column(first.column));
                        for f in rest {
                            mask = and(&mask, &f.mask(batch.column(f.column)))?;
                        }
                        filter_record_batch(&out, &mask)?
                    }
                }
            }
            Unit::Block { segment: s, block } => {
                let segment = &self.snapshot.segments[s];
                let columns = segment.read_block_coded(block, &self.columns).map_err(|e| DataFusionError::from(storage_error(e.into())))?;
                let views = |i: usize, dictionary: &TextDictionary| {
                    let cached = dictionary.len() <= ENTRY_VIEWS_CACHED_MAX;
                    cached.then(|| self.entry_views[s][i].get_or_init(|| dictionary_views(dictionary)).as_slice())
                };
                let out = block_record_batch(&self.schema, &columns, segment.block_rows(block), views)?;
                match &self.selections[s] {
                    None => out,
                    Some(selection) => {
                        let first = u32::try_from(segment.block_first_row(block))
                            .map_err(|_| DataFusionError::Internal("segment row id over u32".into()))?;
                        filter_record_batch(&out, &block_mask(selection, first, segment.block_rows(block)))?
                    }
                }
            }
        };
        self.emitted.fetch_add(batch.num_rows(), Ordering::Relaxed);
        Ok(batch)
    }
}

struct ScanPartition {
    scan: Arc<Scan>,
    units: Vec<Unit>,
}

impl fmt::Debug for ScanPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ScanPartition({} units)", self.units.len())
    }
}

impl PartitionStream for ScanPartition {
    fn schema(&self) -> &SchemaRef {
        &self.scan.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let scan = self.scan.clone();
        let units = self.units.clone().into_iter();
        let stream = futures::stream::iter(units)
            .take_while({
                let scan = scan.clone();
                move |_| futures::future::ready(!scan.limit_reached())
            })
            .map(move |unit| scan.read(unit));
        Box::pin(RecordBatchStreamAdapter::new(self.scan.schema.clone(), stream))
    }
}
