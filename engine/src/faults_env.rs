//! Test-only fault injection from the environment: `LOOKBACK_FAULTS` arms
//! [`lookback_common::Faults`] rules in a real `lookback serve` process, so end-to-end tests
//! can make the WAL's fdatasync fail (or the process abort) at a precise step.
//!
//! Syntax: semicolon-separated rules, each `op:path_contains:action[:skip=N][:once]`.
//! - `op`: `create`, `write`, `sync`, `rename`, `remove`, `syncdir` or `any` (every op);
//! - `path_contains`: the rule matches file paths containing this text (empty matches all;
//!   it cannot contain `:` or `;`);
//! - `action`: `eio`, `enospc` (fail the operation with that errno) or `crash` (abort);
//! - `skip=N`: let N matching operations through first (default 0);
//! - `once`: fire once, then disarm (default: keep firing, like a disk that stays broken).
//!
//! Example: `LOOKBACK_FAULTS='sync:.log:eio:skip=5'` fails the sixth WAL group commit.
//!
//! A malformed value is an error that stops start-up: a fault test whose rule silently did
//! not arm would pass for the wrong reason. This is never meant for production; the server
//! logs a loud warning whenever the variable is set.
//!
//! With the variable set (even empty) the server is in *fault mode*: the HTTP endpoint
//! `/debug/faults` replaces the rules at run time (`PUT` with a spec as the body, `DELETE` to
//! clear, `GET` to list), so a harness can fill the disk and free it again without a restart.
//!
//! `LOOKBACK_POWERLOSS_DIR=<dir>` (also fault mode) mirrors every fsync into a power-loss
//! journal in `<dir>` (see `lookback_common::powerloss`); `LOOKBACK_POWERLOSS_IGNORE_SYNC=<text>`
//! makes syncs of paths containing the text count for nothing (the "fsync disabled" control).

use anyhow::{bail, Context, Result};
use lookback_common::faults::{FaultAction, FaultOp, FaultRule, Faults, EIO, ENOSPC};

pub const FAULTS_ENV_VAR: &str = "LOOKBACK_FAULTS";
pub const POWERLOSS_DIR_ENV_VAR: &str = "LOOKBACK_POWERLOSS_DIR";
pub const POWERLOSS_IGNORE_ENV_VAR: &str = "LOOKBACK_POWERLOSS_IGNORE_SYNC";

fn env_text(name: &str) -> Result<Option<String>> {
    match std::env::var_os(name) {
        None => Ok(None),
        Some(value) => value.into_string().map(Some).map_err(|_| anyhow::anyhow!("{name} is not valid UTF-8")),
    }
}

/// Arms `options.faults` from the environment; returns the handle when in fault mode (for
/// the `/debug/faults` endpoint), `None` otherwise.
pub fn apply(mut options: lookback_storage::DbOptions) -> Result<(lookback_storage::DbOptions, Option<Faults>)> {
    let spec = env_text(FAULTS_ENV_VAR)?;
    let journal_dir = env_text(POWERLOSS_DIR_ENV_VAR)?.filter(|d| !d.is_empty());
    if spec.is_none() && journal_dir.is_none() {
        return Ok((options, None));
    }
    let spec = spec.unwrap_or_default();
    let rules = parse(&spec).with_context(|| format!("parse {FAULTS_ENV_VAR}={spec:?}"))?;
    let faults = match &journal_dir {
        Some(dir) => {
            let ignore = env_text(POWERLOSS_IGNORE_ENV_VAR)?.filter(|s| !s.is_empty());
            let journal = lookback_common::powerloss::Journal::open(std::path::Path::new(dir), ignore)
                .with_context(|| format!("open power-loss journal {dir}"))?;
            Faults::with_journal(journal)
        }
        None => Faults::none(),
    };
    tracing::warn!(
        rules = rules.len(),
        spec = %spec,
        power_loss_journal = journal_dir.as_deref().unwrap_or(""),
        "FAULT INJECTION IS ON ({FAULTS_ENV_VAR}): file operations will fail on purpose; never set this in production"
    );
    faults.set_rules(rules);
    options.faults = faults.clone();
    Ok((options, Some(faults)))
}

/// Parses a whole `LOOKBACK_FAULTS` value; empty rules between semicolons are ignored.
pub fn parse(spec: &str) -> Result<Vec<FaultRule>> {
    spec.split(';')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|r| parse_rule(r).with_context(|| format!("fault rule {r:?}")))
        .collect()
}

