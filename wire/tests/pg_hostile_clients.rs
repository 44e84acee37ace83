//! What a hostile or buggy client cannot do to the Postgres endpoint, over a real server:
//! - the panic boundary (`wire/src/pg/boundary.rs`): a panic in the protocol library's
//!   decoder ends only its connection, with a FATAL `XX000`; a panic while a statement runs
//!   fails the statement with `XX000` and the connection goes on; either way the server keeps
//!   serving and the panic is counted;
//! - row counts (`wire/src/pg/row_limits.rs`): an Execute's `max_rows` or a `FETCH n` of
//!   billions of rows no longer has the server reserve memory for them (it aborted), and
//!   returns the rows PostgreSQL would.

use datafusion::arrow::datatypes::DataType;
use datafusion::logical_expr::{create_udf, ColumnarValue, Volatility};
use datafusion::prelude::SessionContext;
use lookback_scoring::ModelRegistry;
use lookback_storage::{Db, DbOptions};
use lookback_wire::pg::{self, PgServerConfig, PgServerStats};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

struct Server {
    addr: SocketAddr,
    stats: Arc<PgServerStats>,
    _shutdown: watch::Sender<bool>,
    _db: Arc<Db>,
    _dir: tempfile::TempDir,
}

/// A server over an empty data directory whose session also has `boom(x)`, a function that
/// panics when it runs (a stand-in for a panic inside DataFusion).
async fn server() -> Server {
    let dir = tempfile::tempdir().expect("a temporary data directory");
    let db = Arc::new(Db::open(DbOptions::new(dir.path())).expect("open the Db"));
    let (models, _) = ModelRegistry::open(dir.path()).expect("open the model registry");
    let ctx: SessionContext =
        lookback_query::session_context(&db, pg::DATABASE_NAME).expect("the session");
    pg::install_catalog(&ctx).expect("pg_catalog");
    let boom =
        |_: &[ColumnarValue]| -> datafusion::error::Result<ColumnarValue> { panic!("boom ran") };
    ctx.register_udf(create_udf(
        "boom",
        vec![DataType::Int64],
        DataType::Int64,
        Volatility::Volatile,
        Arc::new(boom),
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("the listener's address");
    let stats = Arc::new(PgServerStats::default());
    let (shutdown, rx) = watch::channel(false);
    let config = PgServerConfig { connections_max: 8 };
    tokio::spawn(pg::serve_with_stats(
        listener,
        Arc::new(ctx),
        db.clone(),
        Arc::new(models),
        config,
        stats.clone(),
        rx,
    ));
    Server {
        addr,
        stats,
        _shutdown: shutdown,
        _db: db,
        _dir: dir,
    }
}

fn startup() -> Vec<u8> {
    let mut body = 196_608u32.to_be_bytes().to_vec();
    body.extend_from_slice(b"user\0lookback\0database\0lookback\0\0");
    let mut out = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

fn query(sql: &str) -> Vec<u8> {
    let mut out = vec![b'Q'];
    out.extend_from_slice(&((sql.len() + 5) as u32).to_be_bytes());
    out.extend_from_slice(sql.as_bytes());
    out.push(0);
    out
}

const TERMINATE: [u8; 5] = [b'X', 0, 0, 0, 4];
const SYNC: [u8; 5] = [b'S', 0, 0, 0, 4];

fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Parse (unnamed, no parameter types) and Bind (unnamed portal, no parameters).
fn parse_and_bind(sql: &str) -> Vec<u8> {
    let mut parse = vec![0];
    parse.extend_from_slice(sql.as_bytes());
    parse.extend_from_slice(&[0, 0, 0]);
    let mut out = message(b'P', &parse);
    out.extend_from_slice(&message(b'B', &[0; 8]));
    out
}

fn execute(max_rows: i32) -> Vec<u8> {
    let mut body = vec![0];
    body.extend_from_slice(&max_rows.to_be_bytes());
    message(b'E', &body)
}

fn count(messages: &[(u8, Vec<u8>)], kind: u8) -> usize {
    messages.iter().filter(|(k, _)| *k == kind).count()
}

fn command_tags(messages: &[(u8, Vec<u8>)]) -> Vec<String> {
    messages
        .iter()
        .filter(|(k, _)| *k == b'C')
        .map(|(_, body)| {
            String::from_utf8_lossy(body.strip_suffix(&[0]).unwrap_or(body)).into_owned()
        })
        .collect()
}

/// Sends `bytes` and reads until the server closes; returns (type, body) of each message.
async fn session(addr: SocketAddr, bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut socket = TcpStream::connect(addr).await.expect("connect");
    socket.write_all(bytes).await.expect("send");
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut response))
        .await
        .expect("the server closes")
        .expect("read");
    let mut messages = Vec::new();
    let mut at = 0;
    while at + 5 <= response.len() {
        let len =
            u32::from_be_bytes(response[at + 1..at + 5].try_into().expect("4 bytes")) as usize;
        messages.push((response[at], response[at + 5..at + 1 + len].to_vec()));
        at += 1 + len;
    }
    assert_eq!(at, response.len(), "whole messages");
    messages
}

/// The (severity, SQLSTATE) of each ErrorResponse.
fn errors(messages: &[(u8, Vec<u8>)]) -> Vec<(String, String)> {
    let field = |body: &[u8], code: u8| {
        body.split(|&b| b == 0)
            .find(|f| f.first() == Some(&code))
            .map(|f| String::from_utf8_lossy(&f[1..]).into_owned())
            .unwrap_or_default()
    };
    messages
        .iter()
        .filter(|(kind, _)| *kind == b'E')
        .map(|(_, body)| (field(body, b'S'), field(body, b'C')))
        .collect()
}

fn has_row(messages: &[(u8, Vec<u8>)], value: &str) -> bool {
    let mut row = vec![0, 1];
    row.extend_from_slice(&(value.len() as u32).to_be_bytes());
    row.extend_from_slice(value.as_bytes());
    messages
        .iter()
        .any(|(kind, body)| *kind == b'D' && *body == row)
}

/// Regression (found by the `pgwire` fuzz target): a Parse message whose body ends before its
/// parameter count (`P`, length 6, two empty strings) panicked pgwire 0.41.1's decoder
/// ("advance out of bounds") and the connection task died without an answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_message_decoder_ends_the_connection_with_xx000() {
    let server = server().await;
    let mut bytes = startup();
    bytes.extend_from_slice(&[b'P', 0, 0, 0, 6, 0, 0]);
    let messages = session(server.addr, &bytes).await;
    assert_eq!(
        errors(&messages),
        vec![("FATAL".to_string(), "XX000".to_string())],
        "{messages:?}"
    );
    assert_eq!(server.stats.panics_caught(), 1);
    let mut bytes = startup();
    bytes.extend_from_slice(&query("SELECT 1"));
    bytes.extend_from_slice(&TERMINATE);
    assert!(
        has_row(&session(server.addr, &bytes).await, "1"),
        "the server still answers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_while_a_statement_runs_fails_only_the_statement() {
    let server = server().await;
    let mut bytes = startup();
    bytes.extend_from_slice(&query("SELECT boom(1)"));
    bytes.extend_from_slice(&query("SELECT 2"));
    bytes.extend_from_slice(&TERMINATE);
    let messages = session(server.addr, &bytes).await;
    assert_eq!(
        errors(&messages),
        vec![("ERROR".to_string(), "XX000".to_string())],
        "{messages:?}"
    );
    assert!(
        has_row(&messages, "2"),
        "the connection goes on after the failed statement"
    );
    assert_eq!(server.stats.panics_caught(), 1);
}

/// Regression (found by the `pgwire` fuzz target): an Execute with max_rows 1,970,496,882
/// had the protocol library reserve 40 bytes for each of them, and the failed 78 GB
/// allocation aborted the server. Now it returns the 3 rows; -1 means no limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execute_of_billions_of_rows_returns_the_rows_there_are() {
    let server = server().await;
    for max_rows in [1_970_496_882, i32::MAX, -1] {
        let mut bytes = startup();
        bytes.extend_from_slice(&parse_and_bind("SELECT * FROM generate_series(1, 3)"));
        bytes.extend_from_slice(&execute(max_rows));
        bytes.extend_from_slice(&SYNC);
        bytes.extend_from_slice(&TERMINATE);
        let messages = session(server.addr, &bytes).await;
        assert_eq!(errors(&messages), vec![], "max_rows {max_rows}");
        assert_eq!(
            (count(&messages, b'D'), count(&messages, b's')),
            (3, 0),
            "max_rows {max_rows}: 3 rows, not suspended"
        );
    }
}

