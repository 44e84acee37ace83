//! The SQL session the Postgres endpoint serves: every storage table (through
//! `lookback-query`) plus `pg_catalog` and `information_schema` for client metadata queries,
//! and the scoring functions over the data directory's models.

use anyhow::{anyhow, Result};
use datafusion::prelude::SessionContext;
use lookback_scoring::ModelRegistry;
use lookback_storage::Db;
use std::sync::Arc;

pub fn session(db: &Arc<Db>, models: &Arc<ModelRegistry>) -> Result<SessionContext> {
    lookback_wire::pg::session(db, models).map_err(|e| anyhow!(e))
}
