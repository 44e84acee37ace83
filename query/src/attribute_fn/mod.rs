//! The SQL table functions `attribute(...)` and `attribute_channels(...)` (docs/attribution.md).
//!
//! Planning: a DataFusion `RelationPlanner` ([`AttributionPlanner`]) takes the two function
//! calls in FROM, with PostgreSQL named notation (`model => 'linear'`) or positional arguments
//! (DataFusion's default table-function path accepts no names), folds each argument to a
//! constant ([`args`]) and plans a scan of an [`AttributionTable`] (a call with bind
//! parameters waits for their values as an [`call::AttributeCall`] node). Its scan is
//! [`AttributeExec`]: it takes a snapshot of `events` and runs the touchpoint join and the
//! models ([`run`]) on blocking threads, streaming rows as they are produced.

pub mod args;
pub mod call;
pub mod output;
pub mod run;

use crate::SqlError;
use args::{arg_names, Params};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::DFSchema;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::planner::{PlannedRelation, RelationPlanner, RelationPlannerContext, RelationPlanning};
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::physical_plan::stream::RecordBatchReceiverStreamBuilder;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties};
use datafusion::sql::sqlparser::ast::{Expr as SqlExpr, FunctionArg, FunctionArgExpr, TableFactor};
use lookback_storage::Db;
use run::Mode;
use std::fmt;
use std::sync::Arc;

/// SQLSTATE of a call with an argument name the function does not have (as PostgreSQL).
const UNDEFINED_FUNCTION: &str = "42883";

pub const ATTRIBUTE: &str = "attribute";
pub const ATTRIBUTE_CHANNELS: &str = "attribute_channels";
/// The table attribution reads.
pub const EVENTS_TABLE: &str = "events";
/// Output batches buffered ahead of the consumer.
const OUTPUT_BATCHES_BUFFERED_MAX: usize = 4;

/// Plans `attribute(...)` and `attribute_channels(...)` in FROM.
pub struct AttributionPlanner {
    pub db: Arc<Db>,
}

impl fmt::Debug for AttributionPlanner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AttributionPlanner")
    }
}

impl RelationPlanner for AttributionPlanner {
    fn plan_relation(&self, relation: TableFactor, context: &mut dyn RelationPlannerContext) -> Result<RelationPlanning> {
        let TableFactor::Table { name, args: Some(args), alias, .. } = &relation else {
            return Ok(RelationPlanning::Original(Box::new(relation)));
        };
        let function = context.object_name_to_table_reference(name.clone())?.table().to_ascii_lowercase();
        if function != ATTRIBUTE && function != ATTRIBUTE_CHANNELS {
            return Ok(RelationPlanning::Original(Box::new(relation)));
        }
        let names = arg_names(function == ATTRIBUTE_CHANNELS);
        let mut positional: Vec<Option<Expr>> = vec![None; names.len()];
        let mut named_seen = false;
        for (i, arg) in args.args.iter().enumerate() {
            let (slot, expr) = match arg {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(expr)) if !named_seen => (i, expr),
                FunctionArg::Unnamed(_) => {
                    return Err(DataFusionError::Plan(format!("{function}(): positional arguments must come before named ones")));
                }
                // The simple-query parser gives `Named`, the extended-protocol parser (the
                // PostgreSQL dialect) `ExprNamed` with an identifier.
                FunctionArg::Named { name: arg_name, arg: FunctionArgExpr::Expr(expr), .. }
                | FunctionArg::ExprNamed { name: SqlExpr::Identifier(arg_name), arg: FunctionArgExpr::Expr(expr), .. } => {
                    named_seen = true;
                    let wanted = context.normalize_ident(arg_name.clone());
                    let slot = names.iter().position(|n| *n == wanted).ok_or_else(|| {
                        let message = format!("{function}(): no argument named {wanted}; arguments are {}", names.join(", "));
                        DataFusionError::from(SqlError::new(UNDEFINED_FUNCTION, message))
                    })?;
                    (slot, expr)
                }
                other => return Err(DataFusionError::Plan(format!("{function}(): unsupported argument {other}"))),
            };
            if slot >= names.len() {
                return Err(DataFusionError::Plan(format!("{function}() takes at most {} arguments", names.len())));
            }
            if positional[slot].is_some() {
                return Err(DataFusionError::Plan(format!("{function}(): argument {} given twice", names[slot])));
            }
            positional[slot] = Some(context.sql_to_expr(expr.clone(), &DFSchema::empty())?);
        }
        let plan = call::AttributeCall::plan(&self.db, &function, positional)?;
        Ok(RelationPlanning::Planned(Box::new(PlannedRelation::new(plan, alias.clone()))))
    }
}

/// The result of one attribution call, as a table DataFusion scans.
pub struct AttributionTable {
    db: Arc<Db>,
    params: Params,
    channels: bool,
    schema: SchemaRef,
}

