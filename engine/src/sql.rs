//! The SQL session the Postgres endpoint serves: every storage table (through
//! `lookback-query`) plus `pg_catalog` and `information_schema` for client metadata queries,
//! and the scoring functions over the data directory's models.

use anyhow::{anyhow, Result};
use datafusion::prelude::SessionContext;
use lookback_scoring::ModelRegistry;
use lookback_storage::Db;
use std::sync::Arc;

pub fn session(db: &Arc<Db>, models: &Arc<ModelRegistry>) -> Result<SessionContext> {
    let ctx = lookback_query::session_context(db, lookback_wire::pg::DATABASE_NAME)?;
    lookback_query::scoring::register(&ctx, models.clone())?;
    lookback_wire::pg::install_catalog(&ctx).map_err(|e| anyhow!(e))?;
    Ok(ctx)
}
