//! The Postgres wire endpoint: psql, drivers and BI tools connect here.
//!
//! Why a library: the protocol (startup, simple and extended query, portals, cancel, SSLRequest,
//! type OIDs and text/binary encodings of Arrow data) and a `pg_catalog` good enough for client
//! metadata queries are not our core; `datafusion-postgres` (on `pgwire`) and
//! `datafusion-pg-catalog` provide both over a DataFusion `SessionContext`. This module owns
//! what is ours: the listener, the connection limit, shutdown, and which statement hooks run.
//!
//! Authentication is trust (loopback by default; passwords come with the security work).

mod cancel;
mod statements;

use datafusion::prelude::SessionContext;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::datafusion_pg_catalog::setup_pg_catalog;
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::pgwire::api::auth::noop::NoopStartupHandler;
use datafusion_postgres::pgwire::api::auth::StartupHandler;
use datafusion_postgres::pgwire::api::cancel::{CancelHandler, DefaultCancelHandler};
use datafusion_postgres::pgwire::api::copy::CopyHandler;
use lookback_query::SqlError;
use lookback_scoring::ModelRegistry;
use lookback_storage::Db;
use datafusion_postgres::pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use datafusion::error::DataFusionError;
use datafusion::sql::sqlparser::parser::ParserError;
use datafusion_postgres::pgwire::api::portal::Portal;
use datafusion_postgres::pgwire::api::stmt::StoredStatement;
use datafusion_postgres::pgwire::api::Type;
use datafusion_postgres::pgwire::api::results::Response;
use datafusion_postgres::pgwire::api::store::PortalStore;
use datafusion_postgres::pgwire::api::{ClientInfo, ClientPortalStore, ConnectionManager, ErrorHandler, PgWireServerHandlers};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::PgWireBackendMessage;
use datafusion_postgres::{DfSessionService, QueryHook};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// The catalog name clients see (`current_database()`), also the default database.
pub const DATABASE_NAME: &str = "lookback";

#[derive(Clone, Debug)]
pub struct PgServerConfig {
    /// Open connections; the next one gets SQLSTATE 53300 and is closed.
    pub connections_max: usize,
}

impl Default for PgServerConfig {
    fn default() -> Self {
        PgServerConfig { connections_max: 100 }
    }
}

/// Adds `pg_catalog` (tables, functions) to `ctx`, whose default catalog must be
/// [`DATABASE_NAME`].
pub fn install_catalog(ctx: &SessionContext) -> Result<(), String> {
    setup_pg_catalog(ctx, DATABASE_NAME, EmptyContextProvider).map_err(|e| format!("set up pg_catalog: {e}"))
}

struct TrustStartup {
    connections: Arc<ConnectionManager>,
}

impl NoopStartupHandler for TrustStartup {
    fn connection_manager(&self) -> Option<Arc<ConnectionManager>> {
        Some(self.connections.clone())
    }
}

struct Handlers {
    session: Arc<CancellableSession>,
    copy: Arc<statements::CopyIns>,
    cancel: Arc<cancel::CancelBoth>,
    startup: Arc<TrustStartup>,
}

impl Handlers {
    fn new(ctx: Arc<SessionContext>, db: Arc<Db>, models: Arc<ModelRegistry>) -> Handlers {
        let hooks: Vec<Arc<dyn QueryHook>> = vec![
            Arc::new(statements::LookbackStatements { db, models }),
            Arc::new(CursorStatementHook),
            Arc::new(SetShowHook),
            Arc::new(TransactionStatementHook),
        ];
        let connections = Arc::new(ConnectionManager::new());
        let cancels = Arc::new(cancel::Cancels::default());
        let session = DfSessionService::new_with_hooks(ctx, hooks);
        Handlers {
            session: Arc::new(CancellableSession { inner: session, cancels: cancels.clone() }),
            copy: Arc::new(statements::CopyIns),
            cancel: Arc::new(cancel::CancelBoth { default: DefaultCancelHandler::new(connections.clone()), cancels }),
            startup: Arc::new(TrustStartup { connections }),
        }
    }
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.session.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.session.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.startup.clone()
    }

    fn copy_handler(&self) -> Arc<impl CopyHandler> {
        self.copy.clone()
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        self.cancel.clone()
    }

    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(SqlStates)
    }
}