impl AttributionTable {
    pub fn new(db: Arc<Db>, params: Params, channels: bool) -> AttributionTable {
        AttributionTable { db, params, channels, schema: AttributionTable::schema_of(channels) }
    }

    /// The output schema of `attribute_channels(...)` (`channels`) or `attribute(...)`.
    pub fn schema_of(channels: bool) -> SchemaRef {
        match channels {
            true => output::channel_schema(),
            false => output::attribute_schema(),
        }
    }
}

impl fmt::Debug for AttributionTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AttributionTable({:?})", self.params)
    }
}

#[async_trait::async_trait]
impl TableProvider for AttributionTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let width = self.schema.fields().len();
        let projection: Vec<usize> = projection.cloned().unwrap_or_else(|| (0..width).collect());
        let mode = match self.channels {
            true => Mode::Channels,
            false => Mode::Rows { projection: projection.clone() },
        };
        let produced = match self.channels {
            true => self.schema.clone(),
            false => Arc::new(self.schema.project(&projection)?),
        };
        let threads = state.config().target_partitions();
        let exec = AttributeExec::new(self.db.clone(), self.params.clone(), mode, produced, threads);
        match self.channels {
            // attribute_channels is three columns, one row per channel: project after.
            true => Ok(Arc::new(datafusion::physical_plan::projection::ProjectionExec::try_new(
                projection.iter().map(|&i| {
                    let field = self.schema.field(i);
                    let column: Arc<dyn PhysicalExpr> = Arc::new(datafusion::physical_expr::expressions::Column::new(field.name(), i));
                    (column, field.name().clone())
                }),
                Arc::new(exec),
            )?)),
            false => Ok(Arc::new(exec)),
        }
    }
}

/// Runs `work` (blocking, at most milliseconds) on this thread; inside a multi-threaded tokio
/// runtime the worker's other tasks move to another worker meanwhile.
fn in_place<T>(work: impl FnOnce() -> T) -> T {
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    match multi_thread {
        true => tokio::task::block_in_place(work),
        false => work(),
    }
}

/// Runs one attribution: a single output partition fed by the join's worker threads.
pub struct AttributeExec {
    db: Arc<Db>,
    params: Params,
    mode: Arc<Mode>,
    threads: usize,
    properties: Arc<PlanProperties>,
}

impl AttributeExec {
    fn new(db: Arc<Db>, params: Params, mode: Mode, schema: SchemaRef, threads: usize) -> AttributeExec {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        AttributeExec { db, params, mode: Arc::new(mode), threads, properties: Arc::new(properties) }
    }
}

impl fmt::Debug for AttributeExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AttributeExec(model={})", self.params.model_name)
    }
}

impl DisplayAs for AttributeExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match *self.mode {
            Mode::Rows { .. } => ATTRIBUTE,
            Mode::Channels => ATTRIBUTE_CHANNELS,
        };
        write!(f, "AttributeExec: {what}(model={}, conversion={})", self.params.model_name, self.params.conversion.join(","))
    }
}

impl ExecutionPlan for AttributeExec {
    fn name(&self) -> &str {
        "AttributeExec"
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
            false => Err(DataFusionError::Internal("AttributeExec has no children".into())),
        }
    }

    fn execute(&self, partition: usize, _ctx: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!("AttributeExec has no partition {partition}")));
        }
        let snapshot = self.db.snapshot(EVENTS_TABLE).map_err(|e| DataFusionError::from(crate::error::storage_error(e)))?;
        let schema = self.properties.eq_properties.schema().clone();
        let (params, mode, threads) = (self.params.clone(), self.mode.clone(), self.threads);
        // A point lookup (a few journeys, bounded work) runs here, on the thread that asked:
        // handing a millisecond of work to a blocking thread and its rows back costs two thread
        // wake-ups, which on a busy machine are most of such a query's latency tail.
        let prepared = in_place(|| -> Result<std::result::Result<Vec<RecordBatch>, run::Prepared>> {
            let prepared = run::prepare(&snapshot, &params, &mode)?;
            if !prepared.is_point_lookup() {
                return Ok(Err(prepared));
            }
            let poisoned = || DataFusionError::Internal("attribution: output lock poisoned".into());
            let batches = std::sync::Mutex::new(Vec::new());
            let emit = |batch| batches.lock().map(|mut b| b.push(batch)).map_err(|_| poisoned());
            run::run(&snapshot, &params, &mode, prepared, 1, &emit)?;
            Ok(Ok(batches.into_inner().map_err(|_| poisoned())?))
        })?;
        let prepared = match prepared {
            Ok(batches) => return Ok(Box::pin(MemoryStream::try_new(batches, schema, None)?)),
            Err(prepared) => prepared,
        };
        let mut builder = RecordBatchReceiverStreamBuilder::new(schema, OUTPUT_BATCHES_BUFFERED_MAX);
        let tx = builder.tx();
        builder.spawn_blocking(move || run::run(&snapshot, &params, &mode, prepared, threads, &run::channel_emit(&tx)));
        Ok(builder.build())
    }
}
