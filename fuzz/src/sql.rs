//! The `sql` target: the input as SQL text (UTF-8, lossy) through the SQL entry point of the
//! Postgres endpoint, [`lookback_wire::pg::LocalSession`]: the server's statement hooks (DDL,
//! COPY, SET/SHOW, transactions), then DataFusion over the served session (our catalog and
//! `TableProvider`s over storage, `attribute(...)`, scoring, `pg_catalog`), with the server's
//! error-to-SQLSTATE mapping. The data is the fixture's few hundred events ([`crate::fixture`]).
//!
//! Checks: no panic escapes (`catch_unwind` around the whole call, and [`crate::panics`] for
//! the runtime's threads: a panic the endpoint's boundary caught is answered XX000 and
//! reported, any other fails); every error carries a SQLSTATE of five digits or capitals and
//! a message. Each result is read up to [`SQL_ROWS_MAX`] rows and the whole
//! input is bounded by [`SQL_TIMEOUT_MS`]: a slow query is not a finding, a panic is.
//!
//! Each input gets its own copy of the served session's state (configuration, prepared
//! statements) over the same catalog and data, so a `SET datafusion...` in one input cannot
//! change what the next one does and a failing input replays alone.

use crate::driver;
use crate::fixture::Shared;
use crate::pgwire::backend::is_sqlstate;
use datafusion::prelude::SessionContext;
use lookback_wire::pg::{LocalSession, Outcome};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

/// Rows read from each result before the rest is dropped unread.
pub const SQL_ROWS_MAX: u64 = 10_000;
/// Time one input may take (all its statements) before it is dropped.
pub const SQL_TIMEOUT_MS: u64 = 2_000;

static FIXTURE: Shared = Shared::new();

pub fn sql(data: &[u8]) {
    let text = String::from_utf8_lossy(data).into_owned();
    let fixture = FIXTURE.get();
    let ctx = Arc::new(SessionContext::new_with_state(fixture.ctx.state()));
    let mut session = LocalSession::new(
        ctx,
        fixture.db.clone(),
        fixture.models.clone(),
        fixture.stats.clone(),
    );
    let limit = Duration::from_millis(SQL_TIMEOUT_MS);
    // On the fixture's threads, where the panic hook counts; the task's own panic comes back
    // as its JoinError, the calling thread's (block_on's) through catch_unwind.
    let task = fixture.runtime.spawn(async move {
        tokio::time::timeout(limit, session.simple_query(&text, SQL_ROWS_MAX)).await
    });
    let run = std::panic::catch_unwind(AssertUnwindSafe(|| fixture.runtime.block_on(task)));
    let outcomes = match run {
        Ok(Ok(Ok(outcomes))) => outcomes,
        Ok(Ok(Err(_elapsed))) => Vec::new(),
        Ok(Err(join)) => match join.try_into_panic() {
            Ok(panic) => panic!(
                "the SQL entry point panicked: {}",
                driver::panic_message(panic.as_ref())
            ),
            Err(join) => panic!("the SQL entry point's task ended without an answer: {join}"),
        },
        Err(panic) => panic!(
            "the SQL entry point panicked: {}",
            driver::panic_message(panic.as_ref())
        ),
    };
    fixture.assert_no_escaped_panic("sql");
    for outcome in outcomes {
        if let Outcome::Error(info) = outcome {
            assert!(
                is_sqlstate(info.code.as_bytes()),
                "an error without a valid SQLSTATE: {:?} ({})",
                info.code,
                info.message
            );
            assert!(
                !info.message.is_empty(),
                "an error without a message (SQLSTATE {})",
                info.code
            );
        }
    }
}