fn parse_rule(rule: &str) -> Result<FaultRule> {
    let parts: Vec<&str> = rule.split(':').collect();
    let [op, path_contains, action, options @ ..] = parts.as_slice() else {
        bail!("expected op:path_contains:action[:skip=N][:once]");
    };
    let mut parsed = FaultRule {
        op: parse_op(op)?,
        path_contains: path_contains.to_string(),
        skip: 0,
        action: parse_action(action)?,
        once: false,
    };
    for option in options {
        match option.split_once('=') {
            Some(("skip", n)) => parsed.skip = n.parse().with_context(|| format!("skip count {n:?} is not a number"))?,
            None if *option == "once" => parsed.once = true,
            _ => bail!("unknown option {option:?} (expected skip=N or once)"),
        }
    }
    Ok(parsed)
}

fn parse_op(op: &str) -> Result<FaultOp> {
    Ok(match op {
        "create" => FaultOp::Create,
        "write" => FaultOp::Write,
        "sync" => FaultOp::Sync,
        "rename" => FaultOp::Rename,
        "remove" => FaultOp::Remove,
        "syncdir" => FaultOp::SyncDir,
        "any" => FaultOp::Any,
        other => bail!("unknown op {other:?} (expected create, write, sync, rename, remove, syncdir or any)"),
    })
}

fn parse_action(action: &str) -> Result<FaultAction> {
    Ok(match action {
        "eio" => FaultAction::Error(EIO),
        "enospc" => FaultAction::Error(ENOSPC),
        "crash" => FaultAction::Crash,
        other => bail!("unknown action {other:?} (expected eio, enospc or crash)"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(spec: &str) -> String {
        format!("{:#}", parse(spec).unwrap_err())
    }

    #[test]
    fn parses_rules_with_options() {
        let rules = parse("sync:.log:eio:skip=5:once; write::enospc ;;remove:seg-:crash:once").unwrap();
        assert_eq!(rules.len(), 3);
        assert_eq!(rules[0].op, FaultOp::Sync);
        assert_eq!(rules[0].path_contains, ".log");
        assert_eq!(rules[0].action, FaultAction::Error(EIO));
        assert_eq!(rules[0].skip, 5);
        assert!(rules[0].once);
        assert_eq!(rules[1].op, FaultOp::Write);
        assert_eq!(rules[1].path_contains, "", "an empty path matches every file");
        assert_eq!(rules[1].action, FaultAction::Error(ENOSPC));
        assert_eq!(rules[1].skip, 0);
        assert!(!rules[1].once, "rules keep firing unless `once`");
        assert_eq!(rules[2].op, FaultOp::Remove);
        assert_eq!(rules[2].action, FaultAction::Crash);
        let ops: Vec<_> = parse("create:a:eio;rename:a:eio;syncdir:a:eio").unwrap().into_iter().map(|r| r.op).collect();
        assert_eq!(ops, [FaultOp::Create, FaultOp::Rename, FaultOp::SyncDir]);
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn bad_specs_are_clear_errors() {
        let cases = [
            ("sync:.log", "expected op:path_contains:action"),
            ("fsync:.log:eio", "unknown op \"fsync\""),
            ("sync:.log:boom", "unknown action \"boom\""),
            ("sync:.log:eio:skip=x", "skip count \"x\" is not a number"),
            ("sync:.log:eio:skip=-1", "is not a number"),
            ("sync:.log:eio:twice", "unknown option \"twice\""),
            ("sync:.log:eio;write:x", "fault rule \"write:x\""),
        ];
        for (spec, expected) in cases {
            let message = error_of(spec);
            assert!(message.contains(expected), "{spec:?}: {message:?} should contain {expected:?}");
        }
    }

    #[test]
    fn parsed_rules_fire_through_faults() {
        let faults = Faults::none();
        parse("sync:.log:eio:skip=1:once").unwrap().into_iter().for_each(|r| faults.arm(r));
        let wal = std::path::Path::new("/d/wal/wal-00000000000000000001.log");
        assert!(faults.check(FaultOp::Sync, std::path::Path::new("/d/wal/wal-1.tmp")).is_ok());
        assert!(faults.check(FaultOp::Sync, wal).is_ok(), "skip=1 lets the first through");
        assert_eq!(faults.check(FaultOp::Sync, wal).unwrap_err().raw_os_error(), Some(EIO));
        assert!(faults.check(FaultOp::Sync, wal).is_ok(), "once");
    }
}
