//! The binary ingest protocol: framing, the async server, and the Rust producer client.
//!
//! The byte-level specification a third party needs to write a client is
//! `docs/ingest-protocol.md`; this module is its reference implementation.
//!
//! - [`frame`]: frame layout, encoding and defensive decoding (no I/O policy).
//! - [`error`]: the stable error codes carried by error frames.
//! - [`server`]: accepts connections, enforces connection limits and graceful shutdown.
//! - `connection`: one connection's reader/writer pair, in-order acks, backpressure.
//! - [`client`]: [`Producer`], pipelining with reconnect-and-resend by original sequence.
//!
//! Delivery is at-least-once on the wire and exactly-once in effect for producers with a
//! nonzero id, because the sink deduplicates by `(producer_id, seq)`.

pub mod client;
mod connection;
pub mod error;
pub mod frame;
pub mod server;

pub use client::{Ack, ClientError, Producer, ProducerOptions};
pub use error::{ErrorCode, IngestError};
pub use server::{
    serve, DurableFuture, IngestAck, IngestRequest, IngestServerConfig, IngestServerStats,
    IngestSink,
};
