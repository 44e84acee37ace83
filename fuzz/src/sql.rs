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
//! Each input starts from the served session's state (configuration, registered functions)
//! over the same catalog and data, and from a fresh client (no prepared statements, portals,
//! parameters or open transaction), so a `SET datafusion...` in one input cannot change what
//! the next one does and a failing input replays alone. The session's handlers are built once
//! per fixture and reused ([`LocalSession::reset_client`]): building them parses the
//! compatibility layer's rewrite templates, which took 40% of the target's time when each
//! input built its own.

use crate::driver;
use crate::fixture::{Fixture, Shared};
use crate::pgwire::backend::is_sqlstate;
use datafusion::prelude::SessionContext;
use lookback_wire::pg::{LocalSession, Outcome};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Rows read from each result before the rest is dropped unread.
pub const SQL_ROWS_MAX: u64 = 10_000;
/// Time one input may take (all its statements) before it is dropped.
pub const SQL_TIMEOUT_MS: u64 = 2_000;

static FIXTURE: Shared = Shared::new();
static SESSION: Mutex<Option<Reused>> = Mutex::new(None);

/// The session the target's inputs run in, over one fixture.
struct Reused {
    fixture: Arc<Fixture>,
    /// The context the session's handlers plan in; its state is reset before each input.
    ctx: Arc<SessionContext>,
    /// Taken while an input runs; lost if it panicked (then rebuilt).
    session: Option<LocalSession>,
}

impl Reused {
    fn new(fixture: Arc<Fixture>) -> Reused {
        let ctx = Arc::new(SessionContext::new_with_state(fixture.ctx.state()));
        Reused { fixture, ctx, session: None }
    }

    /// The session, built on first use and after a panic lost it.
    fn take(&mut self) -> LocalSession {
        self.session.take().unwrap_or_else(|| {
            LocalSession::new(
                self.ctx.clone(),
                self.fixture.db.clone(),
                self.fixture.models.clone(),
                self.fixture.stats.clone(),
            )
        })
    }
}

pub fn sql(data: &[u8]) {
    let text = String::from_utf8_lossy(data).into_owned();
    let (fixture, outcomes) = run(text);
    fixture.assert_no_escaped_panic("sql");
    check(outcomes);
}

/// Runs `text` as the target does (on the target's fixture, in its reused session) and
/// returns what each statement answered. Panics (the target's failure) if the entry point
/// panicked or its task ended without an answer; an input over [`SQL_TIMEOUT_MS`] answers
/// nothing.
pub fn run(text: String) -> (Arc<Fixture>, Vec<Outcome>) {
    let fixture = FIXTURE.get();
    let mut slot = SESSION.lock().unwrap_or_else(|e| e.into_inner());
    if slot.as_ref().is_some_and(|r| !Arc::ptr_eq(&r.fixture, &fixture)) {
        *slot = None;
    }
    let reused = slot.get_or_insert_with(|| Reused::new(fixture.clone()));
    *reused.ctx.state_ref().write() = fixture.ctx.state();
    let mut session = reused.take();
    session.reset_client();
    let limit = Duration::from_millis(SQL_TIMEOUT_MS);
    // On the fixture's threads, where the panic hook counts; the task's own panic comes back
    // as its JoinError, the calling thread's (block_on's) through catch_unwind.
    let task = fixture.runtime.spawn(async move {
        let answered = tokio::time::timeout(limit, session.simple_query(&text, SQL_ROWS_MAX)).await;
        (session, answered)
    });
    let run = std::panic::catch_unwind(AssertUnwindSafe(|| fixture.runtime.block_on(task)));
    let outcomes = match run {
        Ok(Ok((session, answered))) => {
            reused.session = Some(session);
            answered.unwrap_or_default()
        }
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
    (fixture, outcomes)
}

/// Every error carries a valid SQLSTATE and a message.
fn check(outcomes: Vec<Outcome>) {
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