/// Above EXECUTE_ROWS_MAX the portal is suspended after that many rows, and the next
/// Execute returns the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execute_above_the_limit_is_suspended_and_resumed() {
    let server = server().await;
    let total = pg::EXECUTE_ROWS_MAX as usize + 10;
    let mut bytes = startup();
    bytes.extend_from_slice(&parse_and_bind(&format!(
        "SELECT * FROM generate_series(1, {total})"
    )));
    bytes.extend_from_slice(&execute(pg::EXECUTE_ROWS_MAX + 5));
    bytes.extend_from_slice(&execute(pg::EXECUTE_ROWS_MAX + 5));
    bytes.extend_from_slice(&SYNC);
    bytes.extend_from_slice(&TERMINATE);
    let messages = session(server.addr, &bytes).await;
    assert_eq!(errors(&messages), vec![]);
    assert_eq!(
        count(&messages, b'D'),
        total,
        "every row, over two Executes"
    );
    assert_eq!(
        count(&messages, b's'),
        1,
        "one PortalSuspended, after the first Execute"
    );
}

/// `FETCH n` with n in the billions aborted the server the same way; above a chunk it now
/// returns exactly the rows PostgreSQL would: n of them, or what is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_of_many_rows_returns_exactly_what_postgres_would() {
    let server = server().await;
    let chunk = pg::FETCH_CHUNK_ROWS;
    let mut bytes = startup();
    bytes.extend_from_slice(&query(&format!(
        "DECLARE c CURSOR FOR SELECT * FROM generate_series(1, {})",
        chunk + 100
    )));
    bytes.extend_from_slice(&query(&format!("FETCH {} FROM c", chunk + 1)));
    bytes.extend_from_slice(&query("FETCH 2000000000 FROM c"));
    bytes.extend_from_slice(&query("FETCH 2000000000 FROM c"));
    bytes.extend_from_slice(&TERMINATE);
    let messages = session(server.addr, &bytes).await;
    assert_eq!(errors(&messages), vec![]);
    assert_eq!(count(&messages, b'D'), chunk + 100);
    let tags = command_tags(&messages);
    assert_eq!(tags.len(), 4, "{tags:?}");
    let rows_of = |tag: &str| tag.rsplit(' ').next().and_then(|n| n.parse::<usize>().ok());
    assert_eq!(
        tags[1..].iter().map(|t| rows_of(t)).collect::<Vec<_>>(),
        vec![Some(chunk + 1), Some(99), Some(0)],
        "{tags:?}"
    );
}

