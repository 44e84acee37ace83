//! Lookback's network protocols.
//!
//! - [`ingest`], the binary ingest protocol: producers stream columnar batches over TCP and get
//!   one acknowledgement per batch once it is durable. What "admit" and "durable" mean is
//!   decided by the engine through [`ingest::IngestSink`].
//! - [`pg`], the Postgres wire endpoint over a DataFusion session the engine builds.
//!
//! The crate speaks bytes and sockets only; it never depends on the WAL or storage.

use std::future::Future;
use std::pin::Pin;

pub mod ingest;
pub mod pg;

/// A boxed, sendable future: the object-safe return type of the sink's async methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
