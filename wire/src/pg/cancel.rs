//! Cancel requests that stop a query while its rows are being produced.
//!
//! Why: the protocol library races a query against its cancel signal only while the query is
//! planned; the rows are computed later, while they are sent, and a cancel request then found
//! nothing to stop (a long aggregation ran to the end). Here every connection has a
//! [`CancelFlag`], found by the `(pid, secret key)` of its BackendKeyData, and the row stream
//! of each of its queries ends with `57014 canceling statement due to user request` as soon
//! as a cancel request names it. Ending the stream drops DataFusion's execution, which stops
//! its tasks. A cancel that arrives between queries is ignored, as in PostgreSQL.

use async_trait::async_trait;
use datafusion_postgres::pgwire::api::cancel::{CancelHandler, DefaultCancelHandler};
use datafusion_postgres::pgwire::api::results::{QueryResponse, Response};
use datafusion_postgres::pgwire::api::ClientInfo;
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError};
use datafusion_postgres::pgwire::messages::cancel::CancelRequest;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::Notify;

/// Cancel requests received for one connection; queries remember the count they started at.
#[derive(Default)]
pub(super) struct CancelFlag {
    cancels: AtomicU64,
    notify: Notify,
}

impl CancelFlag {
    pub(super) fn count(&self) -> u64 {
        self.cancels.load(Ordering::Acquire)
    }

    fn cancel(&self) {
        self.cancels.fetch_add(1, Ordering::AcqRel);
        self.notify.notify_waiters();
    }

    /// Resolves once a cancel request arrives after the count was `start`.
    async fn cancelled_after(&self, start: u64) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count() > start {
                return;
            }
            notified.await;
        }
    }
}

type Key = (i32, bytes::Bytes);

/// Every open connection's flag, by its BackendKeyData. Weak: a closed connection's flag goes
/// with its session, and its entry is swept on the next registration.
#[derive(Default)]
pub(super) struct Cancels {
    flags: Mutex<HashMap<Key, Weak<CancelFlag>>>,
}

impl Cancels {
    /// The flag of `client`'s connection (registered on its first query).
    pub(super) fn flag<C: ClientInfo + ?Sized>(&self, client: &C) -> Arc<CancelFlag> {
        let flag = client.session_extensions().get_or_insert_with(CancelFlag::default);
        let (pid, secret) = client.pid_and_secret_key();
        let key = (pid, secret.to_bytes());
        let mut flags = self.flags.lock().unwrap_or_else(|e| e.into_inner());
        if !flags.get(&key).is_some_and(|w| w.upgrade().is_some_and(|f| Arc::ptr_eq(&f, &flag))) {
            flags.retain(|_, w| w.strong_count() > 0);
            flags.insert(key, Arc::downgrade(&flag));
        }
        flag
    }

    fn cancel(&self, request: &CancelRequest) {
        let key = (request.pid, request.secret_key.to_bytes());
        let flag = self.flags.lock().unwrap_or_else(|e| e.into_inner()).get(&key).and_then(Weak::upgrade);
        if let Some(flag) = flag {
            flag.cancel();
        }
    }
}

/// Makes the row streams of `response` end with 57014 when `flag` is cancelled after `start`.
pub(super) fn cancellable(response: Response, flag: &Arc<CancelFlag>, start: u64) -> Response {
    let Response::Query(query) = response else { return response };
    let command_tag = query.command_tag().to_string();
    let QueryResponse { row_schema, data_rows, .. } = query;
    let until = {
        let flag = flag.clone();
        async move { flag.cancelled_after(start).await }
    };
    let after = {
        let flag = flag.clone();
        futures::stream::once(async move { flag.count() > start }).filter_map(|cancelled| async move {
            cancelled.then(|| Err(PgWireError::UserError(Box::new(canceled()))))
        })
    };
    let rows = data_rows.take_until(until).chain(after);
    let mut response = QueryResponse::new(row_schema, rows);
    response.set_command_tag(&command_tag);
    Response::Query(response)
}

fn canceled() -> ErrorInfo {
    ErrorInfo::new("ERROR".into(), "57014".into(), "canceling statement due to user request".into())
}

/// The protocol library's handler (stops a query while it is planned) plus ours.
pub(super) struct CancelBoth {
    pub default: DefaultCancelHandler,
    pub cancels: Arc<Cancels>,
}

#[async_trait]
impl CancelHandler for CancelBoth {
    async fn on_cancel_request(&self, request: CancelRequest) {
        self.cancels.cancel(&request);
        self.default.on_cancel_request(request).await;
    }
}
