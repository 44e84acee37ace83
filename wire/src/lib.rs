//! Lookback's network protocols.
//!
//! Today this is the binary ingest protocol ([`ingest`]): producers stream columnar batches over
//! TCP and get one acknowledgement per batch once it is durable. The crate speaks bytes and
//! sockets only; what "admit" and "durable" mean is decided by the engine through
//! [`ingest::IngestSink`], so this crate never depends on the WAL or storage.

use std::future::Future;
use std::pin::Pin;

pub mod ingest;

/// A boxed, sendable future: the object-safe return type of the sink's async methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
