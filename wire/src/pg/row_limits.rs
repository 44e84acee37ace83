//! Row counts a client names (Execute's `max_rows`, `FETCH n`) kept from sizing the server's
//! memory.
//!
//! Why: the protocol library's `Portal::fetch(n)` reserves room for `n` rows before reading
//! one (`Vec::with_capacity(n)`, 40 bytes a row). An Execute with `max_rows` 2^31 - 1 asked
//! for 80 GB: the allocation failed and aborted the whole process, every connection with it
//! (found by the `pgwire` fuzz target); `FETCH 2000000000 FROM c` did the same over SQL.
//! - Execute: `max_rows` above [`EXECUTE_ROWS_MAX`] is lowered to it. The portal is then
//!   suspended after that many rows (PortalSuspended) and the client executes it again for
//!   the next ones, as it does for any suspended portal; only results of more rows than that
//!   are affected. `max_rows` below 0 means no limit, as in PostgreSQL.
//! - `FETCH n` above [`FETCH_CHUNK_ROWS`] is read from the cursor in chunks of that many and
//!   answered whole: exactly the rows PostgreSQL would return, held once (as the library
//!   holds every fetched row), and no reservation beyond a chunk.

use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{FetchDirection, Statement, Value};
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::pgwire::api::results::{QueryResponse, Response};
use datafusion_postgres::pgwire::api::store::PortalStore;
use datafusion_postgres::pgwire::api::ClientInfo;
use datafusion_postgres::pgwire::error::PgWireResult;
use datafusion_postgres::QueryHook;
use futures::StreamExt;

/// The most rows one Execute message returns before the portal is suspended.
pub const EXECUTE_ROWS_MAX: i32 = 65_536;
/// `FETCH n` reads its cursor this many rows at a time.
pub const FETCH_CHUNK_ROWS: usize = 65_536;

/// The `max_rows` to run an Execute with: 0 (no limit) for 0 and below, as PostgreSQL reads
/// them, else at most [`EXECUTE_ROWS_MAX`].
pub(super) fn execute_rows(max_rows: i32) -> i32 {
    if max_rows <= 0 {
        0
    } else {
        max_rows.min(EXECUTE_ROWS_MAX)
    }
}

/// `FETCH [FORWARD] n` with `n` above [`FETCH_CHUNK_ROWS`]: its cursor's name and `n`.
fn large_fetch(statement: &Statement) -> Option<(&str, usize)> {
    let Statement::Fetch {
        name, direction, ..
    } = statement
    else {
        return None;
    };
    let limit = match direction {
        FetchDirection::Count { limit } | FetchDirection::Forward { limit: Some(limit) } => limit,
        _ => return None,
    };
    let Value::Number(digits, _) = &limit.value else {
        return None;
    };
    let rows: usize = digits.parse().ok()?;
    (rows > FETCH_CHUNK_ROWS).then_some((name.value.as_str(), rows))
}

/// Answers large `FETCH n` statements in chunks; every other statement (a missing cursor
/// too) goes on to the cursor hook after it.
pub(super) struct ChunkedFetch;

impl ChunkedFetch {
    async fn run(
        &self,
        statement: &Statement,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        let (name, rows) = large_fetch(statement)?;
        let portal = client.portal_store().get_portal(name)?.value()?.clone();
        let mut first = match portal.fetch(FETCH_CHUNK_ROWS).await {
            Ok(fetched) => fetched,
            Err(e) => return Some(Err(e)),
        };
        let (schema, tag) = (
            first.response.row_schema(),
            first.response.command_tag().to_string(),
        );
        let mut out = Vec::new();
        loop {
            while let Some(row) = first.response.data_rows().next().await {
                out.push(row);
            }
            if !first.suspended || out.len() >= rows {
                break;
            }
            first = match portal.fetch(FETCH_CHUNK_ROWS.min(rows - out.len())).await {
                Ok(fetched) => fetched,
                Err(e) => return Some(Err(e)),
            };
        }
        let mut response = QueryResponse::new(schema, futures::stream::iter(out));
        response.set_command_tag(&tag);
        Some(Ok(Response::Query(response)))
    }
}

#[async_trait]
impl QueryHook for ChunkedFetch {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        self.run(statement, client).await
    }

    /// The cursor hook after this one describes FETCH at Parse.
    async fn handle_extended_parse_query(
        &self,
        _: &Statement,
        _: &SessionContext,
        _: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        None
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        _ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        self.run(statement, client).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn statement(sql: &str) -> Statement {
        Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .expect("valid SQL")
            .remove(0)
    }

    #[test]
    fn execute_rows_follow_postgres_and_stay_bounded() {
        assert_eq!(execute_rows(0), 0);
        assert_eq!(
            execute_rows(-1),
            0,
            "PostgreSQL reads max_rows <= 0 as no limit"
        );
        assert_eq!(execute_rows(50), 50);
        assert_eq!(execute_rows(i32::MAX), EXECUTE_ROWS_MAX);
    }

    #[test]
    fn only_fetches_above_a_chunk_are_taken() {
        assert_eq!(
            large_fetch(&statement("FETCH 2000000000 FROM c")),
            Some(("c", 2_000_000_000))
        );
        assert_eq!(
            large_fetch(&statement("FETCH FORWARD 70000 FROM c")),
            Some(("c", 70_000))
        );
        assert_eq!(large_fetch(&statement("FETCH 10 FROM c")), None);
        assert_eq!(large_fetch(&statement("FETCH ALL FROM c")), None);
        assert_eq!(large_fetch(&statement("SELECT 1")), None);
    }
}
