//! The `pgwire` target: the input as the bytes a client sends to the Postgres endpoint,
//! over a real TCP connection to the fixture's server ([`crate::fixture`]: the real
//! `lookback_wire::pg::serve` over a temporary data directory, started once).
//!
//! Input layout: the low bit of the first byte chooses the mode, the rest is sent as is.
//! - bit clear: the rest is the whole stream, from the first startup-phase packet on
//!   (StartupMessage, SSLRequest, GSSENCRequest, CancelRequest or garbage);
//! - bit set: a valid StartupMessage (user and database `lookback`) goes first, so the rest
//!   reaches the post-startup messages (Query, Parse/Bind/Describe/Execute/Sync, CopyData...).
//!
//! After writing, the client half-closes its side, unless the stream is well formed up to a
//! Terminate ([`frontend::well_formed`]): then the connection stays open and the server must
//! close it on its own.
//! Checks, for every input:
//! - no panic on a server thread that the endpoint's boundary did not catch and answer with
//!   XX000 ([`crate::panics`]: a connection task's panic is otherwise invisible);
//! - the server closes the connection: it may not go quiet for [`PGWIRE_READ_TIMEOUT_MS`]
//!   while it stays open, after a Terminate or after the client's end of stream;
//! - what it sent is well framed, and each ErrorResponse has a message and a SQLSTATE of five
//!   digits or capitals;
//! - every [`PGWIRE_HEALTH_CHECK_EVERY`] inputs, a fresh connection still gets `SELECT 1`
//!   answered (connections are not leaked, the listener is alive).

pub mod backend;
pub mod frontend;

use crate::fixture::Shared;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;

/// The server may stay silent this long on an open connection before it counts as hung.
pub const PGWIRE_READ_TIMEOUT_MS: u64 = 2_000;
/// A connection still receiving bytes after this long is dropped (a big result, not a hang).
pub const PGWIRE_SESSION_MS_MAX: u64 = 10_000;
/// Response bytes kept for the checks; beyond them the response is read and dropped.
pub const PGWIRE_RESPONSE_BYTES_MAX: usize = 1 << 20;
/// A fresh connection runs `SELECT 1` after every this many inputs.
pub const PGWIRE_HEALTH_CHECK_EVERY: u64 = 16;
/// The bit of the input's first byte that asks for a StartupMessage first.
const MODE_STARTUP: u8 = 1;
/// PostgreSQL's startup packet bounds (`MAX_STARTUP_PACKET_LENGTH`), as the server's.
const STARTUP_PACKET_BYTES_MAX: u32 = 10_000;
const STARTUP_PACKET_BYTES_MIN: u32 = 8;

static FIXTURE: Shared = Shared::new();
static INPUTS: AtomicU64 = AtomicU64::new(0);

pub fn pgwire(data: &[u8]) {
    let Some(stream) = stream(data) else { return };
    let terminated = framed_to_terminate(&stream);
    let fixture = FIXTURE.get();
    let (response, ending) =
        fixture
            .runtime
            .block_on(exchange(fixture.pg_addr, &stream, terminated));
    fixture.assert_no_escaped_panic("pgwire");
    let after = if terminated {
        "Terminate"
    } else {
        "the client's end of stream"
    };
    assert!(ending != Ending::Silent, "hang: the connection stayed open and silent {PGWIRE_READ_TIMEOUT_MS} ms after {after} (response so far: {})", hex(&response));
    check_response(&response);
    if INPUTS.fetch_add(1, Ordering::Relaxed) % PGWIRE_HEALTH_CHECK_EVERY
        == PGWIRE_HEALTH_CHECK_EVERY - 1
    {
        fixture.runtime.block_on(health_check(fixture.pg_addr));
    }
}

/// The bytes to send for an input: its mode byte decides whether a StartupMessage goes first.
fn stream(input: &[u8]) -> Option<Vec<u8>> {
    let (&mode, rest) = input.split_first()?;
    let mut stream = if mode & MODE_STARTUP != 0 {
        frontend::startup()
    } else {
        Vec::new()
    };
    stream.extend_from_slice(rest);
    Some(stream)
}