/// Regression (found by the `sql` fuzz target): `SHOW` without a name reached
/// datafusion-postgres's SET/SHOW hook, which indexed the empty name list and panicked; the
/// boundary answered XX000. It is a syntax error, as in PostgreSQL, on both protocols.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_without_a_name_is_a_syntax_error() {
    let server = server().await;
    let mut bytes = startup();
    bytes.extend_from_slice(&query("SHOW"));
    bytes.extend_from_slice(&parse_and_bind("SHOW"));
    bytes.extend_from_slice(&execute(0));
    bytes.extend_from_slice(&SYNC);
    bytes.extend_from_slice(&query("SELECT 2"));
    bytes.extend_from_slice(&TERMINATE);
    let messages = session(server.addr, &bytes).await;
    let syntax = ("ERROR".to_string(), "42601".to_string());
    assert_eq!(
        errors(&messages),
        vec![syntax.clone(), syntax],
        "{messages:?}"
    );
    assert!(has_row(&messages, "2"));
    assert_eq!(server.stats.panics_caught(), 0);
}

/// Regression (found by the `pgwire` fuzz target): a COPY field holding NUL bytes was quoted
/// in the 22P02 message, so the ErrorResponse's NUL-terminated message field ended early and
/// the rest read as garbage fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_quoting_a_nul_byte_is_still_a_well_formed_error_response() {
    let server = server().await;
    let mut bytes = startup();
    bytes.extend_from_slice(&query("CREATE TABLE nul_t (ts timestamptz NOT NULL)"));
    bytes.extend_from_slice(&query("COPY nul_t FROM STDIN"));
    bytes.extend_from_slice(&message(b'd', b"2026-10-02T00:\0\0:00Z\n"));
    bytes.extend_from_slice(&message(b'c', b""));
    bytes.extend_from_slice(&TERMINATE);
    let messages = session(server.addr, &bytes).await;
    let (_, body) = messages
        .iter()
        .find(|(kind, _)| *kind == b'E')
        .expect("an ErrorResponse");
    let fields: Vec<&[u8]> = body
        .strip_suffix(&[0, 0])
        .expect("fields, then the terminating 0")
        .split(|&b| b == 0)
        .collect();
    assert!(
        fields
            .iter()
            .all(|f| f.first().is_some_and(|c| b"SVCMDHPpqWstcdnFLR".contains(c))),
        "only known field codes: {fields:?}"
    );
    assert_eq!(
        errors(&messages),
        vec![("ERROR".to_string(), "22P02".to_string())]
    );
}

