//! The SQL table functions `attribute(...)` and `attribute_channels(...)` (docs/attribution.md).
//!
//! Planning: a DataFusion `RelationPlanner` ([`AttributionPlanner`]) takes the two function
//! calls in FROM, with PostgreSQL named notation (`model => 'linear'`) or positional arguments
//! (DataFusion's default table-function path accepts no names), folds each argument to a
//! constant ([`args`]) and plans a scan of an [`AttributionTable`]. Its scan is
//! [`AttributeExec`]: it takes a snapshot of `events` and runs the touchpoint join and the
//! models ([`run`]) on blocking threads, streaming rows as they are produced.

pub mod args;
pub mod output;
pub mod run;

use crate::SqlError;
use args::{arg_names, Params};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::DFSchema;
use datafusion::datasource::{provider_as_source, TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::planner::{PlannedRelation, RelationPlanner, RelationPlannerContext, RelationPlanning};
use datafusion::logical_expr::{Expr, LogicalPlanBuilder};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
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
        let params = Params::parse(&function, &positional)?;
        let table = AttributionTable::new(self.db.clone(), params, function == ATTRIBUTE_CHANNELS);
        let plan = LogicalPlanBuilder::scan(function.as_str(), provider_as_source(Arc::new(table)), None)?.build()?;
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
        let schema = match channels {
            true => output::channel_schema(),
            false => output::attribute_schema(),
        };
        AttributionTable { db, params, channels, schema }
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
        let mut builder = RecordBatchReceiverStreamBuilder::new(self.properties.eq_properties.schema().clone(), OUTPUT_BATCHES_BUFFERED_MAX);
        let tx = builder.tx();
        let (params, mode, threads) = (self.params.clone(), self.mode.clone(), self.threads);
        builder.spawn_blocking(move || run::run(&snapshot, &params, &mode, threads, &tx));
        Ok(builder.build())
    }
}