/// DataFusion's session service, with every query's rows cancellable ([`cancel`]).
struct CancellableSession {
    inner: DfSessionService,
    cancels: Arc<cancel::Cancels>,
}

#[async_trait::async_trait]
impl SimpleQueryHandler for CancellableSession {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + futures::Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
    {
        let flag = self.cancels.flag(client);
        let start = flag.count();
        let responses = SimpleQueryHandler::do_query(&self.inner, client, query).await?;
        Ok(responses.into_iter().map(|r| cancel::cancellable(r, &flag, start)).collect())
    }
}

#[async_trait::async_trait]
impl ExtendedQueryHandler for CancellableSession {
    type Statement = <DfSessionService as ExtendedQueryHandler>::Statement;
    type QueryParser = <DfSessionService as ExtendedQueryHandler>::QueryParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.inner.query_parser()
    }

    async fn do_query<C>(&self, client: &mut C, portal: &Portal<Self::Statement>, max_rows: usize) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + futures::Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
    {
        let flag = self.cancels.flag(client);
        let start = flag.count();
        let patched = untyped_nulls_as_text(portal);
        let portal = patched.as_ref().unwrap_or(portal);
        let response = ExtendedQueryHandler::do_query(&self.inner, client, portal, max_rows).await?;
        Ok(cancel::cancellable(response, &flag, start))
    }
}

/// A copy of `portal` whose NULL parameters of no known type are typed `text`, or None when
/// it has none.
///
/// Why: a parameter the client leaves untyped (type 0, as psycopg sends `None`) and the plan
/// cannot type (an argument of `attribute(...)`, `SELECT $1`) is decoded by the protocol
/// library's fallback, which skips a NULL value instead of passing it on: every later
/// parameter would then take its left neighbour's value. A NULL is a NULL whatever its type,
/// so typing it `text` decodes it as one, in its place.
fn untyped_nulls_as_text(portal: &Portal<<DfSessionService as ExtendedQueryHandler>::Statement>) -> Option<Portal<<DfSessionService as ExtendedQueryHandler>::Statement>> {
    let (_, Some((_, plan))) = &portal.statement.statement else { return None };
    let untyped_null = |i: usize| {
        portal.parameters[i].is_none() && portal.statement.parameter_types.get(i).is_none_or(|t| t.is_none())
    };
    if !(0..portal.parameters.len()).any(untyped_null) {
        return None;
    }
    let inferred = plan.get_parameter_types().ok()?;
    let untyped = |i: usize| untyped_null(i) && inferred.get(&format!("${}", i + 1)).is_none_or(|t| t.is_none());
    let mut types = portal.statement.parameter_types.clone();
    types.resize(portal.parameters.len(), None);
    let mut changed = false;
    for (i, ty) in types.iter_mut().enumerate() {
        if untyped(i) {
            *ty = Some(Type::TEXT);
            changed = true;
        }
    }
    if !changed {
        return None;
    }
    let statement = StoredStatement::new(portal.statement.id.clone(), portal.statement.statement.clone(), types);
    let mut patched = Portal::default();
    patched.name = portal.name.clone();
    patched.statement = Arc::new(statement);
    patched.parameter_format = portal.parameter_format.clone();
    patched.parameters = portal.parameters.clone();
    patched.result_column_format = portal.result_column_format.clone();
    patched.state = portal.state.clone();
    Some(patched)
}

/// Gives query errors the SQLSTATE PostgreSQL would (drivers branch on it: a missing table is
/// 42P01, not the internal error XX000 the protocol library reports for every engine error),
/// with PostgreSQL's wording for the common ones.
struct SqlStates;

