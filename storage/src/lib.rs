//! Lookback's storage layer (being written).

pub mod error;
pub use error::StorageError;
