//! Panics on the fuzz fixtures' server threads, counted per fixture.
//!
//! Why: a panic inside a tokio task does not reach the target's caller. The Postgres
//! endpoint catches panics at its boundary (`lookback_wire::pg::PgServerStats`), but a panic
//! that escapes it, or happens where it does not reach, would only close a connection or
//! kill a background task, and the targets would pass over it. A process-wide panic hook
//! counts the panics of each fixture's threads (named [`SERVER_THREAD_PREFIX`] and the
//! fixture's number) and keeps the latest message; a target compares the count with the
//! panics its server caught, and fails on any located in Lookback's own code.
//! Panics on other threads (the driver's own `catch_unwind`, other tests) are left to the
//! previous hook alone. On the fixtures' threads the previous hook never runs: under
//! libFuzzer it is libfuzzer-sys's, which aborts the process on any panic, even one the
//! endpoint's boundary catches and answers; this hook prints the message and a backtrace
//! itself, once per source location, since a caught library panic may recur on every other
//! input. The target then decides (an uncaught panic, or one in Lookback's code, fails).

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, Once};

/// The fixtures' runtime threads are named with this prefix, then the fixture's number.
pub const SERVER_THREAD_PREFIX: &str = "lookback-fuzz-server-";

/// The panics seen on one fixture's threads.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    pub count: u64,
    /// The latest one's message and location.
    pub latest: String,
    /// Those located in Lookback's sources rather than the standard library's or a
    /// dependency's ([`is_ours`]): Lookback's own bugs, failures even when the endpoint
    /// caught them.
    pub ours: u64,
    pub latest_ours: String,
}

/// Per thread name.
static SEEN: Mutex<Option<HashMap<String, Seen>>> = Mutex::new(None);
/// The source locations of the panics printed so far.
static PRINTED: Mutex<Option<HashSet<String>>> = Mutex::new(None);
static INSTALL: Once = Once::new();

/// Installs the counting hook once per process; the previous hook still runs after it.
pub fn install() {
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            let Some(name) = thread
                .name()
                .filter(|n| n.starts_with(SERVER_THREAD_PREFIX))
            else {
                return previous(info);
            };
            let location = info.location().map(|l| l.to_string()).unwrap_or_default();
            {
                let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
                let entry = seen
                    .get_or_insert_with(HashMap::new)
                    .entry(name.to_string())
                    .or_default();
                entry.count += 1;
                entry.latest = info.to_string();
                if is_ours(&location) {
                    entry.ours += 1;
                    entry.latest_ours = info.to_string();
                }
            }
            let new = PRINTED
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert_with(HashSet::new)
                .insert(location);
            if new {
                eprintln!(
                    "{info} (on a fixture's server thread)\n{}",
                    std::backtrace::Backtrace::force_capture()
                );
            }
        }));
    });
}

/// Whether a panic's location (`file:line:column`) is in Lookback's sources: not in the
/// standard library (`/rustc/<hash>/library/...`) nor in a crate cargo downloaded (its
/// registry or git checkouts), whatever the workspace the build ran from.
pub fn is_ours(location: &str) -> bool {
    const ELSEWHERE: [&str; 4] = ["/rustc/", "/.cargo/registry/", "/.cargo/git/", "/.rustup/"];
    !location.is_empty() && !ELSEWHERE.iter().any(|p| location.contains(p))
}

/// The panics seen on the threads named `thread_name`.
pub fn seen(thread_name: &str) -> Seen {
    let seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    seen.as_ref()
        .and_then(|s| s.get(thread_name))
        .cloned()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_panics_are_told_from_the_libraries() {
        assert!(is_ours("wire/src/pg/mod.rs:10:5"));
        assert!(is_ours("/work/main/query/src/scan.rs:1:1"));
        assert!(!is_ours("/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/bytes-1.12.1/src/lib.rs:207:5"));
        assert!(!is_ours(
            "/rustc/59807616e1fa2540724bfbac14d7976d7e4a3860/library/core/src/panicking.rs:80:14"
        ));
        assert!(!is_ours(""));
    }
}