/// The server's bytes for `input` (laid out as the target takes it), on the target's fixture.
pub fn replay(input: &[u8]) -> Vec<u8> {
    let Some(stream) = stream(input) else {
        return Vec::new();
    };
    let fixture = FIXTURE.get();
    fixture
        .runtime
        .block_on(exchange(
            fixture.pg_addr,
            &stream,
            framed_to_terminate(&stream),
        ))
        .0
}

/// How a connection's read side ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    /// End of stream or a reset: the server closed it.
    Closed,
    /// Open, and nothing arrived for [`PGWIRE_READ_TIMEOUT_MS`].
    Silent,
    /// Still receiving at [`PGWIRE_SESSION_MS_MAX`].
    Busy,
}

/// Sends `input` (then ends the client's side unless `terminated`) while reading the
/// server's bytes until it closes, goes silent, or the session's time is up.
async fn exchange(addr: SocketAddr, input: &[u8], terminated: bool) -> (Vec<u8>, Ending) {
    let socket = TcpStream::connect(addr)
        .await
        .expect("connect to the fixture's server");
    let _ = socket.set_nodelay(true);
    let (mut reader, mut writer) = socket.into_split();
    let session = Duration::from_millis(PGWIRE_SESSION_MS_MAX);
    // Writing and reading at once: a server answering a long input stops reading while its
    // send buffer is full. Write errors are expected (a server that closed on bad bytes).
    let write = async {
        let _ = tokio::time::timeout(session, writer.write_all(input)).await;
        if !terminated {
            let _ = writer.shutdown().await;
        }
        writer // kept open until the read is done: dropping it would end the stream
    };
    let (_writer, read) = tokio::join!(write, read_until_closed(&mut reader));
    read
}

async fn read_until_closed(reader: &mut OwnedReadHalf) -> (Vec<u8>, Ending) {
    let deadline = Instant::now() + Duration::from_millis(PGWIRE_SESSION_MS_MAX);
    let idle = Duration::from_millis(PGWIRE_READ_TIMEOUT_MS);
    let mut response = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match tokio::time::timeout(idle, reader.read(&mut buf)).await {
            Err(_) => return (response, Ending::Silent),
            Ok(Ok(0)) | Ok(Err(_)) => return (response, Ending::Closed),
            Ok(Ok(n)) => {
                let room =
                    PGWIRE_RESPONSE_BYTES_MAX - response.len().min(PGWIRE_RESPONSE_BYTES_MAX);
                response.extend_from_slice(&buf[..n.min(room)]);
                if Instant::now() > deadline {
                    return (response, Ending::Busy);
                }
            }
        }
    }
}

