//! A connection's query path without its socket: SQL text goes through the same handlers the
//! Postgres endpoint runs for a Query message (the statement hooks, DataFusion over the
//! served session, cancellable row streams) and errors get the same SQLSTATEs
//! ([`super::SqlStates`]), but results come back as values instead of bytes.
//!
//! Why: the `sql` fuzz target (and any test that wants the server's answer to a statement
//! without a client library) must reach exactly what a client reaches; building a second
//! path beside the server's would test that path instead. What it is not: a session that
//! speaks the protocol (startup, extended query, COPY data): the `pgwire` target covers those
//! over TCP.

use super::{Handlers, PgServerStats, SqlStates};
use datafusion::prelude::SessionContext;
use datafusion_postgres::pgwire::api::query::SimpleQueryHandler;
use datafusion_postgres::pgwire::api::results::Response;
use datafusion_postgres::pgwire::api::ErrorHandler;
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError};
use datafusion_postgres::pgwire::messages::response::CommandComplete;
use datafusion_postgres::pgwire::api::store::MemPortalStore;
use datafusion_postgres::pgwire::api::{
    ClientInfo, ClientPortalStore, PgWireConnectionState, SessionExtensions, METADATA_USER,
};
use datafusion_postgres::pgwire::messages::response::TransactionStatus;
use datafusion_postgres::pgwire::messages::startup::SecretKey;
use datafusion_postgres::pgwire::messages::{PgWireBackendMessage, ProtocolVersion};
use futures::StreamExt;
use std::collections::HashMap;
use lookback_scoring::ModelRegistry;
use lookback_storage::Db;
use std::sync::Arc;

/// What one statement of a simple query produced, as a client would read it.
#[derive(Debug)]
pub enum Outcome {
    /// A result set: how many rows were read (at most the caller's limit).
    Rows(u64),
    /// A command tag (INSERT, CREATE TABLE, SET, BEGIN...).
    Command(String),
    /// COPY FROM STDIN started (no data follows here) or COPY TO STDOUT sent this many rows.
    Copy(u64),
    Empty,
    Error(Box<ErrorInfo>),
}

/// One client's session over the served `SessionContext`.
pub struct LocalSession {
    handlers: Handlers,
    client: LocalClient,
}

impl LocalSession {
    /// A session whose caught panics ([`PgServerStats::panics_caught`]) count into `stats`.
    pub fn new(
        ctx: Arc<SessionContext>,
        db: Arc<Db>,
        models: Arc<ModelRegistry>,
        stats: Arc<PgServerStats>,
    ) -> LocalSession {
        LocalSession {
            handlers: Handlers::new(ctx, db, models, stats),
            client: LocalClient::new(),
        }
    }

    /// Forgets the client's side of the session (parameters, prepared statements and
    /// portals, transaction status), as a new connection to the same server would start; the
    /// `SessionContext`'s own state is the caller's to reset. Why: building the handlers
    /// parses the compatibility layer's rewrite templates, which costs more than planning a
    /// short statement, so a caller running many independent inputs reuses one session.
    pub fn reset_client(&mut self) {
        self.client = LocalClient::new();
    }

    /// Runs `sql` as a Query message would, reading at most `rows_max` rows of each result
    /// (the rest is dropped unread, which stops its execution). A statement that fails ends
    /// the list with its error, as the server stops at the first failing statement.
    pub async fn simple_query(&mut self, sql: &str, rows_max: u64) -> Vec<Outcome> {
        let responses = match SimpleQueryHandler::do_query(
            &*self.handlers.session,
            &mut self.client,
            sql,
        )
        .await
        {
            Ok(responses) => responses,
            Err(e) => return vec![Outcome::Error(Box::new(self.error_info(e)))],
        };
        let mut out = Vec::with_capacity(responses.len());
        for response in responses {
            out.push(self.read(response, rows_max).await);
        }
        out
    }

