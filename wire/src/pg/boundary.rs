//! The Postgres endpoint's panic boundary: a panic while a connection's messages are decoded,
//! a statement planned or its rows produced is caught here, logged, counted
//! ([`PgServerStats::panics_caught`]) and answered with SQLSTATE `XX000`, as PostgreSQL
//! answers an internal error: the statement fails, or for a panic outside a statement (the
//! protocol library's message decoder) the connection ends with a FATAL error.
//!
//! Why: the protocol library and DataFusion are large, and fuzzing found panics in them
//! (pgwire 0.41.1 reads a Parse message's fields past the length it declares and panics at
//! the end of its buffer). Unchecked, a panic unwinds the connection's task, and the accept
//! loop drops it without a word: the client's connection vanishes mid-statement and the
//! operator sees nothing. Panics in our own code are still bugs to fix; the boundary makes
//! every one visible and keeps the other connections and the server up. What it is not: a
//! way to continue after corruption: state a panic leaves behind is the statement's (its
//! plan, its row stream), which is dropped with it.

use datafusion_postgres::pgwire::api::results::{CopyResponse, Response};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use futures::{FutureExt, StreamExt};
use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};

/// What one Postgres endpoint (or one [`super::LocalSession`]'s handlers) has seen.
#[derive(Debug, Default)]
pub struct PgServerStats {
    panics_caught: AtomicU64,
}

impl PgServerStats {
    /// Panics caught at the boundary, since start.
    pub fn panics_caught(&self) -> u64 {
        self.panics_caught.load(Ordering::SeqCst)
    }
}

/// The message of a caught panic's payload (a `&str` or `String`, as `panic!` makes them).
pub fn panic_message(panic: &(dyn Any + Send)) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(s), _) => s.to_string(),
        (_, Some(s)) => s.clone(),
        _ => "a panic without a message".to_string(),
    }
}

/// Logs and counts a panic caught `during` an activity; the error to answer it with.
pub(super) fn caught(
    stats: &PgServerStats,
    panic: &(dyn Any + Send),
    during: &str,
    severity: &str,
) -> ErrorInfo {
    let message = panic_message(panic);
    stats.panics_caught.fetch_add(1, Ordering::SeqCst);
    tracing::error!(during, panic = %message, "panic caught at the pg endpoint's boundary (a bug)");
    let mut info = ErrorInfo::new(
        severity.into(),
        "XX000".into(),
        format!("internal error while {during}"),
    );
    info.detail = Some(message);
    info
}

/// Runs a statement's planning (and, for the statements Lookback answers itself, its
/// execution): a panic becomes the statement's `XX000` error.
pub(super) async fn statement<T>(
    stats: &PgServerStats,
    work: impl Future<Output = PgWireResult<T>>,
) -> PgWireResult<T> {
    match AssertUnwindSafe(work).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => Err(PgWireError::UserError(Box::new(caught(
            stats,
            panic.as_ref(),
            "running the statement",
            "ERROR",
        )))),
    }
}

/// `response` with its row or COPY data stream guarded: a panic while producing the rows
/// ends the stream with an `XX000` error instead of unwinding the connection.
pub(super) fn rows(stats: &std::sync::Arc<PgServerStats>, response: Response) -> Response {
    match response {
        Response::Query(mut query) => {
            let data_rows =
                std::mem::replace(&mut query.data_rows, Box::pin(futures::stream::empty()));
            query.data_rows = Box::pin(guard(stats, data_rows));
            Response::Query(query)
        }
        Response::CopyOut(copy) => Response::CopyOut(guard_copy(stats, copy)),
        Response::CopyBoth(copy) => Response::CopyBoth(guard_copy(stats, copy)),
        other => other,
    }
}

/// In place, not through `CopyResponse::new`: that would append a second binary trailer.
fn guard_copy(stats: &std::sync::Arc<PgServerStats>, mut copy: CopyResponse) -> CopyResponse {
    let data = std::mem::replace(&mut copy.data_stream, Box::pin(futures::stream::empty()));
    copy.data_stream = Box::pin(guard(stats, data));
    copy
}

fn guard<T: Send + 'static>(
    stats: &std::sync::Arc<PgServerStats>,
    stream: impl futures::Stream<Item = PgWireResult<T>> + Send + 'static,
) -> impl futures::Stream<Item = PgWireResult<T>> + Send + 'static {
    let stats = stats.clone();
    AssertUnwindSafe(stream)
        .catch_unwind()
        .map(move |item| match item {
            Ok(item) => item,
            Err(panic) => Err(PgWireError::UserError(Box::new(caught(
                &stats,
                panic.as_ref(),
                "producing the rows",
                "ERROR",
            )))),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion_postgres::pgwire::api::results::{FieldInfo, QueryResponse};
    use datafusion_postgres::pgwire::messages::data::DataRow;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_panic_in_a_statement_or_its_rows_becomes_xx000() {
        let stats = Arc::new(PgServerStats::default());
        let failed = statement(&stats, async { panic!("planner bug") as PgWireResult<()> }).await;
        let Err(PgWireError::UserError(info)) = failed else {
            panic!("a caught panic is an error: {failed:?}")
        };
        assert_eq!(
            (info.code.as_str(), info.detail.as_deref()),
            ("XX000", Some("planner bug"))
        );
        let rows = futures::stream::iter([0, 1]).map(|i| {
            if i == 1 {
                panic!("row bug")
            } else {
                Ok(DataRow::new(Default::default(), 0))
            }
        });
        let response = rows_of(
            &stats,
            QueryResponse::new(Arc::new(Vec::<FieldInfo>::new()), rows),
        )
        .await;
        assert_eq!(
            response.len(),
            2,
            "the row before the panic, then the error"
        );
        assert!(matches!(&response[1], Err(PgWireError::UserError(info)) if info.code == "XX000"));
        assert_eq!(stats.panics_caught(), 2);
    }

    async fn rows_of(
        stats: &Arc<PgServerStats>,
        query: QueryResponse,
    ) -> Vec<PgWireResult<DataRow>> {
        let Response::Query(guarded) = rows(stats, Response::Query(query)) else {
            panic!("still a query response")
        };
        guarded.data_rows.collect().await
    }
}
