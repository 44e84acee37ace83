//! Lookback's load generator as a library: the deterministic synthetic event generator (used by
//! `lookback-bench`, the engine's demo data and tests), CSV/TSV export of generated events, a
//! minimal HTTP/1.1 client for the server's admin endpoints, and latency percentiles.
//!
//! The ingest driver itself lives in the binary (it needs the ingest client library).

pub mod catalog;
pub mod export;
pub mod generator;
pub mod http;
pub mod latency;
pub mod rng;

pub use generator::{EventGenerator, GeneratorConfig, RunPlan, DEFAULT_START_TS_US};
