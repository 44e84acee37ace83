//! The Postgres wire endpoint: psql, drivers and BI tools connect here.
//!
//! Why a library: the protocol (startup, simple and extended query, portals, cancel, SSLRequest,
//! type OIDs and text/binary encodings of Arrow data) and a `pg_catalog` good enough for client
//! metadata queries are not our core; `datafusion-postgres` (on `pgwire`) and
//! `datafusion-pg-catalog` provide both over a DataFusion `SessionContext`. This module owns
//! what is ours: the listener, the connection limit, shutdown, and which statement hooks run;
//! and where the libraries fail a hostile client, what we put around them: the panic
//! boundary ([`boundary`]), bounds on the row counts a client names ([`row_limits`]) and on
//! how deeply a statement nests before it is parsed ([`complexity`]), error texts without NUL
//! bytes, the startup length check.
//!
//! Authentication is trust (loopback by default; passwords come with the security work).

mod boundary;
mod cancel;
mod complexity;
mod local;
mod row_limits;
mod statements;

pub use boundary::{panic_message, PgServerStats};
pub use complexity::{SQL_CALL_NESTING_MAX, SQL_NESTING_DEPTH_MAX};
pub use local::{LocalSession, Outcome};
pub use row_limits::{EXECUTE_ROWS_MAX, FETCH_CHUNK_ROWS};

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
use datafusion_postgres::pgwire::messages::extendedquery::Execute;
use datafusion_postgres::pgwire::messages::PgWireBackendMessage;
use datafusion_postgres::{DfSessionService, QueryHook};
use futures::FutureExt;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
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
/// The SQL session this endpoint serves: every storage table (through `lookback-query`), the
/// scoring functions over `models`, and `pg_catalog` / `information_schema`. `lookback serve`
/// and the fuzz fixture both build it here.
pub fn session(db: &Arc<Db>, models: &Arc<ModelRegistry>) -> Result<SessionContext, String> {
    let ctx = lookback_query::session_context(db, DATABASE_NAME).map_err(|e| e.to_string())?;
    lookback_query::scoring::register(&ctx, models.clone()).map_err(|e| e.to_string())?;
    install_catalog(&ctx)?;
    Ok(ctx)
}

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
    fn new(ctx: Arc<SessionContext>, db: Arc<Db>, models: Arc<ModelRegistry>, stats: Arc<PgServerStats>) -> Handlers {
        let hooks: Vec<Arc<dyn QueryHook>> = vec![
            Arc::new(statements::LookbackStatements { db, models }),
            Arc::new(row_limits::ChunkedFetch),
            Arc::new(CursorStatementHook),
            Arc::new(SetShowHook),
            Arc::new(TransactionStatementHook),
        ];
        let connections = Arc::new(ConnectionManager::new());
        let cancels = Arc::new(cancel::Cancels::default());
        let session = DfSessionService::new_with_hooks(ctx, hooks);
        let parser = Arc::new(complexity::GuardedParser::new(session.query_parser()));
        Handlers {
            session: Arc::new(CancellableSession { inner: session, parser, cancels: cancels.clone(), stats }),
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

/// DataFusion's session service, with every query's rows cancellable ([`cancel`]) and its
/// planning and rows behind the panic boundary ([`boundary`]).
struct CancellableSession {
    inner: DfSessionService,
    /// The inner service's parser, behind the nesting bound ([`complexity`]).
    parser: Arc<complexity::GuardedParser<DfParser>>,
    cancels: Arc<cancel::Cancels>,
    stats: Arc<PgServerStats>,
}

type DfParser = <DfSessionService as ExtendedQueryHandler>::QueryParser;

#[async_trait::async_trait]
impl SimpleQueryHandler for CancellableSession {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + futures::Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
    {
        complexity::check(query)?;
        let flag = self.cancels.flag(client);
        let start = flag.count();
        let responses = boundary::statement(&self.stats, SimpleQueryHandler::do_query(&self.inner, client, query)).await?;
        Ok(responses.into_iter().map(|r| cancel::cancellable(boundary::rows(&self.stats, r), &flag, start)).collect())
    }
}

#[async_trait::async_trait]
impl ExtendedQueryHandler for CancellableSession {
    type Statement = <DfSessionService as ExtendedQueryHandler>::Statement;
    type QueryParser = complexity::GuardedParser<DfParser>;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.parser.clone()
    }

    /// The protocol library's Execute, with `max_rows` bounded ([`row_limits`]).
    async fn on_execute<C>(&self, client: &mut C, mut message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + futures::Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
    {
        message.max_rows = row_limits::execute_rows(message.max_rows);
        self._on_execute(client, message).await
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
        let response = boundary::statement(&self.stats, ExtendedQueryHandler::do_query(&self.inner, client, portal, max_rows)).await?;
        Ok(cancel::cancellable(boundary::rows(&self.stats, response), &flag, start))
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
/// with PostgreSQL's wording for the common ones; and keeps every error's text free of NUL
/// bytes ([`without_nul`]).
struct SqlStates;

impl ErrorHandler for SqlStates {
    fn on_error<C: ClientInfo>(&self, _client: &C, error: &mut PgWireError) {
        // The placeholder is never seen: `error` is replaced below.
        let mut info = match std::mem::replace(error, PgWireError::InvalidCancelRequest) {
            PgWireError::ApiError(inner) => api_error(inner.as_ref()),
            other => ErrorInfo::from(other),
        };
        without_nul(&mut info);
        *error = PgWireError::UserError(Box::new(info));
    }
}

fn api_error(inner: &(dyn std::error::Error + Send + Sync + 'static)) -> ErrorInfo {
    let info = match inner.downcast_ref::<DataFusionError>() {
        Some(e) => sql_error(e),
        // Statements are parsed before DataFusion sees them.
        None if inner.downcast_ref::<ParserError>().is_some() => ErrorInfo::new("ERROR".into(), "42601".into(), inner.to_string()),
        None => ErrorInfo::new("ERROR".into(), "XX000".into(), inner.to_string()),
    };
    tracing::debug!(code = %info.code, message = %info.message, "query error");
    info
}

/// Replaces NUL bytes in an error's texts with U+FFFD.
///
/// Why: ErrorResponse fields are NUL-terminated strings, and messages quote client data (a
/// COPY field, a bind parameter) that may hold a NUL: the field then ended early and the rest
/// of the message read as garbage fields (found by the `pgwire` fuzz target).
fn without_nul(info: &mut ErrorInfo) {
    let clean = |text: &mut String| {
        if text.contains('\0') {
            *text = text.replace('\0', "\u{FFFD}");
        }
    };
    clean(&mut info.message);
    for text in [&mut info.detail, &mut info.hint, &mut info.where_context].into_iter().flatten() {
        clean(text);
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
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    serve_with_stats(listener, ctx, db, models, config, Arc::default(), shutdown).await
}

/// [`serve`], counting into `stats`.
pub async fn serve_with_stats(
    listener: TcpListener,
    ctx: Arc<SessionContext>,
    db: Arc<Db>,
    models: Arc<ModelRegistry>,
    config: PgServerConfig,
    stats: Arc<PgServerStats>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let handlers = Arc::new(Handlers::new(ctx, db, models, stats.clone()));
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
                connections.spawn(connection(socket, peer, handlers.clone(), stats.clone(), permit));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
    }
    connections.shutdown().await;
    Ok(())
}

/// One connection, from its startup length check to its end, holding its slot (`permit`).
async fn connection(socket: TcpStream, peer: SocketAddr, handlers: Arc<Handlers>, stats: Arc<PgServerStats>, permit: OwnedSemaphorePermit) {
    if let Err(reason) = check_startup_length(&socket).await {
        tracing::debug!(%peer, reason, "pg connection refused before startup");
        let _ = refuse_with(socket, "08P01", reason).await;
        drop(permit);
        return;
    }
    // A second handle on the socket, to answer a panic after the protocol library's own
    // handle went down with it.
    let spare = socket.as_fd().try_clone_to_owned().ok().map(std::net::TcpStream::from);
    let served = AssertUnwindSafe(datafusion_postgres::pgwire::tokio::process_socket(socket, None, handlers)).catch_unwind().await;
    match served {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "pg connection ended with an error"),
        Err(panic) => {
            let info = boundary::caught(&stats, panic.as_ref(), "handling the connection's messages", "FATAL");
            if let Some(spare) = spare.and_then(|s| TcpStream::from_std(s).ok()) {
                let _ = answer_with(spare, &error_response("FATAL", &info.code, &info.message, info.detail.as_deref())).await;
            }
        }
    }
    drop(permit);
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
            // Readiness first: a peer that sent 1 to 3 bytes and closed its side leaves them
            // to peek at forever; only the read-closed flag tells it from a slow sender.
            let ready = socket.ready(Interest::READABLE).await.map_err(|_| "read error before startup")?;
            match socket.peek(&mut len).await {
                Ok(4) => return Ok(()),
                Ok(0) => return Err("closed before startup"),
                Ok(_) if ready.is_read_closed() => return Err("closed before startup"),
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

async fn refuse_with(socket: TcpStream, sqlstate: &str, message: &str) -> std::io::Result<()> {
    answer_with(socket, &error_response("FATAL", sqlstate, message, None)).await
}

async fn answer_with(mut socket: TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    socket.write_all(bytes).await?;
    socket.shutdown().await
}

/// Answers a connection over the limit with a FATAL ErrorResponse (SQLSTATE 53300,
/// too_many_connections), as PostgreSQL does, and closes it.
async fn refuse(mut socket: TcpStream, connections_max: usize) {
    let message = format!("sorry, too many clients already (connections_max = {connections_max})");
    let _ = socket.write_all(&error_response("FATAL", "53300", &message, None)).await;
    let _ = socket.shutdown().await;
}

/// An ErrorResponse message: 'E', length, then (field code, C string) pairs and a 0.
fn error_response(severity: &str, sqlstate: &str, message: &str, detail: Option<&str>) -> Vec<u8> {
    let mut body = Vec::new();
    let fields = [(b'S', severity), (b'V', severity), (b'C', sqlstate), (b'M', message)];
    for (code, value) in fields.into_iter().chain(detail.map(|d| (b'D', d))) {
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

    /// Regression (seen while writing the `pgwire` fuzz target, whose end-of-stream check
    /// fails on it): a client that sent 1 to 3 bytes and closed its side held its connection
    /// slot for the whole startup timeout (10 s), since the bytes stayed there to peek at.
    #[tokio::test]
    async fn a_short_first_packet_then_end_of_stream_is_refused_at_once() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut client = TcpStream::connect(listener.local_addr().expect("address")).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        client.write_all(&[0, 0]).await.expect("send");
        client.shutdown().await.expect("half-close");
        let checked = tokio::time::timeout(std::time::Duration::from_millis(2_000), check_startup_length(&server)).await;
        assert_eq!(checked, Ok(Err("closed before startup")));
    }

    #[tokio::test]
    async fn a_slow_first_packet_is_waited_for() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut client = TcpStream::connect(listener.local_addr().expect("address")).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        client.write_all(&[0, 0]).await.expect("send");
        let rest = async {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            client.write_all(&[0, 8]).await.expect("send");
        };
        let (checked, ()) = tokio::join!(check_startup_length(&server), rest);
        assert_eq!(checked, Ok(()));
    }

    /// Regression (found by the `pgwire` fuzz target): a COPY field holding a NUL was quoted
    /// in the error message, whose NUL-terminated field then ended early.
    #[test]
    fn error_texts_hold_no_nul() {
        let client = super::local::LocalClient::new();
        let mut info = ErrorInfo::new("ERROR".into(), "22P02".into(), "invalid input syntax: \"a\0b\"".into());
        info.detail = Some("\0".into());
        let mut error = PgWireError::UserError(Box::new(info));
        SqlStates.on_error(&client, &mut error);
        let PgWireError::UserError(info) = error else { panic!("an error with its info") };
        assert_eq!((info.code.as_str(), info.message.as_str()), ("22P02", "invalid input syntax: \"a\u{FFFD}b\""));
        assert_eq!(info.detail.as_deref(), Some("\u{FFFD}"));
        let mut error = PgWireError::PortalNotFound("p".into());
        SqlStates.on_error(&client, &mut error);
        assert!(matches!(&error, PgWireError::UserError(info) if info.code == "26000"), "the library's errors keep their SQLSTATE");
    }

    #[test]
    fn error_response_is_framed_as_postgres_does() {
        let bytes = error_response("FATAL", "53300", "too many", None);
        assert_eq!(bytes[0], b'E');
        let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        assert_eq!(len + 1, bytes.len());
        assert_eq!(&bytes[5..12], b"SFATAL\0");
        assert!(bytes.windows(7).any(|w| w == b"C53300\0"));
        assert_eq!(*bytes.last().unwrap(), 0);
    }
}