impl ErrorHandler for SqlStates {
    fn on_error<C: ClientInfo>(&self, _client: &C, error: &mut PgWireError) {
        let PgWireError::ApiError(inner) = error else { return };
        let info = match inner.downcast_ref::<DataFusionError>() {
            Some(e) => sql_error(e),
            // Statements are parsed before DataFusion sees them.
            None if inner.downcast_ref::<ParserError>().is_some() => {
                ErrorInfo::new("ERROR".into(), "42601".into(), inner.to_string())
            }
            None => ErrorInfo::new("ERROR".into(), "XX000".into(), inner.to_string()),
        };
        tracing::debug!(code = %info.code, message = %info.message, "query error");
        *error = PgWireError::UserError(Box::new(info));
    }
}

/// How DataFusion and Arrow word a NULL planned into a NOT NULL column.
const NOT_NULL_VIOLATIONS: [&str; 3] =
    ["is not nullable but has nulls", "has null but schema specifies non-nullable", "is declared as non-nullable but contains null values"];

/// The SQLSTATE and message for a DataFusion error (its innermost cause decides).
pub fn sql_error(error: &DataFusionError) -> ErrorInfo {
    if let Some(e) = SqlError::find(error) {
        let mut info = ErrorInfo::new("ERROR".into(), e.code.into(), e.message.clone());
        info.hint = e.hint.clone();
        return info;
    }
    let root = error.find_root();
    let text = root.to_string();
    let (code, message, hint) = match root {
        DataFusionError::SQL(..) => ("42601", text, None),
        DataFusionError::SchemaError(..) if text.contains("No field named") => {
            let column = text.split("No field named ").nth(1).and_then(|r| r.split(['.', ' ']).next()).unwrap_or("?");
            ("42703", format!("column \"{}\" does not exist", column.trim_matches('"')), None)
        }
        DataFusionError::Plan(m) if m.contains("not found") && m.starts_with("table ") => {
            let name = m.split('\'').nth(1).unwrap_or("?").rsplit('.').next().unwrap_or("?").to_string();
            ("42P01", format!("relation \"{name}\" does not exist"), None)
        }
        DataFusionError::NotImplemented(m) if m.contains("DELETE") || m.contains("UPDATE") => {
            ("0A000", text.clone(), Some("tables are append-only: rows cannot be updated or deleted".to_string()))
        }
        DataFusionError::NotImplemented(_) => ("0A000", text, None),
        DataFusionError::ArrowError(e, _) if e.to_string().contains("Cannot cast") => ("22P02", text, None),
        DataFusionError::ResourcesExhausted(_) => ("53200", text, None),
        DataFusionError::Execution(m) if m.contains("invalid input syntax") => ("22P02", text, None),
        _ if NOT_NULL_VIOLATIONS.iter().any(|m| text.contains(m)) => ("23502", format!("null value violates not-null constraint: {text}"), None),
        _ if text.contains("corrupt") => ("XX001", text, None),
        _ => ("XX000", text, None),
    };
    let mut info = ErrorInfo::new("ERROR".into(), code.into(), message);
    info.hint = hint;
    info
}

/// Serves `listener` until `shutdown` turns true; then stops accepting and ends the open
/// connections (a query in flight is cancelled with its connection).
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<SessionContext>,
    db: Arc<Db>,
    models: Arc<ModelRegistry>,
    config: PgServerConfig,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let handlers = Arc::new(Handlers::new(ctx, db, models));
    let permits = Arc::new(Semaphore::new(config.connections_max));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (socket, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(error = %e, "pg accept failed");
                        continue;
                    }
                };
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    connections.spawn(refuse(socket, config.connections_max));
                    continue;
                };
                let handlers = handlers.clone();
                connections.spawn(async move {
                    if let Err(reason) = check_startup_length(&socket).await {
                        tracing::debug!(%peer, reason, "pg connection refused before startup");
                        let _ = refuse_with(socket, "08P01", reason).await;
                        drop(permit);
                        return;
                    }
                    if let Err(e) = datafusion_postgres::pgwire::tokio::process_socket(socket, None, handlers).await {
                        tracing::debug!(%peer, error = %e, "pg connection ended with an error");
                    }
                    drop(permit);
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
    }
    connections.shutdown().await;
    Ok(())
}

