//! The synchronization primitives of the group-commit core (`queue`, `durable`,
//! `group_commit`), named in one place so the loom model can swap them.
//!
//! Why a module and not a `cfg(loom)`: `wal/tests/loom.rs` compiles those three source files a
//! second time, with its own `sync` module backed by `loom` (same API as here: parking_lot's
//! `lock()` without poisoning, `Condvar::wait(&mut guard)`), so the model checks the very code
//! the WAL runs, and it runs in the ordinary `cargo test` without rebuilding every dependency
//! under `--cfg loom`.

pub use parking_lot::{Condvar, Mutex};
pub use std::sync::atomic::{AtomicU64, Ordering};
