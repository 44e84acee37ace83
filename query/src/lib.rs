//! Lookback's SQL layer: DataFusion plans and runs queries over Lookback storage.
//!
//! Why DataFusion: a SQL planner, optimizer and vectorized executor are not our core; what is
//! ours is how a scan reads segments (zone maps, bitmaps, the snapshot at one LSN) and the
//! attribution operators. So storage is exposed as `TableProvider`s ([`scan`]) whose rows
//! arrive as Arrow ([`arrow`]), and everything above the scan is DataFusion's.

pub mod arrow;
pub mod attribute_fn;
pub mod attribution;
pub mod bitmap_filter;
pub mod code_aggregate;
pub mod copy;
pub mod date_trunc;
pub mod ddl;
pub mod error;
pub mod insert;
pub mod memtable_runs;
pub mod prune;
pub mod scan;
pub mod scoring;
pub mod touchpoint_join;
pub mod window_funnel;

use datafusion::common::TableReference;
use datafusion::execution::SessionStateBuilder;
use datafusion::error::{DataFusionError, Result};
use datafusion::prelude::{SessionConfig, SessionContext};
use lookback_storage::Db;
pub use error::SqlError;
use scan::LookbackTable;
use std::sync::Arc;

/// A session over every table of `db` (schema `public` of catalog `database`), each read at a
/// fresh snapshot per query.
pub fn session_context(db: &Arc<Db>, database: &str) -> Result<SessionContext> {
    let config = SessionConfig::new()
        .with_information_schema(true)
        .with_target_partitions(scan::SCAN_PARTITIONS_MAX)
        .with_default_catalog_and_schema(database, "public");
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        // GROUP BY a text column on the segment dictionary codes.
        .with_physical_optimizer_rule(Arc::new(code_aggregate::CodeAggregation))
        // attribute(...) and attribute_channels(...) in FROM, with named arguments.
        .with_relation_planners(vec![Arc::new(attribute_fn::AttributionPlanner { db: db.clone() })])
        // ... and with bind parameters in their arguments, once the values are bound.
        .with_analyzer_rule(Arc::new(attribute_fn::call::ResolveAttributeCalls { db: db.clone() }))
        .build();
    let mut ctx = SessionContext::new_with_state(state);
    // JSON in text columns (`properties`): json_get_str(...) and friends, and the `->`, `->>`
    // and `?` operators rewritten to them.
    datafusion_functions_json::register_all(&mut ctx)?;
    // date_trunc with an arithmetic path for UTC timestamps (every Lookback timestamp).
    ctx.register_udf(date_trunc::date_trunc());
    ctx.register_udaf(window_funnel::window_funnel_udaf());
    register_tables(&ctx, db)?;
    Ok(ctx)
}

/// Registers (or re-registers) every table of `db` in `ctx`'s default schema.
pub fn register_tables(ctx: &SessionContext, db: &Arc<Db>) -> Result<()> {
    for name in db.table_names() {
        let schema = db
            .schema(&name)
            .ok_or_else(|| DataFusionError::Internal(format!("table {name} vanished while registering")))?;
        ctx.register_table(TableReference::bare(name.as_str()), Arc::new(LookbackTable::new(db.clone(), &name, schema)))?;
    }
    Ok(())
}
