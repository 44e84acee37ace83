//! The lock of `db/waiters.rs`, named in one place so `tests/loom.rs` can compile that file
//! against loom's (same API as here: parking_lot's `lock()` without poisoning). See
//! `wal/src/sync.rs` for why this is a module and not a `cfg(loom)`.

pub use parking_lot::Mutex;
