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
use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, StringViewArray};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning, PlanProperties};
use std::collections::HashMap;
use std::fmt;
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
    let group = expr.downcast_ref::<Column>()?.index();
    let input = aggregate.input().clone();
    let scan = input.downcast_ref::<LookbackScanExec>()?;
    if scan.scan().has_limit() || input.schema().field(group).data_type() != &DataType::Utf8View {
        return None;
    }
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
        group,
        aggregates: aggregate.aggr_expr().to_vec(),
        filters: aggregate.filter_expr().to_vec(),
        schema: aggregate.schema(),
        properties: Arc::new(properties),
    }))
}

/// A partial aggregate grouped by one text column of its [`LookbackScanExec`] input, grouping
/// on segment dictionary codes. Output: the group column, then each aggregate's state, as the
/// partial `AggregateExec` it replaces.
pub struct CodeAggregateExec {
    /// Always a [`LookbackScanExec`].
    input: Arc<dyn ExecutionPlan>,
    /// The group column, an index into the input's columns.
    group: usize,
    aggregates: Vec<Arc<AggregateFunctionExpr>>,
    filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl fmt::Debug for CodeAggregateExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CodeAggregateExec(group column {})", self.group)
    }
}

impl DisplayAs for CodeAggregateExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.aggregates.iter().map(|a| a.name()).collect();
        write!(f, "CodeAggregateExec: gby=[{}], aggr=[{}]", self.input.schema().field(self.group).name(), names.join(", "))
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
            group: self.group,
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
            group: self.group,
            aggregates: self.aggregates.clone(),
            filters: self.filters.clone(),
            accumulators: self.aggregates.iter().map(|a| a.create_groups_accumulator()).collect::<Result<_>>()?,
            keys: Vec::new(),
            slots: HashMap::new(),
            null_slot: None,
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

/// The groups of one partition and their accumulators.
struct Groups {
    group: usize,
    aggregates: Vec<Arc<AggregateFunctionExpr>>,
    filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
    /// Key of each slot, in slot order (`None`: the NULL group).
    keys: Vec<Option<Box<str>>>,
    /// Slot of each non-null key.
    slots: HashMap<Box<str>, u32>,
    null_slot: Option<u32>,
    /// Per segment of the snapshot, the slot of each dictionary code ([`SLOT_UNSEEN`] until met).
    code_slots: HashMap<usize, Vec<u32>>,
    /// Slot of each row of the batch being added (reused).
    indices: Vec<usize>,
}

impl Groups {
    fn add(&mut self, scan: &Scan, unit: Unit) -> Result<()> {
        let (batch, codes) = scan.read_keyed(unit, Some(self.group))?;
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.assign_slots(batch.column(self.group), codes)?;
        let rows = batch.num_rows();
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
            accumulator.update_batch(&values, &self.indices, filter.as_ref(), self.keys.len())?;
        }
        Ok(())
    }

    /// Fills `indices` with each row's slot, creating slots for new keys.
    fn assign_slots(&mut self, keys: &ArrayRef, codes: Option<SegmentCodes<'_>>) -> Result<()> {
        let keys = keys
            .as_string_view_opt()
            .ok_or_else(|| DataFusionError::Internal(format!("group column is {}, not Utf8View", keys.data_type())))?;
        self.indices.clear();
        let Groups { keys: slot_keys, slots, null_slot, code_slots, indices, .. } = self;
        let mut slot_of = |key: Option<&str>| -> usize {
            let found = match key {
                None => *null_slot,
                Some(k) => slots.get(k).copied(),
            };
            if let Some(slot) = found {
                return slot as usize;
            }
            let slot = u32::try_from(slot_keys.len()).ok().filter(|&s| s != SLOT_UNSEEN);
            let slot = slot.expect("fewer groups than u32::MAX: each holds a distinct stored value");
            match key {
                None => *null_slot = Some(slot),
                Some(k) => {
                    slots.insert(k.into(), slot);
                }
            }
            slot_keys.push(key.map(Into::into));
            slot as usize
        };
        match codes {
            Some(SegmentCodes { segment, codes, dictionary }) => {
                assert_eq!(codes.len(), keys.len(), "one code per row");
                let by_code = code_slots.entry(segment).or_insert_with(|| vec![SLOT_UNSEEN; dictionary.len()]);
                indices.reserve(codes.len());
                let nulls = keys.nulls().filter(|n| n.null_count() > 0);
                for (row, &code) in codes.iter().enumerate() {
                    if nulls.is_some_and(|n| n.is_null(row)) {
                        indices.push(slot_of(None));
                        continue;
                    }
                    let slot = &mut by_code[code as usize];
                    if *slot == SLOT_UNSEEN {
                        *slot = slot_of(Some(keys.value(row))) as u32;
                    }
                    indices.push(*slot as usize);
                }
            }
            None => indices.extend((0..keys.len()).map(|row| slot_of((!keys.is_null(row)).then(|| keys.value(row))))),
        }
        Ok(())
    }

    /// The partial aggregate's output: group keys, then each accumulator's state.
    fn finish(mut self, schema: SchemaRef) -> Result<RecordBatch> {
        let keys: StringViewArray = self.keys.iter().map(|k| k.as_deref()).collect();
        let mut columns: Vec<ArrayRef> = vec![Arc::new(keys)];
        for accumulator in &mut self.accumulators {
            columns.extend(accumulator.state(EmitTo::All)?);
        }
        Ok(RecordBatch::try_new(schema, columns)?)
    }
}