/// Whether the server will read `stream` as whole messages up to a Terminate: startup-phase
/// packets (SSL/GSS requests, then a well-formed protocol 3.0 StartupMessage), then
/// well-formed typed messages ([`frontend::well_formed`]) of which one is a Terminate.
/// Anything else the server may legitimately wait on (a message cut short, or one the
/// protocol library misreads) or refuse; the client then ends its side instead.
fn framed_to_terminate(stream: &[u8]) -> bool {
    let be32 = |at: usize| {
        stream
            .get(at..at + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let mut at = 0usize;
    loop {
        let (Some(len), Some(code)) = (be32(at), be32(at + 4)) else {
            return false;
        };
        if !(STARTUP_PACKET_BYTES_MIN..=STARTUP_PACKET_BYTES_MAX).contains(&len)
            || at + len as usize > stream.len()
        {
            return false;
        }
        let body = &stream[at + 4..at + len as usize];
        at += len as usize;
        match code {
            frontend::SSL_REQUEST_CODE | frontend::GSSENC_REQUEST_CODE if len == 8 => continue,
            frontend::PROTOCOL_3_0 if frontend::well_formed_startup(body) => break,
            _ => return false,
        }
    }
    while let (Some(&kind), Some(len)) = (stream.get(at), be32(at + 1)) {
        let Some(body) = stream
            .get(at + 5..at + 1 + len.max(4) as usize)
            .filter(|_| len >= 4)
        else {
            return false;
        };
        if !frontend::well_formed(kind, body) {
            return false;
        }
        if kind == b'X' {
            return true;
        }
        at += 1 + len as usize;
    }
    false
}

/// The response is well framed and its ErrorResponses carry SQLSTATEs.
fn check_response(response: &[u8]) {
    let messages = backend::split(response).unwrap_or_else(|e| {
        panic!(
            "the server sent badly framed bytes: {e} (response: {})",
            hex(response)
        )
    });
    for message in messages
        .iter()
        .filter(|m| m.kind == backend::ERROR_RESPONSE)
    {
        if let Err(e) = backend::check_error_response(message.body) {
            panic!(
                "{e} (ErrorResponse body: {})",
                String::from_utf8_lossy(message.body)
            );
        }
    }
}

/// A fresh connection gets `SELECT 1` answered: a row with `1`, no error, then the server
/// closes on Terminate.
async fn health_check(addr: SocketAddr) {
    let mut m = frontend::Messages::new();
    m.query("SELECT 1").terminate();
    let mut stream = frontend::startup();
    stream.extend_from_slice(&m.into_bytes());
    let (response, ending) = exchange(addr, &stream, true).await;
    assert_eq!(
        ending,
        Ending::Closed,
        "health check: the server did not close after Terminate"
    );
    let messages = backend::split(&response).expect("health check: a well framed response");
    if let Some(error) = messages.iter().find(|m| m.kind == backend::ERROR_RESPONSE) {
        panic!(
            "health check: SELECT 1 failed: {}",
            String::from_utf8_lossy(error.body)
        );
    }
    // DataRow: 1 column, length 1, "1".
    let row = [0u8, 1, 0, 0, 0, 1, b'1'];
    assert!(
        messages.iter().any(|m| m.kind == b'D' && m.body == row),
        "health check: no row `1` in the answer to SELECT 1 ({})",
        hex(&response)
    );
}

fn hex(bytes: &[u8]) -> String {
    let shown: String = bytes.iter().take(256).map(|b| format!("{b:02x}")).collect();
    if bytes.len() > 256 {
        format!("{shown}... ({} bytes)", bytes.len())
    } else {
        shown
    }
}

#[cfg(test)]
mod tests {
    use super::frontend::Messages;
    use super::*;

    #[test]
    fn framing_to_terminate_follows_the_startup_phase() {
        let mut m = Messages::new();
        m.ssl_request()
            .startup(&[("user", "u")])
            .query("SELECT 1")
            .terminate();
        assert!(framed_to_terminate(&m.into_bytes()));
        let mut m = Messages::new();
        m.startup(&[("user", "u")]).query("SELECT 1");
        assert!(!framed_to_terminate(&m.into_bytes()), "no Terminate");
        let mut m = Messages::new();
        m.startup(&[("user", "u")]).query("SELECT 1").terminate();
        let mut cut = m.into_bytes();
        cut.remove(20);
        assert!(
            !framed_to_terminate(&cut),
            "a message cut short swallows the Terminate"
        );
        let body = b"SELECT 1\0d\0\0\x01\0";
        let mut query = vec![b'Q'];
        query.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        query.extend_from_slice(body);
        let mut m = Messages::new();
        m.startup(&[("user", "u")]).raw(&query).terminate();
        let smuggled = m.into_bytes();
        assert!(
            !framed_to_terminate(&smuggled),
            "the library would read a CopyData out of the Query"
        );
        let mut m = Messages::new();
        m.cancel_request(1, 2).terminate();
        assert!(
            !framed_to_terminate(&m.into_bytes()),
            "a CancelRequest ends the connection itself"
        );
    }
}
