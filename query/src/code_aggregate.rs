//! GROUP BY a text column, grouped on the segment dictionary codes.
//!
//! Why: dashboards group by low-cardinality text (channel, campaign, app, country). Segments
//! already store such a column as codes into a sorted per-segment dictionary, so a group is
//! found by indexing an array with the code, not by hashing a string per row. DataFusion's
//! hash aggregate cannot see codes (it gets `Utf8View` arrays), and hashing was most of the
//! time of `GROUP BY channel` over 10 M events.
//!
//! How: the physical optimizer rule [`CodeAggregation`] replaces a partial `AggregateExec`
//! that groups by one text column of a [`LookbackScanExec`] with a [`CodeAggregateExec`]. That
//! node reads the scan's units itself: per segment it maps each dictionary code to a group slot
//! once (a hash lookup per distinct value per segment), then gives every row its slot by
//! indexing; memtable batches and blocks without codes take a hash lookup per row. The
//! aggregates themselves are DataFusion's own `GroupsAccumulator`s fed with those slots, and
//! the output is their partial state, so the final aggregate above, and every answer, are
//! exactly what the plan without the rule gives. Only plans it can answer identically are
//! rewritten: one plain column as the only group (no grouping sets), aggregates with group
//! accumulators and without DISTINCT or ORDER BY, no limit on the scan.
//!
//! Not here: memory accounting of the groups (bounded by the distinct values of the column:
//! at most [`lookback_storage::segment::SEGMENT_DICTIONARY_ENTRIES_MAX`] per segment's codes).

use crate::scan::{LookbackScanExec, Scan, SegmentCodes, Unit};
use crate::arrow::TIMESTAMP_TZ;
use crate::date_trunc::{DAY_US, HOUR_US, MINUTE_US, SECOND_US, WEEK_US};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, StringViewArray, TimestampMicrosecondArray};
use datafusion::arrow::compute::{max, min};
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType};
use datafusion::common::ScalarValue;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::expressions::{Column, Literal};
use datafusion::physical_expr::ScalarFunctionExpr;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning, PlanProperties};
use std::borrow::Borrow;
use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

/// Slot value of a dictionary code not seen yet.
const SLOT_UNSEEN: u32 = u32::MAX;

/// Rewrites partial aggregates grouped by one text column of a Lookback scan (see the module).
#[derive(Debug, Default)]
pub struct CodeAggregation;