/// The longest startup packet accepted, as PostgreSQL's `MAX_STARTUP_PACKET_LENGTH`.
const STARTUP_PACKET_BYTES_MAX: u32 = 10_000;
/// The shortest: length and protocol code (an SSLRequest or a startup without parameters).
const STARTUP_PACKET_BYTES_MIN: u32 = 8;
/// Time a new connection has to send its first 4 bytes.
const STARTUP_TIMEOUT_MS: u64 = 10_000;

/// Looks at (without consuming) the length that starts every connection's first packet.
/// Why: the protocol library would wait for however many bytes a bad length announces (up to
/// 2 GiB), holding the connection and its slot; PostgreSQL refuses such a packet at once.
async fn check_startup_length(socket: &TcpStream) -> Result<(), &'static str> {
    let mut len = [0u8; 4];
    let peek = async {
        loop {
            match socket.peek(&mut len).await {
                Ok(4) => return Ok(()),
                Ok(0) => return Err("closed before startup"),
                Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
                Err(_) => return Err("read error before startup"),
            }
        }
    };
    match tokio::time::timeout(std::time::Duration::from_millis(STARTUP_TIMEOUT_MS), peek).await {
        Err(_) => return Err("no startup packet in time"),
        Ok(result) => result?,
    }
    let len = u32::from_be_bytes(len);
    if !(STARTUP_PACKET_BYTES_MIN..=STARTUP_PACKET_BYTES_MAX).contains(&len) {
        return Err("invalid length of startup packet");
    }
    Ok(())
}

async fn refuse_with(mut socket: TcpStream, sqlstate: &str, message: &str) -> std::io::Result<()> {
    socket.write_all(&error_response("FATAL", sqlstate, message)).await?;
    socket.shutdown().await
}

/// Answers a connection over the limit with a FATAL ErrorResponse (SQLSTATE 53300,
/// too_many_connections), as PostgreSQL does, and closes it.
async fn refuse(mut socket: TcpStream, connections_max: usize) {
    let message = format!("sorry, too many clients already (connections_max = {connections_max})");
    let _ = socket.write_all(&error_response("FATAL", "53300", &message)).await;
    let _ = socket.shutdown().await;
}

/// An ErrorResponse message: 'E', length, then (field code, C string) pairs and a 0.
fn error_response(severity: &str, sqlstate: &str, message: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (code, value) in [(b'S', severity), (b'V', severity), (b'C', sqlstate), (b'M', message)] {
        body.push(code);
        body.extend(value.bytes().filter(|&b| b != 0));
        body.push(0);
    }
    body.push(0);
    let mut out = vec![b'E'];
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    async fn code_of(sql: &str) -> (String, String) {
        let ctx = SessionContext::new();
        ctx.sql("CREATE TABLE t (a INT)").await.unwrap();
        let result = match ctx.sql(sql).await {
            Ok(df) => df.collect().await.map(|_| ()),
            Err(e) => Err(e),
        };
        let info = sql_error(&result.expect_err(sql));
        (info.code, info.message)
    }

    #[tokio::test]
    async fn engine_errors_get_postgres_sqlstates() {
        assert_eq!(code_of("SELECT * FROM nope").await, ("42P01".into(), "relation \"nope\" does not exist".into()));
        assert_eq!(code_of("SELEC 1").await.0, "42601");
        assert_eq!(code_of("SELECT nocol FROM t").await, ("42703".into(), "column \"nocol\" does not exist".into()));
        assert_eq!(code_of("SELECT 'abc'::int").await.0, "22P02");
    }

    #[test]
    fn error_response_is_framed_as_postgres_does() {
        let bytes = error_response("FATAL", "53300", "too many");
        assert_eq!(bytes[0], b'E');
        let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        assert_eq!(len + 1, bytes.len());
        assert_eq!(&bytes[5..12], b"SFATAL\0");
        assert!(bytes.windows(7).any(|w| w == b"C53300\0"));
        assert_eq!(*bytes.last().unwrap(), 0);
    }
}