/// Regression (found by the `sql` fuzz target): the SQL parser's time doubles with each level
/// of nested function calls, and parsing cannot be cancelled, so `f(f(...))` 40 deep would
/// have held a server thread for days. A statement nested past `SQL_CALL_NESTING_MAX` is now
/// refused before it is parsed, in a Query and in a Parse message, and the connection goes on
/// (without the bound this session does not end within its 10 s read timeout).
#[test]
fn a_statement_nested_too_deep_is_refused_with_54001_before_it_is_parsed() {
    // The server and the client on runtimes of their own: without the bound a server worker
    // would be parsing for days, which also stalls its runtime's timers, so the client's
    // timeout needs another runtime, and the server's is shut down without waiting for it.
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("the server's runtime");
    let server = server_runtime.block_on(server());
    let client_runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the client's runtime");
    let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        client_runtime.block_on(nested_too_deep_is_refused(server.addr))
    }));
    drop(server);
    server_runtime.shutdown_background();
    if let Err(panic) = checked {
        std::panic::resume_unwind(panic);
    }
}

async fn nested_too_deep_is_refused(addr: SocketAddr) {
    let nested = |depth: usize| format!("SELECT {}1{}", "abs(".repeat(depth), ")".repeat(depth));
    let mut bytes = startup();
    bytes.extend_from_slice(&query(&nested(40)));
    bytes.extend_from_slice(&parse_and_bind(&nested(40)));
    bytes.extend_from_slice(&SYNC);
    bytes.extend_from_slice(&query(&nested(pg::SQL_CALL_NESTING_MAX)));
    bytes.extend_from_slice(&TERMINATE);
    let messages = session(addr, &bytes).await;
    let too_complex = ("ERROR".to_string(), "54001".to_string());
    assert_eq!(errors(&messages), vec![too_complex.clone(), too_complex], "{messages:?}");
    assert!(has_row(&messages, "1"), "a statement at the limit is answered");
}