impl PhysicalOptimizerRule for CodeAggregation {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            Ok(match rewrite(&node) {
                Some(exec) => Transformed::yes(exec),
                None => Transformed::no(node),
            })
        })
        .data()
    }

    fn name(&self) -> &str {
        "lookback_code_aggregation"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// The [`CodeAggregateExec`] that answers `node`, when `node` is a partial aggregate it can
/// answer identically.
fn rewrite(node: &Arc<dyn ExecutionPlan>) -> Option<Arc<dyn ExecutionPlan>> {
    let aggregate = node.downcast_ref::<AggregateExec>()?;
    let group_by = aggregate.group_expr();
    if *aggregate.mode() != AggregateMode::Partial
        || aggregate.limit_options().is_some()
        || !aggregate.dynamic_expressions_produced().is_empty()
        || !group_by.is_single()
    {
        return None;
    }
    let [(expr, _)] = group_by.expr() else { return None };
    let input = aggregate.input().clone();
    let scan = input.downcast_ref::<LookbackScanExec>()?;
    if scan.scan().has_limit() {
        return None;
    }
    let key = group_key(expr, &input.schema())?;
    let plain = |a: &Arc<AggregateFunctionExpr>| !a.is_distinct() && a.order_bys().is_empty() && a.groups_accumulator_supported();
    if !aggregate.aggr_expr().iter().all(plain) {
        return None;
    }
    let properties = PlanProperties::new(
        EquivalenceProperties::new(aggregate.schema()),
        Partitioning::UnknownPartitioning(input.output_partitioning().partition_count()),
        EmissionType::Final,
        Boundedness::Bounded,
    );
    Some(Arc::new(CodeAggregateExec {
        input,
        key,
        aggregates: aggregate.aggr_expr().to_vec(),
        filters: aggregate.filter_expr().to_vec(),
        schema: aggregate.schema(),
        properties: Arc::new(properties),
    }))
}

/// What a [`CodeAggregateExec`] groups by.
#[derive(Clone, Debug)]
enum GroupKey {
    /// A text column of the scan (an index into its columns): grouped on dictionary codes.
    Text { column: usize },
    /// `date_trunc` of a UTC timestamp column to a unit of fixed length (second to week):
    /// grouped through a dense table over each batch's range of steps.
    Time { expr: Arc<dyn PhysicalExpr>, step_us: i64 },
}

/// The group key of `expr` over a scan of `schema`, when it is one of [`GroupKey`]'s forms.
fn group_key(expr: &Arc<dyn PhysicalExpr>, schema: &Schema) -> Option<GroupKey> {
    if let Some(column) = expr.downcast_ref::<Column>() {
        let text = schema.field(column.index()).data_type() == &DataType::Utf8View;
        return text.then_some(GroupKey::Text { column: column.index() });
    }
    let function = expr.downcast_ref::<ScalarFunctionExpr>()?;
    let [granularity, ts] = function.args() else { return None };
    if function.name() != "date_trunc" {
        return None;
    }
    let granularity = match granularity.downcast_ref::<Literal>()?.value() {
        ScalarValue::Utf8(Some(g)) | ScalarValue::Utf8View(Some(g)) | ScalarValue::LargeUtf8(Some(g)) => g.clone(),
        _ => return None,
    };
    let step_us = crate::date_trunc::fixed_step_us(&granularity)?;
    let column = ts.downcast_ref::<Column>()?;
    match schema.field(column.index()).data_type() {
        DataType::Timestamp(TimeUnit::Microsecond, Some(tz)) if tz.as_ref() == TIMESTAMP_TZ => {}
        _ => return None,
    }
    Some(GroupKey::Time { expr: expr.clone(), step_us })
}

/// Steps a batch's time keys may span for the dense table (more: a hash lookup per row).
const TIME_DENSE_STEPS_MAX: i64 = 65_536;

/// A partial aggregate grouped by one text column of its [`LookbackScanExec`] input, grouping
/// on segment dictionary codes (or by a fixed-unit `date_trunc` of a timestamp column). Output: the group column, then each aggregate's state, as the
/// partial `AggregateExec` it replaces.
pub struct CodeAggregateExec {
    /// Always a [`LookbackScanExec`].
    input: Arc<dyn ExecutionPlan>,
    key: GroupKey,
    aggregates: Vec<Arc<AggregateFunctionExpr>>,
    filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl fmt::Debug for CodeAggregateExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CodeAggregateExec({:?})", self.key)
    }
}

impl DisplayAs for CodeAggregateExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.aggregates.iter().map(|a| a.name()).collect();
        let key = match &self.key {
            GroupKey::Text { column } => self.input.schema().field(*column).name().clone(),
            GroupKey::Time { expr, .. } => expr.to_string(),
        };
        write!(f, "CodeAggregateExec: gby=[{key}], aggr=[{}]", names.join(", "))
    }
}

impl ExecutionPlan for CodeAggregateExec {
    fn name(&self) -> &str {
        "CodeAggregateExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        if let GroupKey::Time { expr, .. } = &self.key {
            if f(expr)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        for aggregate in &self.aggregates {
            for e in aggregate.expressions() {
                if f(&e)? == TreeNodeRecursion::Stop {
                    return Ok(TreeNodeRecursion::Stop);
                }
            }
        }
        for e in self.filters.iter().flatten() {
            if f(e)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(self: Arc<Self>, mut children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        let input = match children.pop() {
            Some(input) if children.is_empty() && input.is::<LookbackScanExec>() => input,
            _ => return Err(DataFusionError::Internal("CodeAggregateExec reads exactly one Lookback scan".into())),
        };
        Ok(Arc::new(CodeAggregateExec {
            input,
            key: self.key.clone(),
            aggregates: self.aggregates.clone(),
            filters: self.filters.clone(),
            schema: self.schema.clone(),
            properties: self.properties.clone(),
        }))
    }

    fn execute(&self, partition: usize, _ctx: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let scan = self
            .input
            .downcast_ref::<LookbackScanExec>()
            .ok_or_else(|| DataFusionError::Internal("CodeAggregateExec input is not a Lookback scan".into()))?;
        if partition >= scan.properties().partitioning.partition_count() {
            return Err(DataFusionError::Internal(format!("CodeAggregateExec has no partition {partition}")));
        }
        let units = scan.partition_units(partition).to_vec();
        let mut groups = Groups {
            key: self.key.clone(),
            aggregates: self.aggregates.clone(),
            filters: self.filters.clone(),
            accumulators: self.aggregates.iter().map(|a| a.create_groups_accumulator()).collect::<Result<_>>()?,
            text: SlotTable::default(),
            time: SlotTable::default(),
            code_slots: HashMap::new(),
            indices: Vec::new(),
        };
        let (scan, schema) = (scan.scan().clone(), self.schema.clone());
        let output = async move {
            for unit in units {
                groups.add(&scan, unit)?;
                // Between units, let other tasks (and cancellation) in.
                yield_now().await;
            }
            groups.finish(schema)
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), futures::stream::once(output))))
    }
}