    async fn read(&self, response: Response, rows_max: u64) -> Outcome {
        match response {
            Response::EmptyQuery => Outcome::Empty,
            Response::Execution(tag)
            | Response::TransactionStart(tag)
            | Response::TransactionEnd(tag) => Outcome::Command(CommandComplete::from(tag).tag),
            Response::Error(info) => Outcome::Error(info),
            Response::Query(query) => match drain(query.data_rows, rows_max).await {
                Ok(rows) => Outcome::Rows(rows),
                Err(e) => Outcome::Error(Box::new(self.error_info(e))),
            },
            Response::CopyOut(copy) | Response::CopyBoth(copy) => {
                match drain(copy.data_stream, rows_max).await {
                    Ok(rows) => Outcome::Copy(rows),
                    Err(e) => Outcome::Error(Box::new(self.error_info(e))),
                }
            }
            Response::CopyIn(_) => Outcome::Copy(0),
        }
    }

    /// The ErrorResponse the server would send for `error`.
    pub fn error_info(&self, mut error: PgWireError) -> ErrorInfo {
        SqlStates.on_error(&self.client, &mut error);
        ErrorInfo::from(error)
    }
}

async fn drain<T>(
    mut stream: impl futures::Stream<Item = Result<T, PgWireError>> + Unpin,
    rows_max: u64,
) -> Result<u64, PgWireError> {
    let mut rows = 0u64;
    while rows < rows_max {
        match stream.next().await {
            Some(row) => {
                row?;
                rows += 1;
            }
            None => break,
        }
    }
    Ok(rows)
}

/// A prepared statement as the served session keeps it in a portal store: the SQL text and,
/// once planned, its parsed statement and logical plan.
type PreparedStatement = (
    String,
    Option<(datafusion::sql::sqlparser::ast::Statement, datafusion::logical_expr::LogicalPlan)>,
);

/// The connection state the handlers read and write (user, transaction status, prepared
/// statements), without a socket: messages the handlers send on their own (notices) are
/// dropped, as results come back as [`Response`]s. The protocol library has such a client only
/// in its debug builds (`datafusion_postgres::testing`), which a release build cannot use.
pub(crate) struct LocalClient {
    metadata: HashMap<String, String>,
    portal_store: MemPortalStore<PreparedStatement>,
    session_extensions: SessionExtensions,
    transaction_status: TransactionStatus,
}

impl LocalClient {
    pub(crate) fn new() -> LocalClient {
        let metadata = HashMap::from([(METADATA_USER.to_string(), "lookback".to_string())]);
        LocalClient {
            metadata,
            portal_store: MemPortalStore::new(),
            session_extensions: SessionExtensions::new(),
            transaction_status: TransactionStatus::Idle,
        }
    }
}

impl ClientInfo for LocalClient {
    fn socket_addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], 0))
    }

    fn is_secure(&self) -> bool {
        false
    }

    fn protocol_version(&self) -> ProtocolVersion {
        ProtocolVersion::PROTOCOL3_0
    }

    fn set_protocol_version(&mut self, _version: ProtocolVersion) {}

    fn pid_and_secret_key(&self) -> (i32, SecretKey) {
        (0, SecretKey::I32(0))
    }

    fn set_pid_and_secret_key(&mut self, _pid: i32, _secret_key: SecretKey) {}

    fn state(&self) -> PgWireConnectionState {
        PgWireConnectionState::ReadyForQuery
    }

    fn set_state(&mut self, _new_state: PgWireConnectionState) {}

    fn transaction_status(&self) -> TransactionStatus {
        self.transaction_status
    }

    fn set_transaction_status(&mut self, new_status: TransactionStatus) {
        self.transaction_status = new_status;
    }

    fn metadata(&self) -> &HashMap<String, String> {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut HashMap<String, String> {
        &mut self.metadata
    }

    fn session_extensions(&self) -> &SessionExtensions {
        &self.session_extensions
    }

    fn sni_server_name(&self) -> Option<&str> {
        None
    }

    fn client_certificates<'a>(&self) -> Option<&[rustls_pki_types::CertificateDer<'a>]> {
        None
    }
}

impl ClientPortalStore for LocalClient {
    type PortalStore = MemPortalStore<PreparedStatement>;

    fn portal_store(&self) -> &Self::PortalStore {
        &self.portal_store
    }
}

impl futures::Sink<PgWireBackendMessage> for LocalClient {
    type Error = std::io::Error;

    fn poll_ready(self: std::pin::Pin<&mut Self>, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn start_send(self: std::pin::Pin<&mut Self>, _item: PgWireBackendMessage) -> Result<(), Self::Error> {
        Ok(())
    }

    fn poll_flush(self: std::pin::Pin<&mut Self>, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_close(self: std::pin::Pin<&mut Self>, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }
}
