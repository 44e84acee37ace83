//! An attribution call whose arguments hold bind parameters (`attribute(app => $1)`).
//!
//! The arguments of `attribute(...)` are read once, at planning, into [`Params`]; a prepared
//! statement is planned before its parameters are known. Such a call is planned as an
//! [`AttributeCall`] logical node that carries its arguments as expressions, so DataFusion's
//! parameter substitution (`LogicalPlan::with_param_values`, used by the extended protocol's
//! Bind and by SQL `EXECUTE`) reaches them like any other expression. The analyzer rule
//! [`ResolveAttributeCalls`] then turns each call whose arguments are all known into the scan
//! of an [`AttributionTable`], exactly the plan a call with literal arguments gets.
//!
//! The node's schema is the scan's (qualified by the function's name), so a plan built over the
//! node stays valid when the scan replaces it. A call still holding a placeholder when the plan
//! runs (no value was bound) is left as it is and refused by the physical planner.

use super::{AttributionTable, ATTRIBUTE_CHANNELS};
use super::args::Params;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, DFSchemaRef};
use datafusion::datasource::provider_as_source;
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, Extension, LogicalPlan, LogicalPlanBuilder, UserDefinedLogicalNodeCore};
use datafusion::optimizer::AnalyzerRule;
use lookback_storage::Db;
use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

/// `attribute(...)` or `attribute_channels(...)` with arguments not yet constant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AttributeCall {
    function: String,
    /// Positional arguments (None: not given), as [`Params::parse`] takes them.
    args: Vec<Option<Expr>>,
    schema: DFSchemaRef,
}

impl AttributeCall {
    /// The logical plan of a call of `function` with `args`: the node when an argument holds
    /// a placeholder, otherwise the scan of its result.
    pub fn plan(db: &Arc<Db>, function: &str, args: Vec<Option<Expr>>) -> Result<LogicalPlan> {
        if !args.iter().flatten().any(has_placeholder) {
            return scan(db, function, &args);
        }
        let table = AttributionTable::schema_of(function == ATTRIBUTE_CHANNELS);
        let schema = Arc::new(DFSchema::try_from_qualified_schema(function, &table)?);
        let node = AttributeCall { function: function.to_string(), args, schema };
        Ok(LogicalPlan::Extension(Extension { node: Arc::new(node) }))
    }
}

fn has_placeholder(expr: &Expr) -> bool {
    expr.exists(|e| Ok(matches!(e, Expr::Placeholder(_)))).unwrap_or(true)
}

/// The scan of `function(args)` (arguments folded to constants).
fn scan(db: &Arc<Db>, function: &str, args: &[Option<Expr>]) -> Result<LogicalPlan> {
    let params = Params::parse(function, args)?;
    let table = AttributionTable::new(db.clone(), params, function == ATTRIBUTE_CHANNELS);
    LogicalPlanBuilder::scan(function, provider_as_source(Arc::new(table)), None)?.build()
}

// Derived PartialOrd is not available (DFSchema has no order); calls are ordered by what they
// compute, which is all an optimizer's ordering of nodes needs.
impl PartialOrd for AttributeCall {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        match self.function.partial_cmp(&other.function) {
            Some(Ordering::Equal) => self.args.partial_cmp(&other.args),
            order => order,
        }
    }
}

impl UserDefinedLogicalNodeCore for AttributeCall {
    fn name(&self) -> &str {
        "AttributeCall"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        self.args.iter().flatten().cloned().collect()
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let args: Vec<String> = self.args.iter().map(|a| a.as_ref().map_or("DEFAULT".into(), |e| e.to_string())).collect();
        write!(f, "AttributeCall: {}({})", self.function, args.join(", "))
    }

    fn with_exprs_and_inputs(&self, exprs: Vec<Expr>, inputs: Vec<LogicalPlan>) -> Result<Self> {
        assert!(inputs.is_empty(), "an attribution call has no inputs");
        let given = self.args.iter().filter(|a| a.is_some()).count();
        assert_eq!(exprs.len(), given, "one expression per given argument");
        let mut exprs = exprs.into_iter();
        let args = self.args.iter().map(|a| a.as_ref().and_then(|_| exprs.next())).collect();
        Ok(AttributeCall { function: self.function.clone(), args, schema: self.schema.clone() })
    }
}

/// Replaces each [`AttributeCall`] whose arguments are known by the scan of its result.
pub struct ResolveAttributeCalls {
    pub db: Arc<Db>,
}

impl fmt::Debug for ResolveAttributeCalls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ResolveAttributeCalls")
    }
}

impl AnalyzerRule for ResolveAttributeCalls {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        plan.transform_up_with_subqueries(|plan| {
            let LogicalPlan::Extension(Extension { node }) = &plan else { return Ok(Transformed::no(plan)) };
            let Some(call) = node.as_any().downcast_ref::<AttributeCall>() else { return Ok(Transformed::no(plan)) };
            if call.args.iter().flatten().any(has_placeholder) {
                return Ok(Transformed::no(plan));
            }
            scan(&self.db, &call.function, &call.args).map(Transformed::yes)
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "resolve_attribute_calls"
    }
}