/// Returns `Pending` once (waking itself at once), so the executor can run other tasks.
async fn yield_now() {
    let mut yielded = false;
    futures::future::poll_fn(|cx| {
        if yielded {
            return std::task::Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await
}

/// Slots of time keys through the hash table, appended to `indices`.
fn hashed_time(keys: &TimestampMicrosecondArray, time: &mut SlotTable<i64>, indices: &mut Vec<usize>) {
    indices.extend((0..keys.len()).map(|row| {
        let key = keys.value(row);
        time.slot((!keys.is_null(row)).then_some(&key))
    }));
}

/// Slots of time keys through `by_step` (one entry per `STEP` from `lo`), appended to
/// `indices`. Keys off the step grid (which `date_trunc` never gives) take the hash table.
fn dense_time<const STEP: i64>(
    keys: &TimestampMicrosecondArray,
    lo: i64,
    by_step: &mut [u32],
    time: &mut SlotTable<i64>,
    indices: &mut Vec<usize>,
) {
    for row in 0..keys.len() {
        if keys.is_null(row) {
            indices.push(time.slot::<i64>(None));
            continue;
        }
        let key = keys.value(row);
        let step = (key - lo) / STEP;
        if lo + step * STEP != key {
            indices.push(time.slot(Some(&key)));
            continue;
        }
        let slot = &mut by_step[step as usize];
        if *slot == SLOT_UNSEEN {
            *slot = time.slot(Some(&key)) as u32;
        }
        indices.push(*slot as usize);
    }
}

/// Group keys and their slots (slot = index into `keys`).
struct SlotTable<K> {
    /// Key of each slot, in slot order (`None`: the NULL group).
    keys: Vec<Option<K>>,
    slots: HashMap<K, u32>,
    null_slot: Option<u32>,
}

impl<K> Default for SlotTable<K> {
    fn default() -> Self {
        SlotTable { keys: Vec::new(), slots: HashMap::new(), null_slot: None }
    }
}

impl<K: Hash + Eq + Clone> SlotTable<K> {
    /// The slot of `key`, made when new.
    fn slot<Q>(&mut self, key: Option<&Q>) -> usize
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized + ToOwned<Owned = K>,
    {
        let found = match key {
            None => self.null_slot,
            Some(k) => self.slots.get(k).copied(),
        };
        if let Some(slot) = found {
            return slot as usize;
        }
        let slot = u32::try_from(self.keys.len()).ok().filter(|&s| s != SLOT_UNSEEN);
        let slot = slot.expect("fewer groups than u32::MAX: each holds a distinct stored value");
        match key {
            None => self.null_slot = Some(slot),
            Some(k) => {
                self.slots.insert(k.to_owned(), slot);
            }
        }
        self.keys.push(key.map(|k| k.to_owned()));
        slot as usize
    }
}

/// The groups of one partition and their accumulators.
struct Groups {
    key: GroupKey,
    aggregates: Vec<Arc<AggregateFunctionExpr>>,
    filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
    /// Slots of a text key (one of `text` and `time` is used, per `key`).
    text: SlotTable<String>,
    time: SlotTable<i64>,
    /// Per segment of the snapshot, the slot of each dictionary code ([`SLOT_UNSEEN`] until met).
    code_slots: HashMap<usize, Vec<u32>>,
    /// Slot of each row of the batch being added (reused).
    indices: Vec<usize>,
}

impl Groups {
    fn add(&mut self, scan: &Scan, unit: Unit) -> Result<()> {
        let text_column = match &self.key {
            GroupKey::Text { column } => Some(*column),
            GroupKey::Time { .. } => None,
        };
        let (batch, codes) = scan.read_keyed(unit, text_column)?;
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(());
        }
        self.indices.clear();
        let groups = match self.key.clone() {
            GroupKey::Text { column } => {
                self.assign_text(batch.column(column), codes)?;
                self.text.keys.len()
            }
            GroupKey::Time { expr, step_us } => {
                self.assign_time(&expr.evaluate(&batch)?.into_array(rows)?, step_us)?;
                self.time.keys.len()
            }
        };
        for (i, accumulator) in self.accumulators.iter_mut().enumerate() {
            let values = self.aggregates[i]
                .expressions()
                .iter()
                .map(|e| e.evaluate(&batch)?.into_array(rows))
                .collect::<Result<Vec<ArrayRef>>>()?;
            let filter: Option<BooleanArray> = match &self.filters[i] {
                Some(f) => Some(f.evaluate(&batch)?.into_array(rows)?.as_boolean().clone()),
                None => None,
            };
            accumulator.update_batch(&values, &self.indices, filter.as_ref(), groups)?;
        }
        Ok(())
    }

    /// Fills `indices` with each row's slot of a text key, creating slots for new keys.
    fn assign_text(&mut self, keys: &ArrayRef, codes: Option<SegmentCodes<'_>>) -> Result<()> {
        let keys = keys
            .as_string_view_opt()
            .ok_or_else(|| DataFusionError::Internal(format!("group column is {}, not Utf8View", keys.data_type())))?;
        let Groups { text, code_slots, indices, .. } = self;
        indices.reserve(keys.len());
        match codes {
            Some(SegmentCodes { segment, codes, dictionary }) => {
                assert_eq!(codes.len(), keys.len(), "one code per row");
                let by_code = code_slots.entry(segment).or_insert_with(|| vec![SLOT_UNSEEN; dictionary.len()]);
                let nulls = keys.nulls().filter(|n| n.null_count() > 0);
                for (row, &code) in codes.iter().enumerate() {
                    if nulls.is_some_and(|n| n.is_null(row)) {
                        indices.push(text.slot::<str>(None));
                        continue;
                    }
                    let slot = &mut by_code[code as usize];
                    if *slot == SLOT_UNSEEN {
                        *slot = text.slot(Some(keys.value(row))) as u32;
                    }
                    indices.push(*slot as usize);
                }
            }
            None => indices.extend((0..keys.len()).map(|row| text.slot((!keys.is_null(row)).then(|| keys.value(row))))),
        }
        Ok(())
    }

    /// Fills `indices` with each row's slot of a truncated-time key. Keys of one batch that
    /// span at most [`TIME_DENSE_STEPS_MAX`] steps go through a table indexed by step (a hash
    /// lookup per distinct key, not per row).
    fn assign_time(&mut self, keys: &ArrayRef, step_us: i64) -> Result<()> {
        let keys = keys
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or_else(|| DataFusionError::Internal(format!("group key is {}, not a timestamp", keys.data_type())))?;
        let Groups { time, indices, .. } = self;
        indices.reserve(keys.len());
        let lo = min(keys);
        let span = lo.zip(max(keys)).and_then(|(lo, hi)| hi.checked_sub(lo)).map(|d| d / step_us);
        let (Some(lo), Some(span)) = (lo, span.filter(|&s| s < TIME_DENSE_STEPS_MAX)) else {
            hashed_time(keys, time, indices);
            return Ok(());
        };
        let mut by_step = vec![SLOT_UNSEEN; span as usize + 1];
        // One loop per common step, so each divides by a constant (a multiply), not a runtime
        // divisor (a hardware division per row).
        match step_us {
            SECOND_US => dense_time::<SECOND_US>(keys, lo, &mut by_step, time, indices),
            MINUTE_US => dense_time::<MINUTE_US>(keys, lo, &mut by_step, time, indices),
            HOUR_US => dense_time::<HOUR_US>(keys, lo, &mut by_step, time, indices),
            DAY_US => dense_time::<DAY_US>(keys, lo, &mut by_step, time, indices),
            WEEK_US => dense_time::<WEEK_US>(keys, lo, &mut by_step, time, indices),
            // date_trunc gives no other step; were one added, every key takes the hash table.
            _ => hashed_time(keys, time, indices),
        }
        Ok(())
    }

    /// The partial aggregate's output: group keys, then each accumulator's state.
    fn finish(mut self, schema: SchemaRef) -> Result<RecordBatch> {
        let keys: ArrayRef = match (&self.key, schema.field(0).data_type()) {
            (GroupKey::Text { .. }, _) => Arc::new(self.text.keys.iter().map(|k| k.as_deref()).collect::<StringViewArray>()),
            (GroupKey::Time { .. }, DataType::Timestamp(TimeUnit::Microsecond, tz)) => {
                Arc::new(TimestampMicrosecondArray::from(self.time.keys.clone()).with_timezone_opt(tz.clone()))
            }
            (GroupKey::Time { .. }, other) => return Err(DataFusionError::Internal(format!("date_trunc group typed {other}"))),
        };
        let mut columns: Vec<ArrayRef> = vec![keys];
        for accumulator in &mut self.accumulators {
            columns.extend(accumulator.state(EmitTo::All)?);
        }
        Ok(RecordBatch::try_new(schema, columns)?)
    }
}
