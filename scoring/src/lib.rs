//! Model scoring for Lookback: gradient-boosted forests in XGBoost's JSON model format, scored
//! in batches on the CPU and, when a CUDA device is present and the batch is large enough to
//! pay for the transfer, on the GPU.
//!
//! Why a crate of its own: scoring is a kernel over float columns, with nothing of SQL in it.
//! Kept free of DataFusion (and of storage), its tests and benchmark build in seconds and are
//! small enough to carry to a GPU machine. `lookback-query` wraps it in SQL functions.
//!
//! - [`xgboost`] reads and validates a model file into a [`Model`] (the trees as written);
//! - [`forest`] compiles a model for evaluation ([`Forest`]) and scores column batches on the
//!   CPU;
//! - [`cuda`] scores the same compiled forest on a GPU (driver and NVRTC loaded at run time);
//! - [`device`] decides where a batch runs (`auto`, `cpu`, `cuda`);
//! - [`registry`] keeps the named models of a data directory, durable across restarts.
//!
//! Results: the CPU and GPU paths add the trees' leaf values in the same order in `f32`, as
//! XGBoost does, so their scores agree with XGBoost's own `predict` to float rounding.

pub mod cuda;
pub mod device;
pub mod error;
pub mod forest;
pub mod registry;
pub mod xgboost;

pub use device::{Device, DevicePreference};
pub use error::ModelError;
pub use forest::Forest;
pub use registry::{ModelInfo, ModelRegistry};
pub use xgboost::{Model, Objective};
