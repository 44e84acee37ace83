//! Fault injection for the engine's own file I/O.
//!
//! Every file operation the WAL and storage perform on the durable path (create, write, sync,
//! rename, remove, directory sync) first calls [`Faults::check`]. In production the hook is a
//! single relaxed atomic load; tests and the fault-injection harness arm rules that turn the
//! Nth matching operation into an error (EIO on fsync, ENOSPC on write) or an immediate process
//! abort (crash at a precise step). Faults go through the same code paths real failures take.
//!
//! After a successful fsync the durable path also reports what became durable
//! ([`Faults::synced_file`], [`Faults::synced_dir`]); with a power-loss journal attached
//! (see [`crate::powerloss`]) that is recorded, so a harness can later throw away everything a
//! power cut would have lost. Without one these calls are the same single atomic load.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOp {
    Create,
    Write,
    Sync,
    Rename,
    Remove,
    SyncDir,
    /// Only in rules: matches every operation (to crash after the Nth file operation).
    Any,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultAction {
    /// Fail the operation with this OS error number (e.g. `libc::EIO` = 5, `ENOSPC` = 28).
    Error(i32),
    /// Abort the process before the operation happens.
    Crash,
}

#[derive(Debug, Clone)]
pub struct FaultRule {
    pub op: FaultOp,
    /// The rule matches paths whose display form contains this string ("" matches all).
    pub path_contains: String,
    /// Matching operations to let through before the rule fires.
    pub skip: u64,
    pub action: FaultAction,
    /// When false the rule keeps firing on every later match (a disk that stays full).
    pub once: bool,
}

#[derive(Debug, Default)]
struct Inner {
    rules: Mutex<Vec<(FaultRule, u64)>>,
    armed: AtomicBool,
    journal: Option<crate::powerloss::Journal>,
}

/// A cheap, clonable handle. Clones share rules.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    inner: Arc<Inner>,
}

pub const EIO: i32 = 5;
pub const ENOSPC: i32 = 28;

impl Faults {
    /// No faults; `check` always succeeds.
    pub fn none() -> Faults {
        Faults::default()
    }

    /// No faults, but every fsync is recorded in a power-loss journal.
    pub fn with_journal(journal: crate::powerloss::Journal) -> Faults {
        Faults {
            inner: Arc::new(Inner {
                journal: Some(journal),
                ..Inner::default()
            }),
        }
    }

    /// Replaces every rule (an empty list disarms), e.g. to free a "full" disk at run time.
    pub fn set_rules(&self, new_rules: Vec<FaultRule>) {
        let mut rules = self.inner.rules.lock().unwrap_or_else(|p| p.into_inner());
        *rules = new_rules.into_iter().map(|r| (r, 0)).collect();
        self.inner.armed.store(!rules.is_empty(), Ordering::Release);
    }

    /// The rules armed now, with how many operations each has matched.
    pub fn rules(&self) -> Vec<(FaultRule, u64)> {
        self.inner
            .rules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// After a successful fsync/fdatasync of `path`: `written` is the byte range the caller
    /// wrote since the file's previous sync when it knows it (`None`: the whole file).
    pub fn synced_file(&self, path: &Path, written: Option<(u64, usize)>) {
        if let Some(journal) = &self.inner.journal {
            journal.synced_file(path, written);
        }
    }

    /// After a successful fsync of directory `dir`: its entries are durable as they are now.
    pub fn synced_dir(&self, dir: &Path) {
        if let Some(journal) = &self.inner.journal {
            journal.synced_dir(dir);
        }
    }

    pub fn arm(&self, rule: FaultRule) {
        let mut rules = self.inner.rules.lock().unwrap_or_else(|p| p.into_inner());
        rules.push((rule, 0));
        self.inner.armed.store(true, Ordering::Release);
    }

    pub fn clear(&self) {
        self.inner
            .rules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.inner.armed.store(false, Ordering::Release);
    }

    /// Called before every durable-path file operation.
    pub fn check(&self, op: FaultOp, path: &Path) -> io::Result<()> {
        if !self.inner.armed.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut rules = self.inner.rules.lock().unwrap_or_else(|p| p.into_inner());
        let path = path.to_string_lossy();
        let mut fired = None;
        rules.retain_mut(|(rule, seen)| {
            let op_matches = rule.op == op || rule.op == FaultOp::Any;
            if fired.is_some() || !op_matches || !path.contains(rule.path_contains.as_str()) {
                return true;
            }
            *seen += 1;
            if *seen <= rule.skip {
                return true;
            }
            fired = Some(rule.action);
            !rule.once
        });
        match fired {
            None => Ok(()),
            Some(FaultAction::Crash) => std::process::abort(),
            Some(FaultAction::Error(errno)) => Err(io::Error::from_raw_os_error(errno)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_fires_after_skip_and_once() {
        let f = Faults::none();
        let p = Path::new("/data/wal/000001.wal");
        assert!(f.check(FaultOp::Sync, p).is_ok());
        f.arm(FaultRule {
            op: FaultOp::Sync,
            path_contains: "wal".into(),
            skip: 1,
            action: FaultAction::Error(EIO),
            once: true,
        });
        assert!(f.check(FaultOp::Write, p).is_ok());
        assert!(f.check(FaultOp::Sync, Path::new("/data/seg")).is_ok());
        assert!(f.check(FaultOp::Sync, p).is_ok(), "first match is skipped");
        let err = f.check(FaultOp::Sync, p).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(EIO));
        assert!(f.check(FaultOp::Sync, p).is_ok(), "once: the rule is gone");
    }

    #[test]
    fn persistent_rule_keeps_firing_until_cleared() {
        let f = Faults::none();
        f.arm(FaultRule {
            op: FaultOp::Write,
            path_contains: String::new(),
            skip: 0,
            action: FaultAction::Error(ENOSPC),
            once: false,
        });
        for _ in 0..3 {
            assert!(f.check(FaultOp::Write, Path::new("x")).is_err());
        }
        f.clear();
        assert!(f.check(FaultOp::Write, Path::new("x")).is_ok());
    }

    #[test]
    fn any_matches_every_op_and_set_rules_replaces() {
        let f = Faults::none();
        f.set_rules(vec![FaultRule {
            op: FaultOp::Any,
            path_contains: "seg".into(),
            skip: 2,
            action: FaultAction::Error(EIO),
            once: true,
        }]);
        assert!(f
            .check(FaultOp::Create, Path::new("/d/segments/1.seg"))
            .is_ok());
        assert!(
            f.check(FaultOp::Rename, Path::new("/d/MANIFEST")).is_ok(),
            "path does not match"
        );
        assert!(f.check(FaultOp::SyncDir, Path::new("/d/segments")).is_ok());
        assert!(
            f.check(FaultOp::Write, Path::new("/d/segments/1.seg"))
                .is_err(),
            "third matching op of any kind"
        );
        assert_eq!(f.rules().len(), 0, "once");
        f.set_rules(vec![FaultRule {
            op: FaultOp::Write,
            path_contains: String::new(),
            skip: 0,
            action: FaultAction::Error(ENOSPC),
            once: false,
        }]);
        assert!(f.check(FaultOp::Write, Path::new("x")).is_err());
        f.set_rules(Vec::new());
        assert!(
            f.check(FaultOp::Write, Path::new("x")).is_ok(),
            "an empty list disarms"
        );
    }
}
