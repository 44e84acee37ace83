//! `lookback-jepsen`: the fault-injection harness.
//!
//! It drives the real `lookback` binary (not a library in-process: the faults are process
//! deaths, signals and files on disk) with concurrent clients over the ingest protocol and
//! pgwire, injects one fault kind per run, and checks with a [`history::History`] that
//! records exactly which events were sent and acknowledged. See `docs/reliability.md` for
//! what each fault does and checks, and the figures.
//!
//! The faults that need the engine's cooperation use its test-only fault mode
//! (`LOOKBACK_FAULTS`, `/debug/faults`, `LOOKBACK_POWERLOSS_DIR`; `engine/src/faults_env.rs`);
//! the rest are signals and byte edits from outside.
//!
//! Short runs are tests (`engine/tests/jepsen.rs`); long runs are the `lookback-jepsen` binary.

pub mod events;
pub mod history;
pub mod node;
pub mod scenarios;
pub mod workload;

pub use history::{History, Verdict};
pub use scenarios::{run, FaultReport, RunOptions, FAULTS};

/// The report rows as the Markdown table `docs/reliability.md` shows.
pub fn markdown_table(reports: &[FaultReport]) -> String {
    let mut out = String::from(
        "| fault | cycles | acknowledged | lost | duplicated | changed | phantom | reads checked | stale reads | recovery p50 / p99 ms | result |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for r in reports {
        let recovery = match (
            r.recovery_percentile_ms(0.5),
            r.recovery_percentile_ms(0.99),
        ) {
            (Some(p50), Some(p99)) => format!("{p50:.0} / {p99:.0}"),
            _ => "—".into(),
        };
        let result = match (r.passed(), r.expect_losses) {
            (true, true) => "losses seen (control)",
            (true, false) => "pass",
            (false, true) => "FAIL: control saw no loss",
            (false, false) => "FAIL",
        };
        let v = &r.verdict;
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.fault,
            r.cycles,
            v.acked,
            v.lost,
            v.duplicated,
            v.changed,
            v.phantom,
            v.reads,
            v.stale_reads,
            recovery,
            result
        ));
    }
    out
}
